"""A run's stored questions, read a chunk of users at a time.

Why: as objects they take 9.5 KB each, so a 10,000-user run's 400,000 would take 4 GB at once,
and a 100,000-user run's more than a machine has. Every reader of a stored run's questions that
goes through all of them (``personasim eval`` with any reader, ``personasim audit``) takes them
from here, one chunk of users at a time; each chunk is one query.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import duckdb

from personasim.sim.rows import QuestionRow
from personasim.sim.store_read import question_users, read_questions

#: Users whose questions are read in one query (their snapshots too: ``answer_items``).
USERS_PER_CHUNK = 256


class StoredQuestions(NamedTuple):
    """A run's stored questions (of ``types``, when given), read ``USERS_PER_CHUNK`` users at a time."""

    con: duckdb.DuckDBPyConnection
    run_id: str
    types: list[str] | None = None

    def by_user(self) -> Iterator[list[list[QuestionRow]]]:
        """Chunks of users' questions, one list per user, users in the order the questions first
        name them by id (as grouping ``read_questions``' whole list gives them)."""
        users = question_users(self.con, self.run_id, self.types)
        for start in range(0, len(users), USERS_PER_CHUNK):
            chunk = users[start:start + USERS_PER_CHUNK]
            yield list(grouped_by_user(read_questions(self.con, self.run_id, chunk, self.types)).values())


def grouped_by_user(questions: list[QuestionRow]) -> dict[str, list[QuestionRow]]:
    """Questions per user, users in the order the questions first name them."""
    by_user: dict[str, list[QuestionRow]] = {}
    for q in questions:
        by_user.setdefault(q.persona_id, []).append(q)
    return by_user
