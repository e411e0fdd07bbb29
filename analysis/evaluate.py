"""Answer every question with every memory strategy's state at question time, and score it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

import duckdb
from pydantic import BaseModel

from personasim.agents.embedding import default_embedder
from personasim.agents.memory import MemorySettings, memory_class
from personasim.agents.tokens import count_tokens
from personasim.analysis.reader import Reader, ReaderAnswer
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
    reader: Reader,
    settings: MemorySettings | None = None,
    on_answer: Callable[[], None] | None = None,
    concurrency: int = 16,
) -> list[AnswerRow]:
    """Each strategy answers from its latest snapshot taken before the question (never after).

    The snapshot is the strategy's state; what of it enters the context for this question is the
    strategy's own choice (``select_context``: everything, or top-k retrieval for rag). Readers
    that call a server (``answer_async``) answer ``concurrency`` questions at a time."""
    settings = settings or MemorySettings()
    snapshots = load_snapshots(con, run_id)
    embedder = getattr(reader, "embedder", None) or default_embedder()
    work: list[tuple[QuestionRow, str, _Snapshot | None, list[str]]] = []
    for q in questions:
        for strategy in strategies:
            before = [s for s in snapshots.get((q.persona_id, strategy), []) if s.time <= q.asked_at]
            snap = before[-1] if before else None
            select = memory_class(strategy).select_context
            context = select(snap.items, q.query, embedder, settings) if snap else []
            work.append((q, strategy, snap, context))

    model_name = getattr(reader, "model_name", None)
    reader_key = reader.name if model_name is None else f"{reader.name}:{model_name}"

    def row(
        q: QuestionRow, strategy: str, snap: _Snapshot | None, context: list[str], result: ReaderAnswer
    ) -> AnswerRow:
        if on_answer:
            on_answer()
        return AnswerRow(
            run_id=run_id, answer_id=f"{q.question_id}/{strategy}/{reader_key}", question_id=q.question_id,
            persona_id=q.persona_id, strategy=strategy, reader=reader.name,
            snapshot_id=snap.snapshot_id if snap else None, chosen_index=result.chosen_index,
            correct=result.chosen_index == q.correct_index, scores=result.scores,
            context_tokens=count_tokens("\n".join(context)), reader_model=model_name,
            raw_output=result.raw_output,
        )

    answer_async = getattr(reader, "answer_async", None)
    if answer_async is None:
        return [row(q, s, snap, ctx, reader.answer(ctx, q.query, q.options)) for q, s, snap, ctx in work]

    async def run_all() -> list[AnswerRow]:
        gate = asyncio.Semaphore(concurrency)

        async def one(q: QuestionRow, strategy: str, snap: _Snapshot | None, context: list[str]) -> AnswerRow:
            async with gate:
                return row(q, strategy, snap, context, await answer_async(context, q.query, q.options))

        return list(await asyncio.gather(*(one(*w) for w in work)))

    return asyncio.run(run_all())


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
