"""A run's evaluation, user by user, in whichever process has a core: ask each user their
questions and answer them with every strategy, as Arrow tables the driver only writes.

Why whole users and not questions: a user's questions come from that user's facts alone (their
timeline, sessions and reveals, and the run-wide counts of who likes what), and are answered from
that user's snapshots alone, so a slice of users is a self-contained task. A 10,000-user
evaluation that generated its questions and built its answer rows in the driver kept the driver
busy while the evaluation actors were idle two thirds of the time (issue 17: 175 s of the 617 s
run); here the driver reads the facts and snapshots, hands out tasks and writes what comes back.

The answers and questions are the same as ``generate_questions_by_user`` followed by
``answer_questions`` with the embedding reader: the same functions build them, from the same
facts (tests/test_asking.py compares the stores).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import NamedTuple, TypeVar

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from personasim.agents.memory import MemorySettings
from personasim.analysis.answer_items import USERS_PER_CHUNK, answer_record, user_items
from personasim.analysis.questions import QuestionConfig, RunFacts, UsersAsker, load_run_facts
from personasim.analysis.reader import EmbeddingReader
from personasim.sim.rows import QuestionRow
from personasim.sim.store_read import SnapshotRef, read_snapshots

#: Users whose questions and answers a driver commits together: a commit costs about 8 ms whatever
#: its size, and committing each task of eight users was a third of a run's writing time.
WRITE_USERS = 64


class AnsweringSpec(BaseModel):
    """What every process that answers needs to give the driver's answers: the run, the strategies
    and their settings, and the embedding reader's."""

    run_id: str
    strategies: list[str]
    memory: MemorySettings
    embedder: str  # the embedder's name (``minilm``, ``minilm-bf16``, ``minilm-static``)
    temperature: float
    recency_weight: float
    relevance_floor: float

    @staticmethod
    def reader_settings(reader: EmbeddingReader) -> dict[str, object]:
        return {"embedder": getattr(reader.embedder, "name", "minilm"), "temperature": reader.temperature,
                "recency_weight": reader.recency_weight, "relevance_floor": reader.relevance_floor}


class AskingSpec(AnsweringSpec):
    """... and, to ask, what the run's questions are generated from."""

    seed: int
    questions: QuestionConfig

    @classmethod
    def for_reader(cls, reader: EmbeddingReader, run_id: str, seed: int, questions: QuestionConfig,
                   strategies: list[str], memory: MemorySettings) -> AskingSpec:
        return cls(run_id=run_id, seed=seed, questions=questions, strategies=strategies, memory=memory,
                   **AnsweringSpec.reader_settings(reader))


class UsersTask(NamedTuple):
    """A few users to ask and answer: their facts, and each strategy's snapshots they may read
    (for every checkpoint, the latest at or before it: all that a question there can use)."""

    facts: RunFacts
    snapshots: dict[tuple[str, str], list[SnapshotRef]]


class Asked(NamedTuple):
    """A task's result: its users' questions and answers, with the store's Arrow schemas."""

    users: int
    questions: pa.Table
    answers: pa.Table


class UsersAnswerer:
    """Answers users' questions with every strategy, with one embedding reader (the driver's, or an
    actor's own), as an Arrow table of answer rows."""

    def __init__(self, spec: AnsweringSpec, reader: EmbeddingReader | None = None) -> None:
        from personasim.agents.embedding import default_embedder

        self.spec = spec
        self.reader = reader or EmbeddingReader(default_embedder(), spec.temperature, spec.recency_weight,
                                                spec.relevance_floor)

    def answer(self, users: list[list[QuestionRow]],
               snapshots: Mapping[tuple[str, str], list[SnapshotRef]]) -> pa.Table:
        """Each user's questions (one list per user) answered from ``snapshots``, which must hold,
        per user and strategy, at least the latest snapshot at or before each question."""
        from personasim.sim.store import arrow_schema

        spec, reader = self.spec, self.reader
        position = itertools.count()
        items = [user_items([(next(position), q) for q in questions], snapshots, spec.strategies,
                            reader.embedder, spec.memory) for questions in users]
        answers = reader.answer_users([[(i.context, i.question.query, i.question.options) for i in user]
                                       for user in items])
        records = [answer_record(spec.run_id, reader.name, reader.model_name, item, answer)
                   for user, user_answers in zip(items, answers, strict=True)
                   for item, answer in zip(user, user_answers, strict=True)]
        return pa.Table.from_pylist(records, schema=arrow_schema("answers"))


class UsersEvaluator(UsersAnswerer):
    """Asks and answers tasks of users: their questions generated from their facts, then answered."""

    def __init__(self, spec: AskingSpec, reader: EmbeddingReader | None = None) -> None:
        super().__init__(spec, reader)
        self.asker = UsersAsker(spec.run_id, spec.seed, spec.questions)

    def ask_and_answer(self, task: UsersTask) -> Asked:
        from personasim.sim.store import arrow_schema, row_dicts

        users = list(self.asker.ask(task.facts))
        for questions in users:
            _check_asked_at_checkpoints(questions, task.facts)
        return Asked(
            users=len(task.facts.timelines),
            questions=pa.Table.from_pylist(row_dicts([q for user in users for q in user]),
                                           schema=arrow_schema("questions")),
            answers=self.answer(users, task.snapshots),
        )


