"""``personasim eval`` as functions: score memory strategies on a stored run, or on PersonaMem-v2's files.

Evaluation is separate from simulation so a run can be scored again with another reader (an LLM,
a local model) or on a subset of question types without simulating anything twice. Answers are
written back to the store, replacing earlier answers of the same reader, so the store stays the
single record a report is built from.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from personasim.agents.backends import BackendConfig
from personasim.analysis.evaluate import answer_questions
from personasim.analysis.questions import QUESTION_TYPES, QuestionConfig, generate_questions, load_questions
from personasim.api import check_db_path
from personasim.progress import progress_bar
from personasim.sim.rows import QuestionRow
from personasim.sim.store import StoreError, TrajectoryStore

ReaderKind = Literal["embed", "llm", "loglik"]


class ReaderSpec(BaseModel):
    """Which reader answers: the offline embedding reader, an LLM through any backend, or a local
    transformers model scoring each option's log-likelihood."""

    model_config = ConfigDict(extra="forbid")

    kind: ReaderKind = "embed"
    backend: BackendConfig | None = Field(default=None, description="llm: the model that answers.")
    model_path: str | None = Field(default=None, description="loglik: folder of a saved causal LM.")

    @model_validator(mode="after")
    def _check(self) -> ReaderSpec:
        if self.kind == "llm" and self.backend is None:
            raise ValueError("the llm reader needs a backend (e.g. --reader-model and --reader-base-url)")
        if self.kind == "loglik" and not self.model_path:
            raise ValueError("the loglik reader needs model_path (--reader-model-path), a folder of a saved causal LM")
        return self


class EvalSummary(BaseModel):
    run_id: str
    db: str
    reader: str
    reader_model: str | None
    strategies: list[str]
    types: list[str]
    questions: int
    answers: int
    chance: float
    wall_seconds: float
    tables: dict[str, list[dict[str, Any]]]
    audit: dict[str, Any] | None = Field(
        default=None,
        description="The artifact audit of the scored questions (an AuditReport as a dict): the correct option's "
        "length shares and the blind readers' accuracy per question type, the no-memory floor of every accuracy.",
    )


def build_reader(spec: ReaderSpec, cache_path: str | Path | None = None) -> Any:
    if spec.kind == "embed":
        from personasim.agents.embedding import default_embedder
        from personasim.analysis.reader import EmbeddingReader

        return EmbeddingReader(default_embedder())
    if spec.kind == "llm":
        from personasim.agents.backends import create_client
        from personasim.analysis.llm_reader import LLMReader

        assert spec.backend is not None
        client = create_client(spec.backend, cache_path=cache_path, cache_mode="readwrite" if cache_path else "off")
        return LLMReader(client, model_name=spec.backend.model)
    from personasim.analysis.loglik_reader import LogLikelihoodReader

    assert spec.model_path is not None
    return LogLikelihoodReader(spec.model_path)


def resolve_run(store: TrajectoryStore, run_id: str | None) -> str:
    runs = [r[0] for r in store.con.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()]
    if not runs:
        raise StoreError(f"{store.path} holds no runs; create one with `personasim run --db {store.path}`")
    if run_id is None:
        simulated = [r for r in runs if not r.startswith("env-")]  # online runs (rl.env) are named explicitly
        if len(simulated) == 1:
            return simulated[0]
        if len(runs) > 1:
            raise StoreError(f"{store.path} holds {len(runs)} runs ({', '.join(runs)}); choose one with --run")
        return runs[0]
    if run_id not in runs:
        raise StoreError(f"{store.path} has no run {run_id!r}; it holds {', '.join(runs)}")
    return run_id


