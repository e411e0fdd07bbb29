from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from autogen_agentchat.agents import AssistantAgent

from personasim.agents import (
    DialogueConfig,
    ScriptedChatCompletionClient,
    build_chatbot,
    build_user_agent,
    plan_session,
    run_session,
    user_system_prompt,
)
from personasim.agents.memory import MemorySettings, available_memories, create_memory, message_content
from personasim.agents.tokens import count_tokens
from personasim.personas import PersonaGenerator, PopulationConfig, load_topic_catalog, rng_for
from personasim.worlds import load_scenario_catalog

START = datetime(2025, 2, 1, 10)


def _session(seed: int = 1, implicit_share: float = 0.8, index: int = 0):
    catalog = load_topic_catalog()
    persona = PersonaGenerator(catalog, PopulationConfig(), seed).generate(index, START)
    plan = plan_session(persona, START, {}, load_scenario_catalog(), catalog,
                        DialogueConfig(implicit_share=implicit_share), rng_for(seed, "p", index), seed)
    client = ScriptedChatCompletionClient(catalog)
    memory = create_memory("agentic", MemorySettings(), client)
    user = build_user_agent(client, user_system_prompt(persona, plan, catalog))
    bot = build_chatbot(client, memory)
    records = asyncio.run(run_session(user, bot, plan.directive.turns, START, 1.0))
    return persona, plan, records, user, bot


def test_session_runs_real_autogen_agents_and_is_deterministic():
    _, plan, records, user, bot = _session()
    assert isinstance(user, AssistantAgent) and isinstance(bot, AssistantAgent)
    assert [r.role for r in records] == ["user", "assistant"] * len(plan.directive.turns)
    assert plan.directive.intent in records[0].text
    _, _, again, _, _ = _session()
    assert [r.text for r in records] == [r.text for r in again]
    assert all(r.prompt_tokens and r.completion_tokens for r in records)


def test_user_turns_follow_the_revelation_plan():
    catalog = load_topic_catalog()
    for index in range(8):
        _, plan, records, _, _ = _session(index=index)
        user_turns = [r for r in records if r.role == "user"]
        for turn, step in zip(user_turns, plan.directive.turns, strict=True):
            assert turn.reveal == step.reveal
            if step.reveal is None:
                continue
            r = step.reveal
            if r.mode == "explicit":
                assert any(s in turn.text for s in catalog.statements(r.topic, r.option, r.polarity))
            else:
                assert any(h.text in turn.text for h in catalog.hints(r.topic, r.option, r.polarity, r.hint_kind))


def test_forget_requests_are_planned_and_spoken():
    catalog = load_topic_catalog()
    persona = PersonaGenerator(catalog, PopulationConfig(), 1).generate(0, START)
    revealed = {p.id: 1 for p in persona.preferences}
    plan = plan_session(persona, START, revealed, load_scenario_catalog(), catalog,
                        DialogueConfig(forget_probability=1.0), rng_for(1, "f"), 1)
    last = plan.directive.turns[-1]
    assert last.forget is not None and last.reveal is None
    client = ScriptedChatCompletionClient(catalog)
    user = build_user_agent(client, user_system_prompt(persona, plan, catalog))
    bot = build_chatbot(client, None)
    records = asyncio.run(run_session(user, bot, plan.directive.turns, START, 1.0))
    spoken = [r for r in records if r.role == "user"][-1]
    assert spoken.forget == last.forget
    assert spoken.text.startswith("Please forget") and last.forget.topic_name in spoken.text


def test_mostly_implicit_reveals():
    implicit = explicit = 0
    for index in range(30):
        _, plan, _, _, _ = _session(index=index, seed=2)
        for t in plan.directive.turns:
            if t.reveal:
                implicit += t.reveal.mode == "implicit"
                explicit += t.reveal.mode == "explicit"
    assert explicit > 0
    assert implicit > 2 * explicit


