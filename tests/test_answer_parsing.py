from __future__ import annotations

import asyncio

import pytest

from personasim.analysis.answer_parsing import parse_choice
from personasim.analysis.llm_reader import LLMReader


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{b}", 1), (r"The answer is \boxed{ C }.", 2), (r"\boxed{(a)}", 0),
        ("(b)", 1), ("b", 1), ("B", 1), ("d)", 3), ("c. because it fits", 2),
        ("Final Answer: a", 0), ("final answer - (d)", 3),
    ],
)
def test_accepts_the_usual_answer_forms(text, expected):
    assert parse_choice(text, 4) == expected


@pytest.mark.parametrize(
    "text",
    ["", "I think the second one", r"\boxed{e}", "z", r"\boxed{a} or \boxed{b}", "banana", "Final Answer: maybe",
     "(a) and (b)"],
)
def test_rejects_garbage_and_ambiguity(text):
    assert parse_choice(text, 4) is None


def test_llm_reader_scores_unparseable_answers_as_wrong():
    from autogen_ext.models.replay import ReplayChatCompletionClient

    good = ReplayChatCompletionClient([r"\boxed{c}"])
    answer = asyncio.run(LLMReader(good).answer_async(["[2025-01-01] I love tea."], "Drink?", ["x", "y", "z"]))
    assert answer.chosen_index == 2 and answer.scores == [0.0, 0.0, 1.0]
    prompt = good.create_calls[0]["messages"][-1].content
    assert "I love tea." in prompt and "(c) z" in prompt and "Drink?" in prompt
    assert "as \\boxed{x}.\n" in prompt
    bad = asyncio.run(LLMReader(ReplayChatCompletionClient(["no idea"])).answer_async([], "Drink?", ["x", "y"]))
    assert bad.chosen_index == -1 and bad.scores == [0.0, 0.0]
