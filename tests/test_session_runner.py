"""The per-user session runner: one runner, whoever speaks for the chatbot, the same session."""

from __future__ import annotations

import asyncio

from autogen_core.models import SystemMessage

from personasim.agents.chatbot import build_chatbot, chatbot_messages, chatbot_system_prompt, memory_prompt
from personasim.agents.conversation import speak
from personasim.agents.scripted import ScriptedChatCompletionClient
from personasim.config import build_config
from personasim.sim.session import SessionContext, replay_into_memories
from personasim.sim.snapshots import whole_rows


def _config(**extra):
    return build_config(users=2, sessions=3, seed=3, **extra)


def test_a_policy_that_replies_as_the_chatbot_gets_the_same_session():
    """Step by step (the online env) and with an AutoGen chatbot (a run): the same user turns,
    token usage included, the same times, and the same rows once finished."""
    config = _config(memory="agentic")

    async def both():
        simulated = SessionContext(config).user(1)
        online = SessionContext(config, run_id="online").user(1)
        batches = []
        for k in range(2):
            batch = await simulated.run(k)
            session = online.prepare(k)
            said = await online.opening_turn(session)
            replies = [r.text for r in batch.turns if r.role == "assistant"]
            for i, reply in enumerate(replies):
                last = i == len(replies) - 1
                assert said is not None and session.plan_done == last  # the last reply ends the session
                said = await online.policy_turn(session, reply)
                assert (said is None) == last
            batches.append((batch, await online.finish(session)))
        return batches

    for simulated, online in asyncio.run(both()):
        assert [r.run_id for r in online.sessions] == ["online"]
        user_turns = [(r.model_dump(exclude={"run_id"})) for r in simulated.turns if r.role == "user"]
        assert user_turns == [r.model_dump(exclude={"run_id"}) for r in online.turns if r.role == "user"]
        assert all(r["prompt_tokens"] is not None and r["completion_tokens"] is not None for r in user_turns)
        assert [(r.text, r.time) for r in simulated.turns] == [(r.text, r.time) for r in online.turns]
        for table in ("sessions", "memory_snapshots", "drift_events", "forget_requests"):
            same = [r.model_dump(exclude={"run_id"}) for r in getattr(simulated, table)]
            assert same == [r.model_dump(exclude={"run_id"}) for r in getattr(online, table)], table


class _Recording(ScriptedChatCompletionClient):
    def __init__(self, catalog):
        super().__init__(catalog)
        self.seen = []

    async def create(self, messages, **kwargs):
        self.seen.append(list(messages))
        return await super().create(messages, **kwargs)


def test_the_chatbot_and_a_policy_are_told_the_same_memory():
    config = _config(memory="agentic")

    async def scene():
        user = SessionContext(config).user(0)
        await user.run(0)  # the memory now holds something
        client = _Recording(user.context.catalog)
        question = "Any idea for dinner tonight?"
        from autogen_agentchat.messages import TextMessage

        await speak(build_chatbot(client, user.live_memory), [TextMessage(content=question, source="user")])
        return user, client.seen[-1], question

    user, seen, question = asyncio.run(scene())
    remembered = memory_prompt(user.live_memory.context_text(question))
    assert remembered.startswith("What you remember about this user:\n")
    systems = [m.content for m in seen if isinstance(m, SystemMessage)]
    assert systems == [chatbot_system_prompt(), remembered]
    observation = chatbot_messages(user.live_memory, [("user", question)])
    assert observation[0] == {"role": "system", "content": f"{chatbot_system_prompt()}\n\n{remembered}"}
    assert observation[1:] == [{"role": "user", "content": question}]
    assert chatbot_messages(None, [("user", question)])[0]["content"] == chatbot_system_prompt()


def test_a_stored_history_replayed_into_memories_gives_the_runs_snapshots():
    """Loaders feed memories as the runner does: replaying a run's own turns rebuilds its snapshots."""
    config = _config(memory="none,sliding_window,fact_list")

    async def scene():
        user = SessionContext(config).user(1)
        batches = [await user.run(k) for k in range(3)]
        sessions = [s for b in batches for s in b.sessions]
        turns = [t for b in batches for t in b.turns]
        secrets = {user.persona.id: list(user.persona.sensitive_facts.values().values())}
        replayed = await replay_into_memories(
            config.run_id, sessions, turns, secrets, config.memory.strategies, config.memory.settings)
        return [s for b in batches for s in b.memory_snapshots], replayed

    stored, replayed = asyncio.run(scene())
    assert any(r.carried is not None for r in stored), "a raw history's later snapshots continue the first"
    recorded = whole_rows(stored)
    assert len(recorded) == 9
    key = lambda r: r.snapshot_id  # noqa: E731
    assert sorted(recorded, key=key) == sorted(replayed, key=key)


def test_a_failed_session_is_recorded_and_the_next_one_goes_on():
    config = _config()

    async def scene():
        user = SessionContext(config, run_id="r").user(0)
        failed = await user.run(0, failed_before=True)
        after = await user.run(1)
        return user, failed, after

    user, failed, after = asyncio.run(scene())
    (row,) = failed.sessions
    assert row.status == "failed" and row.n_turns == 0 and row.error and row.run_id == "r"
    assert not failed.turns and user.last_end is not None
    assert after.sessions[0].status == "completed" and after.turns
