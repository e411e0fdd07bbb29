"""PersonaMem-v2 entry points on a store path: evaluate on its files, audit them, export a run to its format.

These are ``personasim eval --personamem-v2``, ``personasim audit --personamem-v2`` and
``personasim export --format personamem-v2`` as functions, beside the loader (``load``) and
exporter (``export``) they wrap. Each loads a folder into a store once
(keyed by the files' hash and the window); a later call reuses the loaded run.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from personasim.agents.backends import BackendConfig
from personasim.analysis.audit import AuditReport, audit
from personasim.analysis.evaluate import EvalSummary, ReaderSpec, evaluate
from personasim.interop.personamem_v2.export import export_personamem_v2
from personasim.interop.personamem_v2.load import build_memory_snapshots, load_personamem_v2, personamem_v2_run_id
from personasim.sim.store import StoreError, TrajectoryStore, open_store, remove_store
from personasim.sim.store_read import snapshot_strategies
from personasim.sim.store_runs import LoadedPersonaMemConfig, read_run, resolve_finished_run


def _check_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise StoreError(f"--personamem-v2 {folder} is not a folder; pass the dataset root (holding benchmark.csv)")
    return folder


def _load_once(store: TrajectoryStore, folder: Path, window: str, split: str = "benchmark") -> str:
    """The folder's run in ``store``, loaded (without memory snapshots) unless it is there already."""
    run_id = personamem_v2_run_id(folder, window, split)
    if not store.has_run(run_id):  # loaded once; later calls add strategies, readers or audits
        load_personamem_v2(folder, store, window=window, strategies=[], split=split)
    return run_id


@contextlib.contextmanager
def _loading_store(db: str | Path) -> Iterator[TrajectoryStore]:
    """The store to load into; a store this call created is removed again if the load fails, so
    bad files leave no empty store behind (an existing store keeps what it held: the load is one
    transaction)."""
    path = Path(db)
    created = not path.exists()
    try:
        with open_store(path, create=True) as store:
            yield store
    except BaseException:
        if created:
            remove_store(path)
        raise


def read_backend_file(path: str | Path) -> BackendConfig:
    """A backend from a config file: either the backend's own settings (kind, model, base_url ...)
    or a run config, whose ``chatbot_backend`` section is taken. Errors name the file."""
    from pydantic import ValidationError

    from personasim.sim.config import describe_validation_error, load_config_file

    data = load_config_file(path)
    section = data["chatbot_backend"] if isinstance(data.get("chatbot_backend"), dict) else data
    try:
        return BackendConfig.model_validate(section)
    except ValidationError as exc:
        raise ValueError(f"--memory-backend {path}: {describe_validation_error(exc)}") from None


def unread_parts(folder: str | Path) -> list[str]:
    """What of the release the loader does not read, one line each (printed by the commands)."""
    folder = Path(folder)
    if (folder / "benchmark" / "multimodal").is_dir():
        return ["benchmark/multimodal/ is not read: personasim loads the text splits only (its image parts "
                "have no text reader yet)"]
    return []


def evaluate_personamem_v2(
    folder: str | Path,
    db: str | Path,
    strategies: list[str] | None = None,
    reader: ReaderSpec | None = None,
    types: list[str] | None = None,
    window: str = "32k",
    n_boot: int = 1000,
    show_progress: bool = False,
    split: str = "benchmark",
    memory_backend: BackendConfig | None = None,
) -> EvalSummary:
    """Load PersonaMem-v2 files into ``db`` (once), build each strategy's memory from the chat
    histories, and evaluate exactly as for a generated run.

    ``memory_backend``: the model that writes the model-written memories (agentic), as the seed's
    agentic memory is written by an LLM; given, every requested strategy is rebuilt with it.
    Without it, memories are built only where missing, by whoever wrote the run's memories before
    (the scripted note-taker, a rule-based baseline, unless a backend was given earlier). The
    summary's ``notes`` say which, and what of the folder was not read."""
    folder = _check_folder(folder)
    strategies = strategies or ["none", "full_history", "agentic"]
    with _loading_store(db) as store:
        run_id = _load_once(store, folder, window, split)
        stored = read_run(store, run_id)
        loaded = stored.spec.config
        assert isinstance(loaded, LoadedPersonaMemConfig)  # a pmv2- run id is always a loaded run
        have = snapshot_strategies(store.con, run_id)
        if memory_backend is not None and memory_backend != loaded.memory_backend:
            build_memory_snapshots(store, run_id, strategies, stored.memory_settings, memory_backend)
        elif missing := [s for s in strategies if s not in have]:
            build_memory_snapshots(store, run_id, missing, stored.memory_settings, loaded.memory_backend)
        writer = read_run(store, run_id).spec.config.memory_writer()  # type: ignore[union-attr]
    summary = evaluate(db, run_id, strategies, reader, types, n_boot=n_boot, show_progress=show_progress)
    summary.notes = [f"memories written by {writer}", *unread_parts(folder)]
    return summary


def audit_personamem_v2(folder: str | Path, db: str | Path | None = None, window: str = "32k",
                        split: str = "benchmark", embedder: str | None = None) -> AuditReport:
    """Load a PersonaMem-v2 folder into ``db`` (once, as ``evaluate_personamem_v2`` does) and audit
    that run. Without ``db`` the files go into a temporary store that is removed afterwards.
    ``embedder``: the blind readers' (default: MiniLM, a loaded run's)."""
    folder = _check_folder(folder)
    if db is None:
        with tempfile.TemporaryDirectory(prefix="personasim-audit-") as tmp:
            return audit_personamem_v2(folder, Path(tmp) / "pmv2.duckdb", window, split, embedder)
    with _loading_store(db) as store:  # the audit needs no memory: no snapshots are built
        run_id = _load_once(store, folder, window, split)
        return audit(store.con, run_id, embedder)


def export_benchmark(db: str | Path, out: str | Path, run_id: str | None = None, window: str = "32k") -> list[Path]:
    """Write a stored run's benchmark as PersonaMem-v2's files (benchmark CSV, chat histories) under
    ``out``; returns the files written. The store is opened read-only."""
    with open_store(db) as store:
        return export_personamem_v2(store.con, resolve_finished_run(store, run_id), Path(out), window)
