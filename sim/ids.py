"""Deterministic row ids, derived from (user, session, turn); the run id is the other key column."""

from __future__ import annotations


def session_id(persona_id: str, session_index: int) -> str:
    return f"{persona_id}/s{session_index:04d}"


def turn_id(persona_id: str, session_index: int, turn_index: int) -> str:
    return f"{session_id(persona_id, session_index)}/t{turn_index:03d}"


def snapshot_id(persona_id: str, session_index: int, strategy: str) -> str:
    return f"{session_id(persona_id, session_index)}/mem/{strategy}"
