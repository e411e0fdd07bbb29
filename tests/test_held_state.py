"""What a user holds between sessions (issue 17): the persona and raw histories packed, nothing lost.

The store digest test is the end-to-end check that packing changes no output; these check the
packing itself: the state after a round is the packed form, and unpacking gives back exactly
what was there."""

from __future__ import annotations

import asyncio
from datetime import datetime

from personasim.agents.memory.base import MemorySettings
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
