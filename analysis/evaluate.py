"""Evaluation: answer every question with every memory strategy's state at question time, and score it.

``evaluate`` is ``personasim eval`` as a function: it scores memory strategies on a stored run.
Evaluation is separate from simulation so a run can be scored again with another reader (an LLM,
a local model) or on a subset of question types without simulating anything twice. Answers are
written back to the store, replacing earlier answers of the same reader, so the store stays the
single record a report is built from. The pieces are public too: ``answer_questions`` (the
answering itself, on an open store), ``build_reader`` and ``score_by_strategy``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import duckdb
from pydantic import BaseModel, ConfigDict, Field, model_validator

from personasim.agents.backends import BackendConfig
from personasim.agents.embedding import default_embedder, use_embedder
from personasim.agents.memory import MemorySettings
from personasim.analysis import answer_items
from personasim.analysis.answer_items import AnswerItem, answer_record, user_items
from personasim.analysis.questions import QUESTION_TYPES, QuestionConfig, generate_questions
from personasim.analysis.reader import EmbeddingReader, Reader, ReaderAnswer
from personasim.analysis.static_build import prepare_embedder
from personasim.analysis.stored_questions import StoredQuestions
from personasim.sim.progress import progress_bar
from personasim.sim.rows import AnswerRow, QuestionRow
from personasim.sim.store import StoreError, TrajectoryStore, open_store
from personasim.sim.store_read import read_snapshots, snapshot_strategies
from personasim.sim.store_runs import SimulatedRun, read_run, resolve_finished_run, run_embedder

if TYPE_CHECKING:
    from personasim.analysis.audit import AuditReport, AuditTally

ReaderKind = Literal["embed", "llm", "loglik"]


# -- answering ------------------------------------------------------------------------------------

def answer_questions(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    questions: list[QuestionRow] | Iterable[list[QuestionRow]],
    strategies: list[str],
    reader: Reader,
    settings: MemorySettings | None = None,
    on_answer: Callable[[], None] | None = None,
    concurrency: int = 16,
    on_batch: Callable[[list[AnswerRow]], None] | None = None,
    keep_rows: bool = True,
) -> list[AnswerRow]:
    """Each strategy answers from its latest snapshot taken before the question (never after).

    ``questions`` is a list of questions, or users' lists of them read lazily as they come (each
    list one user's, a user once; ``generate_questions_by_user``), so a large evaluation never
    holds them all. (A run itself asks and answers user by user: ``analysis.asking``.)

    The snapshot is the strategy's state; what of it enters the context for this question is the
    strategy's own choice (``select_context``: everything, or top-k retrieval for rag). Readers
    that call a server (``answer_async``) answer ``concurrency`` questions at a time. Readers that
    answer in batches (``answer_many``: the embedding reader) get a few users' work at once. All of
    it runs in this process; ``evaluate`` scores a stored run with the embedding reader in a pool of
    Ray actors instead (``analysis.scoring``), with the same answers.

    Users are taken ``USERS_PER_CHUNK`` at a time (their snapshots read, their work built and
    answered) so that a large run's evaluation holds one chunk of snapshots, not all of them.
    ``on_batch`` gets the rows as they are answered (a user's at a time for a batching reader,
    ``ANSWER_BATCH`` at a time otherwise), so a caller can commit them: a run or an evaluation
    killed while answering keeps what it answered. Every row is passed to it exactly once. The
    rows are returned in question order, each question's strategies in order; a caller that only
    stores them passes ``keep_rows=False`` and gets an empty list (a million rows are a few GB)."""
    users = _by_user(questions) if _flat(questions) else _numbered(questions)  # type: ignore[arg-type]
    return _answer(con, run_id, users, strategies, reader, settings, on_answer, concurrency, on_batch, keep_rows)


def _flat(questions: list[QuestionRow] | Iterable[list[QuestionRow]]) -> bool:
    """A list of questions, rather than users' lists of them (an empty list is either)."""
    return isinstance(questions, list) and (not questions or isinstance(questions[0], QuestionRow))