def test_agentic_memory_is_bounded_and_rewritten_after_each_session():
    client = ScriptedChatCompletionClient()
    memory = create_memory("agentic", MemorySettings(agentic_budget_tokens=60), client)

    async def feed():
        for day in range(1, 8):
            t = datetime(2025, 3, day, 9)
            await memory.add(message_content("user", f"I walked my dog number {day} along the river today.", t))
            await memory.add(message_content("assistant", "Nice!", t))
            await memory.end_session(t)

    asyncio.run(feed())
    snap = memory.snapshot()
    assert 0 < snap.tokens <= 60
    assert "number 7" in snap.text and "number 1 " not in snap.text
    assert "Nice!" not in snap.text
    assert all(line.startswith("[2025-03-") for line in snap.items)


def test_full_history_and_none():
    settings = MemorySettings(full_history_max_tokens=30)
    full = create_memory("full_history", settings)
    none = create_memory("none", settings)

    async def feed():
        for i in range(10):
            for m in (full, none):
                await m.add(message_content("user", f"message {i} with some words", datetime(2025, 1, 1)))
        await full.end_session(datetime(2025, 1, 1))

    asyncio.run(feed())
    assert none.snapshot().text == "" and none.snapshot().tokens == 0
    snap = full.snapshot()
    assert snap.tokens <= 30 and "message 9" in snap.text and "message 0" not in snap.text
    assert snap.tokens == count_tokens(snap.text)


def test_memory_registry_rejects_unknown_names():
    assert {"none", "full_history", "agentic"} <= set(available_memories())
    with pytest.raises(ValueError, match="unknown memory strategy 'telepathy'"):
        create_memory("telepathy", MemorySettings())


def test_rule_based_note_taking_keeps_personal_statements_only():
    from personasim.agents.memory.rules import personal_sentences

    text = ("My knees ache after every run, so I swim now. Could you plan my week? "
            "Thanks, that's really helpful. I'll think it over. The weather is nice.")
    assert personal_sentences(text) == ["My knees ache after every run, so I swim now."]


def test_scripted_chatbot_recommends_and_acceptance_is_detected():
    from autogen_core.models import SystemMessage, UserMessage

    from personasim.agents.recommendations import accepts, mentioned_options, recommended_options

    catalog = load_topic_catalog()
    client = ScriptedChatCompletionClient(catalog)
    statement = catalog.statements("favorite_cuisine", "thai", "likes")[1]
    assert ("favorite_cuisine", "thai") in mentioned_options(statement, catalog)
    recommended = []
    for i in range(12):
        reply = asyncio.run(client.create([SystemMessage(content="sys"),
                                           UserMessage(content=f"{statement} Idea {i}?", source="user")])).content
        recommended += recommended_options(reply, catalog)
    assert recommended, "the scripted chatbot sometimes suggests a neighbouring option"
    assert all(topic == "favorite_cuisine" and option != "thai" for topic, option in recommended)
    assert accepts("Great, I'll give that a try.") and not accepts("Thanks! I'll think it over.")


def test_leakage_check_flags_implicit_turns_that_state_the_preference():
    from personasim.agents.conversation import TurnRecord
    from personasim.agents.directive import RevealPlan
    from personasim.config import build_config
    from personasim.sim.session import turn_row
    from personasim.sim.shard import UserShard

    shard = UserShard(build_config(users=1, sessions=1, memory="none"), [0])
    catalog = load_topic_catalog()
    persona = shard.users[0].persona
    pref = next(p for p in persona.preferences if p.polarity.value == "likes")
    reveal = RevealPlan(preference_id=pref.id, topic=pref.topic, option=pref.option, polarity="likes",
                        mode="implicit", hint_kind="behaviour")
    statement = catalog.statements(pref.topic, pref.option, "likes")[0]
    hint = catalog.hints(pref.topic, pref.option, "likes", "behaviour")[0].text
    stated = TurnRecord(index=0, role="user", text=statement + " Any ideas?", time=START, tokens=5, reveal=reveal)
    hinted = TurnRecord(index=2, role="user", text=hint, time=START, tokens=5, reveal=reveal)
    rows = [turn_row(shard.run_id, persona.id, 0, r) for r in (stated, hinted)]
    shard._leakage(rows)  # one batched call per round
    assert rows[0].leak_similarity > rows[1].leak_similarity
    assert rows[0].leaked is True and rows[1].leaked is False
