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
        context_items = [item for item in context_items if not _ASSISTANT_LINE.match(item)]
        opts = self.embedder.encode(options)
        items = self.embedder.encode(context_items) if context_items else None
        if items is None or float((items @ opts.T).max()) < self.relevance_floor:
            scores = opts @ self.embedder.encode([query])[0]
        else:
            relevance = items @ opts.mean(axis=0)
            recency = np.linspace(0.0, 1.0, len(context_items)) if len(context_items) > 1 else np.ones(1)
            logits = (relevance + self.recency_weight * recency) / self.temperature
            weights = np.exp(logits - logits.max())
            weights /= weights.sum()
            scores = weights @ (items @ opts.T)
        return ReaderAnswer(chosen_index=int(np.argmax(scores)), scores=[round(float(s), 6) for s in scores])