def _numbered(users: Iterable[list[QuestionRow]]) -> Iterator[list[tuple[int, QuestionRow]]]:
    """Each user's questions with their positions in the order they come, read lazily."""
    n = 0
    for questions in users:
        yield list(enumerate(questions, start=n))
        n += len(questions)


def _by_user(questions: list[QuestionRow]) -> Iterator[list[tuple[int, QuestionRow]]]:
    """Each user's questions with their positions, users in the order the questions first name them."""
    by_user: dict[str, list[tuple[int, QuestionRow]]] = {}
    for n, q in enumerate(questions):
        by_user.setdefault(q.persona_id, []).append((n, q))
    yield from by_user.values()


def _answer(
    con: duckdb.DuckDBPyConnection, run_id: str, users: Iterable[list[tuple[int, QuestionRow]]],
    strategies: list[str], reader: Reader, settings: MemorySettings | None, on_answer: Callable[[], None] | None,
    concurrency: int, on_batch: Callable[[list[AnswerRow]], None] | None, keep_rows: bool,
) -> list[AnswerRow]:
    settings = settings or MemorySettings()
    embedder = getattr(reader, "embedder", None) or default_embedder()
    model_name = getattr(reader, "model_name", None)

    def row(item: AnswerItem, result: ReaderAnswer) -> AnswerRow:
        # built without validation: every value comes from a validated question, snapshot or
        # reader answer, and checking a million rows again was a tenth of the driver's evaluation
        return AnswerRow.model_construct(**answer_record(run_id, reader.name, model_name, item, result))

    kept: list[tuple[int, AnswerRow]] = []

    def store(rows: list[tuple[int, AnswerRow]]) -> None:
        if on_batch is not None and rows:
            on_batch([r for _, r in rows])
        if keep_rows:
            kept.extend(rows)
        for _ in range(len(rows)) if on_answer else ():
            on_answer()  # type: ignore[misc]

    work = _users_work(con, run_id, users, strategies, embedder, settings)
    if getattr(reader, "answer_many", None) is not None:  # batched per user: their questions share most texts
        from personasim.analysis.answer_pool import USERS_PER_TASK

        def answered(keys: list[list[AnswerItem]], answers: list[list[ReaderAnswer]]) -> None:
            store([(item.position, row(item, a)) for items, user_answers in zip(keys, answers, strict=True)
                   for item, a in zip(items, user_answers, strict=True)])

        def payload(items: list[AnswerItem]) -> list[tuple[list[str], str, list[str]]]:
            return [(item.context, item.question.query, item.question.options) for item in items]

        # a few users at a time: their texts embedded together (``EmbeddingReader.answer_users``)
        answer_users = getattr(reader, "answer_users", None)
        while task := list(itertools.islice(work, USERS_PER_TASK)):
            if answer_users is None:
                answered(task, [reader.answer_many(payload(items)) for items in task])
            else:
                answered(task, answer_users([payload(items) for items in task]))
    else:
        pending: list[tuple[int, AnswerRow]] = []

        def keep(item: AnswerItem, result: ReaderAnswer) -> None:
            pending.append((item.position, row(item, result)))
            if len(pending) >= ANSWER_BATCH:
                store(list(pending))
                pending.clear()

        every = (item for items in work for item in items)
        answer_async = getattr(reader, "answer_async", None)
        if answer_async is None:
            for item in every:
                keep(item, reader.answer(item.context, item.question.query, item.question.options))
        else:
            asyncio.run(_answer_all(answer_async, every, concurrency, keep))
        store(pending)
    kept.sort(key=lambda pair: pair[0])
    return [r for _, r in kept]


#: Rows per ``on_batch`` call for readers that answer one question at a time (LLM, log-likelihood):
#: a kill loses at most this many answers.
ANSWER_BATCH = 50
def _users_work(
    con: duckdb.DuckDBPyConnection, run_id: str, users: Iterable[list[tuple[int, QuestionRow]]],
    strategies: list[str], embedder: Any, settings: MemorySettings,
) -> Iterator[list[AnswerItem]]:
    """Each user's work, in the order the users come, snapshots read ``USERS_PER_CHUNK`` users at a time."""
    source = iter(users)
    while chunk := list(itertools.islice(source, answer_items.USERS_PER_CHUNK)):
        snapshots = read_snapshots(con, run_id, [questions[0][1].persona_id for questions in chunk if questions])
        for questions in chunk:
            yield user_items(questions, snapshots, strategies, embedder, settings)


