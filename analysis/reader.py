"""Offline readers: answer a multiple-choice question from a memory's context alone.

The embedding reader is what lets the default run score memories with no LLM: it finds the
memory lines about the question's topic (similarity to the options' centroid), favours the
newest of them, and picks the option those lines support most.
"""

from __future__ import annotations

import re
from typing import Protocol

import numpy as np
from pydantic import BaseModel

from personasim.agents.embedding import Embedder

_ASSISTANT_LINE = re.compile(r"^(\s*\[[^\]]*\]\s*)*assistant\s*:", re.IGNORECASE)


class ReaderAnswer(BaseModel):
    chosen_index: int
    scores: list[float]
    raw_output: str | None = None


class Reader(Protocol):
    """What answers a question from a memory's context. ``name`` is stored with each answer;
    ``model_name`` (optional) too. A reader with ``answer_async`` is run concurrently."""

    name: str

    def answer(self, context_items: list[str], query: str, options: list[str]) -> ReaderAnswer: ...


class EmbeddingReader:
    name = "embedding"

    def __init__(
        self, embedder: Embedder, temperature: float = 0.05, recency_weight: float = 0.1, relevance_floor: float = 0.3
    ) -> None:
        self.embedder = embedder
        # answers name the embedder when it is not MiniLM, so a run can hold both side by side
        name = getattr(embedder, "name", "minilm")
        self.model_name: str | None = None if name == "minilm" else name
        self.temperature = temperature
        self.recency_weight = recency_weight
        self.relevance_floor = relevance_floor

    def answer(self, context_items: list[str], query: str, options: list[str]) -> ReaderAnswer:
        """Answer from the memory lines about the options; with none relevant, answer as with no memory.

        The floor is what keeps the reader from over-personalising: a memory full of other topics
        must not pull the answer towards one personalised option. Its default (0.3, cosine of the
        best memory line to the best option) is calibrated on the scripted backend's default run,
        where it separates abstention questions from the rest with AUC 0.92 (see docs/benchmark.md).

        It reads what the user said: the assistant's own past replies in a raw history (full_history,
        sliding_window, rag) are skipped. They are long (80-400 tokens each, ten times a user turn's
        embedding cost) and say only what the chatbot guessed, stale or not; an LLM reader gets them."""
        return self.answer_many([(context_items, query, options)])[0]

    def answer_many(self, work: list[tuple[list[str], str, list[str]]]) -> list[ReaderAnswer]:
        """``answer`` for many (context items, query, options) at once: the same answers, faster.

        Every distinct text is embedded once, in one batched call (one user's questions share
        most of their memory lines, and each question's options serve every strategy), and each
        question indexes into that one matrix. Answering one question at a time cost a cache
        lookup per memory line and a forward pass of four options per question: most of an
        evaluation's time went there, not into the arithmetic."""
        return self.answer_users([work])[0]

    def answer_users(self, users: list[list[tuple[list[str], str, list[str]]]]) -> list[list[ReaderAnswer]]:
        """``answer_many`` for several users' work, their texts embedded in one call: the same answers.

        A text's vector does not depend on its batch, so this changes only the speed: one user's
        hundred-odd texts have about twenty lengths, and the encoder runs attention once per
        length and batch; eight users' texts sorted by length fill batches of a few lengths each."""
        # a snapshot's lines serve all of a checkpoint's questions, and a question's options all its
        # strategies: what depends only on them is computed once per list (the same list object)
        said: dict[int, list[str]] = {}  # each context list's user lines, by the list's identity

        def user_lines(items: list[str]) -> list[str]:
            if id(items) not in said:
                said[id(items)] = [item for item in items if not _ASSISTANT_LINE.match(item)]
            return said[id(items)]

        contexts = [[user_lines(items) for items, _, _ in work] for work in users]
        texts = list(dict.fromkeys(t for user_contexts, work in zip(contexts, users, strict=True)
                                   for ctx, (_, _, options) in zip(user_contexts, work, strict=True)
                                   for t in (*options, *ctx)))
        index = {t: i for i, t in enumerate(texts)}
        vectors = self.embedder.encode(texts)
        answers: list[list[ReaderAnswer | None]] = [[None] * len(work) for work in users]
        fallback: list[tuple[int, int]] = []
        lines: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # a context's vectors and recency ramp
        choices: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # an option list's vectors and centroid
        for u, (user_contexts, work) in enumerate(zip(contexts, users, strict=True)):
            for n, (ctx, (_, _, options)) in enumerate(zip(user_contexts, work, strict=True)):
                if not ctx:
                    fallback.append((u, n))
                    continue
                if id(options) not in choices:
                    opts = vectors[[index[t] for t in options]]
                    choices[id(options)] = opts, opts.mean(axis=0)
                opts, centroid = choices[id(options)]
                if id(ctx) not in lines:
                    lines[id(ctx)] = (vectors[[index[t] for t in ctx]],
                                      np.linspace(0.0, 1.0, len(ctx)) if len(ctx) > 1 else np.ones(1))
                items, recency = lines[id(ctx)]
                similarity = items @ opts.T
                if float(similarity.max()) < self.relevance_floor:
                    fallback.append((u, n))
                    continue
                relevance = items @ centroid
                logits = (relevance + self.recency_weight * recency) / self.temperature
                weights = np.exp(logits - logits.max())
                weights /= weights.sum()
                answers[u][n] = _answer(weights @ similarity)
        if fallback:  # nothing relevant remembered: answer as with no memory, by the query alone
            queries = list(dict.fromkeys(users[u][n][1] for u, n in fallback))
            query_vectors = dict(zip(queries, self.embedder.encode(queries), strict=True))
            for u, n in fallback:
                _, query, options = users[u][n]
                answers[u][n] = _answer(vectors[[index[t] for t in options]] @ query_vectors[query])
        return answers  # type: ignore[return-value]  # every slot is filled above


def _answer(scores: np.ndarray) -> ReaderAnswer:
    # ``tolist`` gives the floats ``float(s)`` would, without a numpy scalar per option
    return ReaderAnswer(chosen_index=int(np.argmax(scores)), scores=[round(s, 6) for s in scores.tolist()])
