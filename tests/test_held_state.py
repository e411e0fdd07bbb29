"""What a user holds between sessions (issue 17): the persona and raw histories packed, nothing lost.

The store digest test is the end-to-end check that packing changes no output; these check the
packing itself: the state after a round is the packed form, and unpacking gives back exactly
what was there."""

from __future__ import annotations

import asyncio
from datetime import datetime

from personasim.agents.memory.base import MemorySettings, message_content
from personasim.agents.memory.registry import create_memory
from personasim.config import build_config
from personasim.sim.shard import UserShard


def test_a_shard_holds_each_persona_packed_between_rounds_and_gets_it_back_exactly():
    shard = UserShard(build_config(users=3, sessions=3, seed=4), [0, 1, 2])
    asyncio.run(shard.run_round(0))
    asyncio.run(shard.run_round(1))
    for user in shard.users:
        assert user._persona is None and len(user._packed_persona) > 0
    live = [u.persona.model_copy(deep=True) for u in shard.users]  # unpacks
    assert all(u._persona is not None for u in shard.users)
    assert [u.persona.id for u in shard.users] == [u.persona_id for u in shard.users]
    for user, before in zip(shard.users, live, strict=True):
        user.hold()
        assert user.persona == before  # the JSON round trip is exact: dates, enums, floats, people
    asyncio.run(shard.run_round(2))  # and the next round runs on what was unpacked
    assert all(u._persona is None for u in shard.users)


def test_a_raw_history_is_packed_at_the_end_of_each_session_and_reads_back_in_order():
    async def sessions():
        memory = create_memory("full_history", MemorySettings())
        for session in range(3):
            for turn in range(4):
                await memory.remember("user", f"session {session} turn {turn}: I like café crème", f"t{session}")
            assert len(memory._new) == 4  # this session's messages: a plain list until it ends
            await memory.end_session(datetime(2025, 1, 1 + session))
            assert memory._new == [] and isinstance(memory._packed, bytes)
        return memory

    memory = asyncio.run(sessions())
    items = memory.items()
    assert items == [f"[t{s}] user: session {s} turn {t}: I like café crème" for s in range(3) for t in range(4)]
    memory.drop({0, 5})
    assert memory.items() == [line for i, line in enumerate(items) if i not in (0, 5)]
    assert len(memory._packed) < sum(len(line) for line in items)


def test_a_raw_historys_kept_token_count_is_its_texts_count_through_truncation_and_forgetting():
    """full_history keeps its token count as lines come and go instead of recounting the whole
    history at every session's end: the snapshot's count must be the count of its text."""
    from personasim.agents.tokens import count_tokens

    async def sessions(name: str, budget: int) -> list[tuple[int, str]]:
        memory = create_memory(name, MemorySettings(full_history_max_tokens=budget))
        seen = []
        for session in range(6):
            for turn in range(5):
                await memory.add(message_content("user", f"Session {session}, turn {turn}: I love spicy ramen, "
                                                          "don't you?", datetime(2025, 1, 1 + session)))
                await memory.add(message_content("assistant", "Sure! " * (turn + 3), datetime(2025, 1, 1 + session)))
            if session == 3:
                await memory.add(message_content("user", "Please forget what I told you about ramen.",
                                                 datetime(2025, 1, 1 + session)))
            await memory.end_session(datetime(2025, 1, 1 + session, 23))
            snap = memory.snapshot()
            seen.append((snap.tokens, snap.text))
        return seen

    for name in ("full_history", "full_history_forgetting"):
        for budget in (100_000, 300):  # everything kept; the oldest lines cut every session
            seen = asyncio.run(sessions(name, budget))
            assert all(tokens == count_tokens(text) for tokens, text in seen), (name, budget)
            assert (max(t for t, _ in seen) <= 300) == (budget == 300)


def test_redaction_skips_only_patterns_that_cannot_match():
    import re

    from personasim.agents.memory import base

    memory = create_memory("full_history", MemorySettings(redact=True), redact_values=["Springfield"])
    texts = ["Mail me at jo.doe+x@example.co.uk or call +1 (555) 010-9999.", "Key sk-ABCDEFGHIJKLMNOPQRST now",
             "Card 4111 1111 1111 1111, id 123-45-6789.", "No numbers here, just Springfield and prose.",
             "Room 12 at 3pm", ""]
    for text in texts:
        expected = text.replace("Springfield", base.REDACTED)
        for pattern in base._PII_PATTERNS:  # every pattern, unconditionally: what redaction did before
            expected = pattern.sub(base.REDACTED, expected)
        assert memory.redact(text) == expected
    assert re.search(r"\d", memory.redact(texts[2])) is None