async def _answer_all(
    answer_async: Any, items: Iterable[AnswerItem], concurrency: int, keep: Callable[[AnswerItem, ReaderAnswer], None]
) -> None:
    """``concurrency`` answers in flight, items taken as slots free up (a run's work is built
    lazily, a chunk of users at a time); the first failure stops the scheduling and is raised."""
    gate = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task] = set()
    failures: list[BaseException] = []

    async def one(item: AnswerItem) -> None:
        try:
            keep(item, await answer_async(item.context, item.question.query, item.question.options))
        except Exception as error:  # noqa: BLE001 - re-raised below, after what is in flight settles
            failures.append(error)
        finally:
            gate.release()

    for item in items:
        await gate.acquire()
        if failures:
            break
        task = asyncio.create_task(one(item))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
    if failures:
        raise failures[0]


class StrategyScore(BaseModel):
    strategy: str
    questions: int
    accuracy: float
    mean_context_tokens: float


def score_by_strategy(con: duckdb.DuckDBPyConnection, run_id: str) -> list[StrategyScore]:
    rows = con.execute(
        "SELECT strategy, count(*), avg(correct::INT), avg(context_tokens) FROM answers"
        " WHERE run_id = ? GROUP BY strategy ORDER BY strategy",
        [run_id],
    ).fetchall()
    return [StrategyScore(strategy=s, questions=n, accuracy=a, mean_context_tokens=t) for s, n, a, t in rows]


# -- readers --------------------------------------------------------------------------------------

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


def build_reader(spec: ReaderSpec, cache_path: str | Path | None = None) -> Any:
    """The reader ``spec`` names; an LLM reader caches its responses in ``cache_path`` when given."""
    if spec.kind == "embed":
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


# -- evaluating a stored run ----------------------------------------------------------------------

class EvalSummary(BaseModel):
    """What ``evaluate`` scored and how: the reader, strategies, question types and counts, and the
    accuracy tables (``metrics.summary_tables`` as records) with the artifact audit beside them."""

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
    notes: list[str] = Field(default_factory=list, description="Lines printed beside the tables (who wrote "
                             "a loaded run's memories, what of a dataset folder was not read).")
    audit: dict[str, Any] | None = Field(
        default=None,
        description="The artifact audit of the scored questions (an AuditReport as a dict): the correct option's "
        "length shares and the blind readers' accuracy per question type, the no-memory floor of every accuracy.",
    )


