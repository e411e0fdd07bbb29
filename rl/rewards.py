"""Reward functions grounded in the persona's true state, with TRL's ``reward_funcs`` signature.

Each takes ``completions`` (strings, or conversational ``[{"role": "assistant", "content": ...}]``
lists, as ``GRPOTrainer`` passes them) plus the dataset's columns as keyword arguments, and
returns one float per completion. The columns are those ``rl/datasets.py`` writes for ``grpo``:
``correct_index``, ``options``, ``preference``, ``stale_preference``, ``memory``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from personasim.analysis.answer_parsing import parse_choice


def completion_text(completion: Any) -> str:
    """The text of one completion in either of TRL's formats."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def multiple_choice_reward(completions: list[Any], correct_index: list[int], options: list[list[str]] | None = None,
                           **kwargs: Any) -> list[float]:
    """1.0 for the correct letter (``\\boxed{b}``, ``(b)``, ``b``), else 0.0; unparseable is wrong.

    PersonaMem-v2 trained Qwen3-4B with GRPO on exactly this signal."""
    rewards = []
    for i, completion in enumerate(completions):
        n = len(options[i]) if options is not None else 26
        choice = parse_choice(completion_text(completion), n)
        rewards.append(1.0 if choice is not None and choice == correct_index[i] else 0.0)
    return rewards


def preference_alignment_reward(
    completions: list[Any], preference: list[str], stale_preference: list[str] | None = None, **kwargs: Any
) -> list[float]:
    """How much more a free-form reply is about the preference held now than the replaced one:
    cosine(reply, preference) - cosine(reply, stale), in [-2, 2] (just the first term without a stale one)."""
    from personasim.agents.embedding import default_embedder

    embedder = default_embedder()
    texts = [completion_text(c) for c in completions]
    stale = stale_preference or [""] * len(texts)
    replies = embedder.encode(texts)
    now = embedder.encode(list(preference))
    before = embedder.encode([s or "" for s in stale])
    rewards = []
    for i in range(len(texts)):
        score = float(replies[i] @ now[i])
        if stale[i]:
            score -= float(replies[i] @ before[i])
        rewards.append(round(score, 6))
    return rewards


def over_personalisation_penalty(completions: list[Any], irrelevant_preferences: list[list[str]],
                                 threshold: float = 0.45, **kwargs: Any) -> list[float]:
    """-1 per sentence of the reply that is about a preference irrelevant to the request (MiniLM
    cosine above ``threshold``), 0 for a reply that stays on topic: remembering everything is not
    a reason to mention everything (OP-Bench's irrelevance and repetition)."""
    import re

    from personasim.agents.embedding import default_embedder

    embedder = default_embedder()
    rewards = []
    for completion, irrelevant in zip(completions, irrelevant_preferences, strict=True):
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", completion_text(completion)) if s.strip()]
        if not sentences or not irrelevant:
            rewards.append(0.0)
            continue
        similarity = embedder.encode(sentences) @ embedder.encode(list(irrelevant)).T
        rewards.append(-float((similarity.max(axis=1) >= threshold).sum()))
    return rewards


def memory_fidelity_reward(completions: list[Any], held_out: list[list[dict[str, Any]]], **kwargs: Any) -> list[float]:
    """For a policy that writes memory: the share of held-out questions about the same user that
    the embedding reader answers correctly with the written memory as its only context. This is
    the signal PersonaMem-v2 used to train its agentic memory, computed here from the truth.

    ``held_out``: per completion, questions as ``{"query", "options", "correct_index"}``."""
    from personasim.agents.embedding import default_embedder
    from personasim.analysis.reader import EmbeddingReader

    reader = EmbeddingReader(default_embedder())
    rewards = []
    for completion, questions in zip(completions, held_out, strict=True):
        lines = [line.strip() for line in completion_text(completion).splitlines() if line.strip()]
        if not questions:
            rewards.append(0.0)
            continue
        right = [reader.answer(lines, q["query"], list(q["options"])).chosen_index == q["correct_index"]
                 for q in questions]
        rewards.append(float(np.mean(right)))
    return rewards
