"""Scoring a stored run's questions (``personasim eval``) user by user, in whichever process has a
core: each task's answers come back as an Arrow table, and its questions' artifact audit with them.

Why the audit travels with the answers: its blind readers score every option against the query
and the persona's profile, so it embeds every option, which the process that answered the
question has just done (the embedder caches by text, and a text's vector is the same bits in any
batch). Audited in the driver after a pool had answered, a 1,000-user MiniLM store's 49,451
distinct options would be embedded a second time, in one process. Why Arrow: the driver then only
writes, as in a run (``analysis.asking``).

The rows and the audit are the same as ``answer_questions`` followed by ``audit_questions``
(tests/test_scoring.py compares them).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import duckdb
import pyarrow as pa

from personasim.analysis.asking import AnsweringSpec, UsersAnswerer, here_then_pool, latest_at, load_embedder_in_actor
from personasim.analysis.audit import QuestionAudit, audit_questions
from personasim.analysis.reader import EmbeddingReader
from personasim.analysis.stored_questions import USERS_PER_CHUNK, StoredQuestions, grouped_by_user
from personasim.sim.rows import QuestionRow
from personasim.sim.store_read import SnapshotRef, read_snapshots


class StoredTask(NamedTuple):
    """A few users' stored questions (one list per user), the snapshots they read (per user and
    strategy, the latest at or before each question), and the users' profiles for the audit."""

    questions: list[list[QuestionRow]]
    snapshots: dict[tuple[str, str], list[SnapshotRef]]
    profiles: dict[str, str | None]


class Scored(NamedTuple):
    """A task's result: its answers with the store's Arrow schema, and its questions' audit."""

    users: int
    answers: pa.Table
    audits: list[QuestionAudit]


class UsersScorer(UsersAnswerer):
    """Answers and audits tasks of users with one embedding reader (the driver's, or an actor's own).
    The audit embeds the options answering has just embedded: both embedders keep vectors by text."""

    def score(self, task: StoredTask) -> Scored:
        answers = self.answer(task.questions, task.snapshots)
        flat = [q for user in task.questions for q in user]
        return Scored(len(task.questions), answers, audit_questions(flat, task.profiles, self.reader.embedder))


class PoolScorer(UsersScorer):
    """A pool actor that answers and audits."""

    def __init__(self, spec: AnsweringSpec) -> None:
        load_embedder_in_actor(spec.embedder)
        super().__init__(spec)


def score_stored(
    con: duckdb.DuckDBPyConnection, spec: AnsweringSpec, questions: list[QuestionRow] | StoredQuestions,
    profiles: Mapping[str, str | None], reader: EmbeddingReader, workers: int, on_scored: Callable[[Scored], None],
) -> None:
    """Answer and audit ``questions`` (a run's stored ones, any subset, as a list or read from the
    store a chunk of users at a time) with every strategy of ``spec``; ``on_scored`` gets each
    task's result as it comes (in completion order), so a caller can commit the answers as they
    come and a kill keeps them.

    The first users are scored in this process with ``reader``, the rest, once there are
    ``answer_pool.MIN_PARALLEL_ANSWERS`` answers and ``workers`` > 1, in a pool of that many Ray
    actors with the spec's embedder (``asking.here_then_pool``). Either way the same results."""
    here = UsersScorer(spec, reader)
    here_then_pool(stored_tasks(con, spec.run_id, questions, profiles, spec.strategies), here.score, PoolScorer,
                   spec, "score", workers, on_scored)


def stored_tasks(
    con: duckdb.DuckDBPyConnection, run_id: str, questions: list[QuestionRow] | StoredQuestions,
    profiles: Mapping[str, str | None], strategies: list[str],
) -> Iterator[StoredTask]:
    """Tasks of ``answer_pool.USERS_PER_TASK`` users, in the order the questions first name them,
    questions (when read from the store) and snapshots read ``USERS_PER_CHUNK`` users at a time."""
    from personasim.analysis.answer_pool import USERS_PER_TASK

    if isinstance(questions, StoredQuestions):
        chunks = questions.by_user()
    else:
        users = iter(grouped_by_user(questions).values())
        chunks = iter(lambda: list(itertools.islice(users, USERS_PER_CHUNK)), [])
    for chunk in chunks:
        snapshots = read_snapshots(con, run_id, [user[0].persona_id for user in chunk])
        for start in range(0, len(chunk), USERS_PER_TASK):
            part = chunk[start:start + USERS_PER_TASK]
            times = {user[0].persona_id: sorted({q.asked_at for q in user}) for user in part}
            yield StoredTask(part, latest_at(snapshots, times, strategies),
                             {p: profiles.get(p) for p in times})
