"""What one answer is: the item a reader answers (a question, a strategy, the snapshot it reads and
the context chosen from it) and the stored row it becomes. One definition for every path that
answers: ``answer_questions`` in one process, and the tasks a run (``analysis.asking``) or
``personasim eval`` (``analysis.scoring``) hands to whichever process has a core, so the rows are
the same whoever built them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from personasim.agents.memory import MemorySettings, memory_class
from personasim.agents.tokens import count_tokens
from personasim.analysis.reader import ReaderAnswer
from personasim.analysis.stored_questions import USERS_PER_CHUNK  # users whose snapshots are read at once
from personasim.sim.rows import QuestionRow
from personasim.sim.store_read import SnapshotRef

__all__ = ["USERS_PER_CHUNK", "AnswerItem", "answer_record", "user_items"]


class AnswerItem(NamedTuple):
    """One answer to give: a question, a strategy, the snapshot it reads and the context chosen."""

    position: int  # in question order, each question's strategies in order
    question: QuestionRow
    strategy: str
    snapshot: SnapshotRef | None
    context: list[str]


def answer_record(run_id: str, reader: str, model_name: str | None, item: AnswerItem,
                  result: ReaderAnswer) -> dict[str, Any]:
    """An answer row's values, for rows built as models (``answer_questions``) and for those a task
    sends back as an Arrow table alike."""
    q, snap = item.question, item.snapshot
    key = reader if model_name is None else f"{reader}:{model_name}"
    return {
        "run_id": run_id, "answer_id": f"{q.question_id}/{item.strategy}/{key}", "question_id": q.question_id,
        "persona_id": q.persona_id, "strategy": item.strategy, "reader": reader,
        "snapshot_id": snap.snapshot_id if snap else None, "chosen_index": result.chosen_index,
        "correct": result.chosen_index == q.correct_index, "scores": result.scores,
        "context_tokens": _context_tokens(snap, item.context), "reader_model": model_name,
        "raw_output": result.raw_output,
    }


def _context_tokens(snap: SnapshotRef | None, context: list[str]) -> int:
    """A snapshot used whole: its stored count, which is the count of its joined lines (no token
    spans the newline joining two lines); otherwise the chosen lines' counts, each cached."""
    if snap is not None and context is snap.items:
        return snap.tokens
    return sum(count_tokens(line) for line in context)


def user_items(
    questions: list[tuple[int, QuestionRow]], snapshots: Mapping[tuple[str, str], list[SnapshotRef]],
    strategies: list[str], embedder: Any, settings: MemorySettings,
) -> list[AnswerItem]:
    """One user's answers to give: each strategy answers from its latest snapshot at or before the
    question, with the context its memory class selects from it."""
    items: list[AnswerItem] = []
    selectors = {strategy: memory_class(strategy).select_context for strategy in strategies}
    for n, q in questions:
        for k, strategy in enumerate(strategies):
            before = [s for s in snapshots.get((q.persona_id, strategy), []) if s.time <= q.asked_at]
            snap = before[-1] if before else None
            context = selectors[strategy](snap.items, q.query, embedder, settings) if snap else []
            items.append(AnswerItem(n * len(strategies) + k, q, strategy, snap, context))
    return items