def evaluate(
    db: str | Path,
    run_id: str | None = None,
    strategies: list[str] | None = None,
    reader: ReaderSpec | None = None,
    types: list[str] | None = None,
    regenerate: bool = False,
    n_boot: int = 1000,
    show_progress: bool = False,
) -> EvalSummary:
    """Answer the run's questions with each strategy's memory and the reader; store and summarise.

    Questions are generated when the run has none (or ``regenerate``); a run loaded from
    PersonaMem-v2 keeps its own. Strategies default to those the run kept snapshots of."""
    started = time.perf_counter()
    reader = reader or ReaderSpec()
    path = Path(db)
    if not path.exists():
        raise StoreError(f"store {path} does not exist; run `personasim run --db {path}` first")
    with TrajectoryStore(path) as store:
        run_id = resolve_run(store, run_id)
        questions = _questions(store, run_id, regenerate)
        questions = _filter_types(questions, types)
        strategies = _strategies(store, run_id, strategies)
        cache = str(path) + ".llmcache.sqlite" if reader.kind == "llm" else None
        answering = build_reader(reader, cache)
        with progress_bar(show_progress) as progress:
            task = progress.add_task(f"answering ({answering.name})", total=len(questions) * len(strategies))
            answers = answer_questions(
                store.con, run_id, questions, strategies, answering, _settings(store, run_id),
                on_answer=lambda: progress.advance(task),
            )
        ids = [a.answer_id for a in answers]
        store.con.execute("BEGIN TRANSACTION")
        try:
            store.con.execute("DELETE FROM answers WHERE run_id = ? AND list_contains(?, answer_id)", [run_id, ids])
            store.write("answers", answers)
            store.con.execute("COMMIT")
        except BaseException:
            store.con.execute("ROLLBACK")
            raise
        tables = _tables(store, run_id, answering, strategies, [q.question_type for q in questions], n_boot)
        report = _audit(store, run_id, questions, answering) if questions else None
    chance = sum(1.0 / len(q.options) for q in questions) / len(questions) if questions else 0.0
    return EvalSummary(
        run_id=run_id, db=str(path), reader=answering.name, reader_model=getattr(answering, "model_name", None),
        strategies=strategies, types=sorted({q.question_type for q in questions}), questions=len(questions),
        answers=len(answers), chance=chance, wall_seconds=round(time.perf_counter() - started, 2), tables=tables,
        audit=report.model_dump() if report is not None else None,
    )


def evaluate_personamem_v2(
    folder: str | Path,
    db: str | Path,
    strategies: list[str] | None = None,
    reader: ReaderSpec | None = None,
    types: list[str] | None = None,
    window: str = "32k",
    n_boot: int = 1000,
    show_progress: bool = False,
) -> EvalSummary:
    """Load PersonaMem-v2 files into ``db`` (once), build each strategy's memory from the chat
    histories, and evaluate exactly as for a generated run."""
    from personasim.analysis.pmv2_load import build_memory_snapshots, load_personamem_v2, personamem_v2_run_id

    folder = Path(folder)
    if not folder.is_dir():
        raise StoreError(f"--personamem-v2 {folder} is not a folder; pass the dataset root (holding benchmark.csv)")
    strategies = strategies or ["none", "full_history", "agentic"]
    check_db_path(Path(db))
    with TrajectoryStore(db) as store:
        run_id = personamem_v2_run_id(folder, window)
        if not store.has_run(run_id):  # loaded once; later evaluations add strategies and readers
            load_personamem_v2(folder, store, window=window, strategies=[])
        have = _snapshot_strategies(store, run_id)
        missing = [s for s in strategies if s not in have]
        if missing:
            build_memory_snapshots(store, run_id, missing, _settings(store, run_id))
    return evaluate(db, run_id, strategies, reader, types, n_boot=n_boot, show_progress=show_progress)


def _questions(store: TrajectoryStore, run_id: str, regenerate: bool) -> list[QuestionRow]:
    questions = load_questions(store.con, run_id)
    generated = all(q.source == "generated" for q in questions)
    if questions and not regenerate:
        return questions
    if questions and not generated:
        raise StoreError(f"run {run_id} was loaded from PersonaMem-v2; its questions are theirs, not regenerated")
    (seed,) = store.con.execute("SELECT seed FROM runs WHERE run_id = ?", [run_id]).fetchall()[0]
    fresh = generate_questions(store.con, run_id, seed, config=QuestionConfig())
    store.con.execute("BEGIN TRANSACTION")
    try:
        store.con.execute("DELETE FROM answers WHERE run_id = ?", [run_id])
        store.con.execute("DELETE FROM questions WHERE run_id = ?", [run_id])
        store.write("questions", fresh)
        store.con.execute("COMMIT")
    except BaseException:
        store.con.execute("ROLLBACK")
        raise
    return fresh


