"""Rule-based memory writing, used when the backend is scripted (no LLM to summarise).

It keeps what a careful note-taker would: the user's first-person declarative sentences (where
implicit preferences live), drops requests and questions, dates each note, deduplicates, and
forgets the oldest notes first when over budget. It never sees the ground truth.
"""

from __future__ import annotations

import re

from personasim.agents.tokens import truncate_to_tokens

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_FIRST_PERSON = re.compile(r"(\bI\b|\bI'm\b|\bI've\b|\bI'd\b|\bmy\b|\bme\b|\bwe\b|\bour\b)", re.IGNORECASE)
_REQUEST_START = re.compile(
    r"^(can|could|would|will|please|what|how|any|do|does|is|are|should|thanks|thank|perfect|great|ok|okay|"
    r"sounds|cool|nice|awesome)\b",
    re.IGNORECASE,
)
_SMALL_TALK = re.compile(r"\b(think it over|give that a try|all I needed|that helps)\b", re.IGNORECASE)
_DATE_TAG = re.compile(r"^\[[^\]]*\]\s*")


def personal_sentences(text: str) -> list[str]:
    """First-person, declarative sentences of one user message."""
    out = []
    for sentence in _SENTENCE_END.split(text.strip()):
        s = sentence.strip()
        if not s or s.endswith("?") or _REQUEST_START.match(s) or _SMALL_TALK.search(s):
            continue
        if _FIRST_PERSON.search(s):
            out.append(s)
    return out


def rewrite_notes(old_memory: str, user_messages: list[str], session_date: str, budget_tokens: int) -> str:
    """New memory text: old notes plus this session's personal sentences, within budget."""
    notes = [line for line in old_memory.splitlines() if line.strip()]
    for message in user_messages:
        for sentence in personal_sentences(message):
            body = sentence
            notes = [n for n in notes if _DATE_TAG.sub("", n) != body]
            notes.append(f"[{session_date}] {body}")
    kept = truncate_to_tokens(notes, budget_tokens)
    text = "\n".join(kept)
    return text
