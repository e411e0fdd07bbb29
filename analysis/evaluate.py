"""Answer every question with every memory strategy's state at question time, and score it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

import duckdb
from pydantic import BaseModel

from personasim.agents.memory import MemorySettings, memory_class
from personasim.agents.tokens import count_tokens
from personasim.analysis.reader import EmbeddingReader
from personasim.sim.rows import AnswerRow, QuestionRow


class _Snapshot(BaseModel):
    snapshot_id: str
    time: datetime
    items: list[str]
    tokens: int


def load_snapshots(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[tuple[str, str], list[_Snapshot]]:
    out: dict[tuple[str, str], list[_Snapshot]] = defaultdict(list)
    for sid, persona, strategy, time, items, tokens in con.execute(
        "SELECT snapshot_id, persona_id, strategy, time, items, tokens FROM memory_snapshots"
        " WHERE run_id = ? ORDER BY time, snapshot_id",
        [run_id],
    ).fetchall():
        out[(persona, strategy)].append(_Snapshot(snapshot_id=sid, time=time, items=items, tokens=tokens))
    return out


def answer_questions(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    questions: list[QuestionRow],
    strategies: list[str],
    reader: EmbeddingReader,
    settings: MemorySettings | None = None,
    on_answer: Callable[[], None] | None = None,
) -> list[AnswerRow]:
    """Each strategy answers from its latest snapshot taken before the question (never after).

    The snapshot is the strategy's state; what of it enters the context for this question is the
    strategy's own choice (``select_context``: everything, or top-k retrieval for rag)."""
    settings = settings or MemorySettings()
    snapshots = load_snapshots(con, run_id)
    answers = []
    for q in questions:
        for strategy in strategies:
            before = [s for s in snapshots.get((q.persona_id, strategy), []) if s.time <= q.asked_at]
            snap = before[-1] if before else None
            select = memory_class(strategy).select_context
            context = select(snap.items, q.query, reader.embedder, settings) if snap else []
            result = reader.answer(context, q.query, q.options)
            answers.append(
                AnswerRow(
                    run_id=run_id,
                    answer_id=f"{q.question_id}/{strategy}/{reader.name}",
                    question_id=q.question_id,
                    persona_id=q.persona_id,
                    strategy=strategy,
                    reader=reader.name,
                    snapshot_id=snap.snapshot_id if snap else None,
                    chosen_index=result.chosen_index,
                    correct=result.chosen_index == q.correct_index,
                    scores=result.scores,
                    context_tokens=count_tokens("\n".join(context)),
                )
            )
            if on_answer:
                on_answer()
    return answers


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