def _filter_types(questions: list[QuestionRow], types: list[str] | None) -> list[QuestionRow]:
    if not types:
        return questions
    present = {q.question_type for q in questions}
    unknown = [t for t in types if t not in QUESTION_TYPES and t not in present]
    if unknown:
        known = ", ".join(sorted(set(QUESTION_TYPES) | present))
        raise ValueError(f"unknown question type {', '.join(map(repr, unknown))}; choose from {known}")
    chosen = [q for q in questions if q.question_type in types]
    if not chosen:
        raise ValueError(
            f"the run has no questions of type {', '.join(types)}; it has {', '.join(sorted(present)) or 'none'}"
        )
    return chosen


def _snapshot_strategies(store: TrajectoryStore, run_id: str) -> list[str]:
    rows = store.con.execute(
        "SELECT DISTINCT strategy FROM memory_snapshots WHERE run_id = ? ORDER BY strategy", [run_id]
    ).fetchall()
    return [r[0] for r in rows]


def _strategies(store: TrajectoryStore, run_id: str, wanted: list[str] | None) -> list[str]:
    from personasim.agents.memory import check_memory_names

    have = _snapshot_strategies(store, run_id)
    if not wanted:
        if not have:
            raise StoreError(f"run {run_id} kept no memory snapshots; re-run it with --memory")
        return have
    check_memory_names(wanted)
    missing = [s for s in wanted if s not in have]
    if missing:
        raise StoreError(
            f"run {run_id} kept no memory snapshots for {', '.join(missing)} (it has {', '.join(have) or 'none'}); "
            f"simulate with --memory {','.join(wanted)} to evaluate them"
        )
    return wanted


def _settings(store: TrajectoryStore, run_id: str) -> Any:
    from personasim.agents.memory import MemorySettings

    (config_json,) = store.con.execute("SELECT config_json FROM runs WHERE run_id = ?", [run_id]).fetchall()[0]
    config = json.loads(config_json)
    settings = (config.get("memory") or {}).get("settings")
    if isinstance(settings, dict):
        return MemorySettings.model_validate(settings)
    if config.get("window"):  # a loaded PersonaMem-v2 run: full_history sees the whole window
        from personasim.analysis.pmv2_load import WINDOW_TOKENS

        return MemorySettings(full_history_max_tokens=WINDOW_TOKENS[config["window"]])
    return MemorySettings()


def _audit(store: TrajectoryStore, run_id: str, questions: list[QuestionRow], reader: Any) -> Any:
    """The artifact audit of exactly the questions scored (after ``--types``), with the reader's
    embedder when it has one (the same MiniLM otherwise)."""
    from personasim.agents.embedding import default_embedder
    from personasim.analysis.audit import audit_questions, load_profiles, summarise

    profiles = load_profiles(store.con, run_id)
    embedder = getattr(reader, "embedder", None) or default_embedder()
    missing = sum(1 for q in questions if not profiles.get(q.persona_id))
    return summarise(run_id, audit_questions(questions, profiles, embedder), missing)


def _tables(
    store: TrajectoryStore, run_id: str, reader: Any, strategies: list[str], types: list[str], n_boot: int
) -> dict[str, list[dict[str, Any]]]:
    from personasim.analysis.metrics import summary_tables

    where: dict[str, object] = {"reader": [reader.name], "strategy": strategies, "question_type": sorted(set(types))}
    if getattr(reader, "model_name", None):
        where["reader_model"] = [reader.model_name]
    frames = summary_tables(store.con, run_id, where=where, n_boot=n_boot)
    return {name: json.loads(frame.to_json(orient="records")) for name, frame in frames.items()}
