"""Every memory strategy: what it keeps, what it forgets, what it redacts, what reaches the context."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from personasim.agents import ScriptedChatCompletionClient
from personasim.agents.memory import MemorySettings, available_memories, create_memory, memory_class, message_content
from personasim.agents.memory.base import REDACTED
from personasim.agents.memory.strategies import FactList, TemporalMemory
from personasim.agents.tokens import count_tokens

T0 = datetime(2025, 3, 1, 9)
ALL = ["none", "full_history", "full_history_forgetting", "sliding_window", "rag", "fact_list", "agentic", "temporal"]
#: keep the forget request and what it is about: honouring it is the reader's job (PersonaMem-v2's long context)
RAW = {"none", "full_history"}


def _memory(name: str, **settings):
    return create_memory(name, MemorySettings(**settings), ScriptedChatCompletionClient(),
                         redact_values=["77 Elm Street, Springfield"])


def _feed(memory, sessions: list[list[tuple[str, str]]]):
    async def run():
        for k, session in enumerate(sessions):
            t = T0 + timedelta(days=7 * k)
            for role, text in session:
                await memory.add(message_content(role, text, t))
            await memory.end_session(t + timedelta(minutes=10))

    asyncio.run(run())
    return memory


CAT = ("user", "My cat sleeps on my keyboard every morning, so I work from the sofa.")
SPICY = ("user", "I can handle any amount of chilli; the hotter the curry the happier I am.")
REPLY = ("assistant", "Thanks, noted.")


def test_all_seven_strategies_are_registered():
    assert set(ALL) <= set(available_memories())


@pytest.mark.parametrize("name", [n for n in ALL if n != "none"])
def test_every_strategy_remembers_and_reports_tokens(name):
    memory = _feed(_memory(name), [[CAT, REPLY], [SPICY, REPLY]])
    snap = memory.snapshot()
    assert "chilli" in snap.text
    assert snap.tokens == count_tokens(snap.text) > 0


@pytest.mark.parametrize("name", [n for n in ALL if n not in RAW])
def test_every_strategy_honours_forgetting(name):
    forget = ("user", "Please forget my preference about spicy food.")
    memory = _feed(_memory(name), [[CAT, REPLY, SPICY, REPLY], [forget, REPLY]])
    text = memory.snapshot().text
    assert "chilli" not in text, f"{name} still holds what the user asked to forget"
    assert "Please forget" not in text
    assert "cat" in text.lower(), f"{name} forgot more than it was asked to"


def test_full_history_is_the_raw_history_and_leaves_forgetting_to_the_reader():
    """PersonaMem-v2's long-context baseline: every message stays, the forget request included;
    full_history_forgetting is the same history with the request acted on."""
    forget = ("user", "Please forget my preference about spicy food.")
    sessions = [[CAT, REPLY, SPICY, REPLY], [forget, REPLY]]
    raw = _feed(_memory("full_history"), sessions).snapshot()
    assert "chilli" in raw.text and "Please forget my preference about spicy food." in raw.text
    assert len(raw.items) == 6
    deleting = _feed(_memory("full_history_forgetting"), sessions).snapshot()
    assert "chilli" not in deleting.text and "Please forget" not in deleting.text
    assert deleting.items == [line for line in raw.items if "chilli" not in line and "Please forget" not in line]


@pytest.mark.parametrize("name", [n for n in ALL if n != "none"])
def test_every_strategy_redacts_sensitive_values_unless_told_not_to(name):
    secret = ("user", "I live at 77 Elm Street, Springfield and my card is 4111 1111 1111 1111, "
                      "email jo.doe@example.com.")
    redacted = _feed(_memory(name), [[CAT, secret, REPLY]]).snapshot().text
    assert "4111" not in redacted and "Elm Street" not in redacted and "example.com" not in redacted
    assert REDACTED in redacted
    raw = _feed(_memory(name, redact=False), [[CAT, secret, REPLY]]).snapshot().text
    assert "4111 1111 1111 1111" in raw


def test_sliding_window_keeps_the_last_messages():
    memory = _feed(_memory("sliding_window", window_messages=3),
                   [[("user", f"I went for walk number {i} today.")] for i in range(6)])
    items = memory.items()
    assert len(items) == 3 and "number 5" in items[-1] and "number 2" not in " ".join(items)


def test_rag_retrieves_by_similarity_to_the_query():
    memory = _feed(_memory("rag", rag_top_k=1), [[CAT, SPICY, ("user", "My car needs new tyres soon.")]])
    assert len(memory.snapshot().items) == 3
    context = memory.context_for("Which curry should I cook tonight?")
    assert len(context) == 1 and "chilli" in context[0]
    from personasim.agents.embedding import default_embedder

    selected = memory_class("rag").select_context(memory.snapshot().items, "What about my pet?",
                                                  default_embedder(), MemorySettings(rag_top_k=1))
    assert selected == [i for i in memory.snapshot().items if "cat" in i]


def test_fact_list_adds_updates_and_skips_duplicates():
    memory = _feed(_memory("fact_list"), [
        [("user", "I love Thai food more than anything.")],
        [("user", "I love Thai food more than anything.")],
        [("user", "I can't stand Thai food anymore.")],
        [CAT],
    ])
    assert isinstance(memory, FactList)
    assert memory.operations["ADD"] == 2 and memory.operations["NOOP"] == 1 and memory.operations["UPDATE"] == 1
    text = memory.snapshot().text
    assert "can't stand Thai" in text and "love Thai" not in text


def test_temporal_memory_supersedes_and_keeps_history():
    memory = _feed(_memory("temporal"), [
        [("user", "I love Thai food more than anything.")],
        [("user", "I can't stand Thai food anymore.")],
    ])
    assert isinstance(memory, TemporalMemory)
    assert [i for i in memory.items() if "Thai" in i] == ["[since 2025-03-08] I can't stand Thai food anymore."]
    assert any("2025-03-01 .. 2025-03-08" in h for h in memory.history())


def test_memory_is_causal_and_question_blind():
    """A memory's state depends only on the conversation: asking it anything changes nothing."""
    for name in ALL:
        memory = _feed(_memory(name), [[CAT, SPICY, REPLY]])
        before = memory.snapshot()
        memory.context_for("Which curry should I cook tonight?")
        asyncio.run(memory.query("Plan a holiday for me"))
        assert memory.snapshot() == before