def load_embedder_in_actor(name: str) -> None:
    """A pool actor's embedder: the spec's, loaded in the actor (a ``minilm-static`` model the
    driver built beforehand: an actor never builds one), with torch's threads at the cores Ray gave it."""
    from personasim.agents.embedding import size_torch_threads, use_embedder
    from personasim.analysis.static_build import prepare_embedder
    from personasim.sim.collector import collect_rarely_in_workers

    prepare_embedder(name)
    use_embedder(name)
    size_torch_threads()
    collect_rarely_in_workers()


class PoolEvaluator(UsersEvaluator):
    """A pool actor that asks and answers."""

    def __init__(self, spec: AskingSpec) -> None:
        load_embedder_in_actor(spec.embedder)
        super().__init__(spec)


def _check_asked_at_checkpoints(questions: list[QuestionRow], facts: RunFacts) -> None:
    """A task carries only the snapshots at its users' checkpoints, which is exact only for
    questions asked at a checkpoint (every generated one is): refuse anything else loudly."""
    times = {c.t for c in facts.checkpoints.get(questions[0].persona_id, [])} if questions else set()
    off = [q.question_id for q in questions if q.asked_at not in times]
    if off:
        raise RuntimeError(f"questions {off[:3]} are not asked at a checkpoint of their user; "
                           "answer them with analysis.evaluate.answer_questions")


def ask_and_answer(
    con: duckdb.DuckDBPyConnection, spec: AskingSpec, reader: EmbeddingReader, workers: int,
    on_asked: Callable[[Asked], None],
) -> None:
    """Ask and answer every user of the run; ``on_asked`` gets each task's tables as they come
    (in completion order), so a caller can commit them and a kill keeps what was answered.

    The first users are asked in this process with ``reader``; once they have given
    ``answer_pool.MIN_PARALLEL_ANSWERS`` answers and ``workers`` > 1, the rest go to a pool of that many Ray
    actors (``answer_pool.in_pool``), each with the spec's embedder. Either way the same tables."""
    facts = load_run_facts(con, spec.run_id, spec.questions)
    here = UsersEvaluator(spec, reader)
    here_then_pool(_tasks(con, spec.run_id, facts, spec.strategies), here.ask_and_answer, PoolEvaluator, spec,
                   "ask_and_answer", workers, on_asked)


Task = TypeVar("Task")
Done = TypeVar("Done", bound=tuple)


def here_then_pool(
    tasks: Iterator[Task], here: Callable[[Task], Done], pool: type, spec: AnsweringSpec, method: str,
    workers: int, on_done: Callable[[Done], None],
) -> None:
    """Tasks done with ``here`` in this process until they have given
    ``answer_pool.MIN_PARALLEL_ANSWERS`` answers (a result's ``answers`` table), then, with
    ``workers`` > 1, the rest by ``method`` of a pool of that many ``pool(spec)`` Ray actors
    (``answer_pool.in_pool``). A small evaluation never pays for the actors' start; a large one
    loses only the first few seconds to the driver. ``on_done`` gets each result as it comes."""
    from personasim.analysis import answer_pool

    answered = 0
    for task in tasks:
        if workers > 1 and answered >= answer_pool.MIN_PARALLEL_ANSWERS:
            rest = ((None, t) for t in itertools.chain([task], tasks))
            answer_pool.in_pool(pool, (spec,), method, rest, workers, lambda _, done: on_done(done))
            return
        done = here(task)
        answered += done.answers.num_rows  # type: ignore[attr-defined]
        on_done(done)


def _tasks(con: duckdb.DuckDBPyConnection, run_id: str, facts: RunFacts, strategies: list[str]) -> Iterator[UsersTask]:
    """Tasks of ``answer_pool.USERS_PER_TASK`` users in persona order, snapshots read
    ``USERS_PER_CHUNK`` users at a time."""
    from personasim.analysis.answer_pool import USERS_PER_TASK

    personas = iter(sorted(facts.timelines))
    while chunk := list(itertools.islice(personas, USERS_PER_CHUNK)):
        snapshots = read_snapshots(con, run_id, chunk)
        for start in range(0, len(chunk), USERS_PER_TASK):
            users = chunk[start:start + USERS_PER_TASK]
            part = facts.of_users(users)
            times = {p: [c.t for c in part.checkpoints.get(p, [])] for p in part.timelines}
            yield UsersTask(part, latest_at(snapshots, times, strategies))


def latest_at(snapshots: Mapping[tuple[str, str], list[SnapshotRef]], times: Mapping[str, Iterable[datetime]],
              strategies: list[str]) -> dict[tuple[str, str], list[SnapshotRef]]:
    """For each user of ``times`` and each strategy, the latest snapshot at or before each of the
    user's times, in time order: all that questions asked at those times read, and no more to send."""
    kept: dict[tuple[str, str], list[SnapshotRef]] = {}
    for persona_id, at in times.items():
        times_here = list(at)
        for strategy in strategies:
            refs = snapshots.get((persona_id, strategy), [])
            latest = {id(before[-1]) for t in times_here if (before := [s for s in refs if s.time <= t])}
            if latest:
                kept[(persona_id, strategy)] = [s for s in refs if id(s) in latest]
    return kept