def evaluate(
    db: str | Path,
    run_id: str | None = None,
    strategies: list[str] | None = None,
    reader: ReaderSpec | None = None,
    types: list[str] | None = None,
    regenerate: bool = False,
    n_boot: int = 1000,
    show_progress: bool = False,
    workers: int | None = None,
    embedder: str | None = None,
) -> EvalSummary:
    """Answer the run's questions with each strategy's memory and the reader; store and summarise.

    Questions are generated when the run has none (or ``regenerate``); a run loaded from
    PersonaMem-v2 keeps its own. Strategies default to those the run kept snapshots of. ``workers``:
    Ray actors answering a large evaluation with the embedding reader (default: every core).
    ``embedder``: the embedding reader's model (``minilm``, ``minilm-bf16`` or ``minilm-static``; default: the
    run's own, ``RunConfig.embedder``)."""
    started = time.perf_counter()
    reader = reader or ReaderSpec()
    path = Path(db)
    with open_store(path, write=True) as store:
        run_id = resolve_finished_run(store, run_id)
        own_embedder = run_embedder(store, run_id)
        prepare_embedder(own_embedder)
        use_embedder(own_embedder)  # questions are generated with the run's own model
        _ensure_questions(store, run_id, regenerate)
        chosen = _chosen_questions(store, run_id, types)
        strategies = _strategies(store, run_id, strategies)
        prepare_embedder(embedder or own_embedder)
        use_embedder(embedder or own_embedder)
        cache = str(path) + ".llmcache.sqlite" if reader.kind == "llm" else None
        answering = build_reader(reader, cache)
        settings = read_run(store, run_id).memory_settings
        workers = workers or os.cpu_count() or 1
        with progress_bar(show_progress) as progress:
            task = progress.add_task(f"answering ({answering.name})", total=chosen.count * len(strategies))
            answered = [0]
            stored = StoredQuestions(store.con, run_id, types or None)  # read a chunk of users at a time
            if isinstance(answering, EmbeddingReader):
                answered[0], audits = _score_in_tasks(
                    store, run_id, stored, strategies, answering, settings, workers,
                    lambda n: progress.advance(task, n))
            else:
                from personasim.analysis.audit import AuditTally
                from personasim.analysis.profiles import load_profiles

                def commit(rows: list[AnswerRow]) -> None:  # committed as answered: a kill keeps them
                    store.replace_rows(
                        {"answers": {"run_id": run_id, "answer_id": [a.answer_id for a in rows]}},
                        [("answers", rows)])
                    answered[0] += len(rows)

                audits = AuditTally()
                audit_embedder = getattr(answering, "embedder", None) or default_embedder()
                answer_questions(
                    store.con, run_id, _audited(stored, load_profiles(store.con, run_id), audit_embedder, audits),
                    strategies, answering, settings,
                    on_answer=lambda: progress.advance(task), on_batch=commit, keep_rows=False,
                )
        tables = _tables(store, run_id, answering, strategies, chosen.types, n_boot)
        report = _audit(store, run_id, chosen, audits) if chosen.count else None
    return EvalSummary(
        run_id=run_id, db=str(path), reader=answering.name, reader_model=getattr(answering, "model_name", None),
        strategies=strategies, types=chosen.types, questions=chosen.count,
        answers=answered[0], chance=chosen.chance, wall_seconds=round(time.perf_counter() - started, 2), tables=tables,
        audit=report.model_dump() if report is not None else None,
    )


def _ensure_questions(store: TrajectoryStore, run_id: str, regenerate: bool) -> None:
    """The run's questions are in the store: generated (and stored) when it has none, or ``regenerate``."""
    count, generated = store.con.execute(
        "SELECT count(*), coalesce(bool_and(source = 'generated'), true) FROM questions WHERE run_id = ?", [run_id]
    ).fetchall()[0]
    if count and not regenerate:
        return
    if count and not generated:
        raise StoreError(f"run {run_id} was loaded from PersonaMem-v2; its questions are theirs, not regenerated")
    stored = read_run(store, run_id)
    config = stored.spec.config.questions if isinstance(stored.spec, SimulatedRun) else QuestionConfig()
    fresh = generate_questions(store.con, run_id, stored.seed, config=config)
    store.replace_rows({"answers": {"run_id": run_id}, "questions": {"run_id": run_id}}, [("questions", fresh)])


class _Chosen(NamedTuple):
    """What an evaluation needs to know of the questions it scores, from the store, without them."""

    count: int
    types: list[str]
    chance: float  # the mean of 1 / options


def _chosen_questions(store: TrajectoryStore, run_id: str, types: list[str] | None) -> _Chosen:
    """The questions of ``types`` (all when none): their count, types and chance level. A type
    the run lacks is an error unless it is a known type (asked for, just none generated)."""
    present = [r[0] for r in store.con.execute(
        "SELECT DISTINCT question_type FROM questions WHERE run_id = ? ORDER BY 1", [run_id]).fetchall()]
    if types:
        unknown = [t for t in types if t not in QUESTION_TYPES and t not in present]
        if unknown:
            known = ", ".join(sorted(set(QUESTION_TYPES) | set(present)))
            raise ValueError(f"unknown question type {', '.join(map(repr, unknown))}; choose from {known}")
        if not set(types) & set(present):
            raise ValueError(
                f"the run has no questions of type {', '.join(types)}; it has {', '.join(present) or 'none'}"
            )
    chosen = [t for t in present if not types or t in types]
    count, chance = store.con.execute(
        "SELECT count(*), coalesce(avg(1.0 / len(options)), 0) FROM questions"
        " WHERE run_id = ? AND question_type IN (SELECT unnest(?::VARCHAR[]))", [run_id, chosen]
    ).fetchall()[0]
    return _Chosen(count=int(count), types=chosen, chance=float(chance))


def _strategies(store: TrajectoryStore, run_id: str, wanted: list[str] | None) -> list[str]:
    from personasim.agents.memory import check_memory_names

    have = snapshot_strategies(store.con, run_id)
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


def _score_in_tasks(
    store: TrajectoryStore, run_id: str, questions: list[QuestionRow] | StoredQuestions, strategies: list[str],
    reader: Any, settings: MemorySettings, workers: int, advance: Callable[[int], None],
) -> tuple[int, AuditTally]:
    """The embedding reader's evaluation, user by user (``analysis.scoring``): answers written over
    the old ones ``WRITE_USERS`` users per transaction as they come (a kill keeps them), and each
    question's audit from the process that answered it. Returns the answers written and the audits."""
    import pyarrow as pa

    from personasim.analysis.asking import WRITE_USERS, AnsweringSpec
    from personasim.analysis.audit import AuditTally
    from personasim.analysis.profiles import load_profiles
    from personasim.analysis.scoring import Scored, score_stored

    spec = AnsweringSpec(run_id=run_id, strategies=strategies, memory=settings, **AnsweringSpec.reader_settings(reader))
    pending: list[Scored] = []
    audits = AuditTally()
    written = 0

    def commit() -> None:
        nonlocal written
        written += store.replace("answers", pa.concat_tables([s.answers for s in pending]))
        pending.clear()

    def done(scored: Scored) -> None:
        pending.append(scored)
        audits.add(scored.audits)
        advance(scored.answers.num_rows)
        if sum(s.users for s in pending) >= WRITE_USERS:
            commit()

    score_stored(store.con, spec, questions, load_profiles(store.con, run_id), reader, workers, done)
    if pending:
        commit()
    return written, audits



def _audited(stored: StoredQuestions, profiles: dict[str, str | None], embedder: Any,
             audits: AuditTally) -> Iterator[list[QuestionRow]]:
    """Each user's questions for a reader that answers in this process, each chunk of users
    audited into ``audits`` as it is read, so the questions are read once and never all held."""
    from personasim.analysis.audit import audit_users

    for chunk in stored.by_user():
        audits.add(audit_users(chunk, profiles, embedder))
        yield from chunk


def _audit(store: TrajectoryStore, run_id: str, chosen: _Chosen, audited: AuditTally) -> AuditReport:
    """The artifact audit's summary of exactly the questions scored (after ``--types``)."""
    from personasim.analysis.audit import summarise
    from personasim.analysis.profiles import load_profiles

    per_user = store.con.execute(
        "SELECT persona_id, count(*) FROM questions WHERE run_id = ? AND question_type IN (SELECT unnest(?::VARCHAR[]))"
        " GROUP BY persona_id", [run_id, chosen.types]).fetchall()
    profiles = load_profiles(store.con, run_id)
    return summarise(run_id, audited, sum(n for persona, n in per_user if not profiles.get(persona)))


def _tables(
    store: TrajectoryStore, run_id: str, reader: Any, strategies: list[str], types: list[str], n_boot: int
) -> dict[str, list[dict[str, Any]]]:
    from personasim.analysis.metrics import summary_tables

    where: dict[str, object] = {"reader": [reader.name], "strategy": strategies, "question_type": sorted(set(types))}
    if getattr(reader, "model_name", None):
        where["reader_model"] = [reader.model_name]
    frames = summary_tables(store.con, run_id, where=where, n_boot=n_boot)
    return {name: json.loads(frame.to_json(orient="records")) for name, frame in frames.items()}
