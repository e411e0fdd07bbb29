"""An LLM reader: any backend answers the question from a memory's context, with a letter."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from autogen_core.models import ChatCompletionClient, SystemMessage, UserMessage

from personasim.analysis.answer_parsing import letters, parse_choice
from personasim.analysis.reader import ReaderAnswer

PROMPT = (
    "You are a personal assistant answering a user. Below is what you remember about them, then "
    "their request and candidate replies. Pick the reply that best fits this user now; what they "
    "asked you to forget, do not use. Answer with the letter only, as \\boxed{{x}}.\n\n"
    "What you remember:\n{memory}\n\nUser request: {query}\n\n{options}"
)


class LLMReader:
    """Answers through a ``ChatCompletionClient``; unparseable answers count as wrong (index -1).

    The prompt asks the model to honour forget requests: a raw history (``full_history``) keeps
    them as said, and PersonaMem-v2's long-context baseline leaves honouring them to the model."""

    name = "llm"

    def __init__(self, client: ChatCompletionClient, model_name: str | None = None) -> None:
        self.client = client
        self.model_name = model_name

    def prompt(self, context_items: Sequence[str], query: str, options: Sequence[str]) -> str:
        listed = "\n".join(f"({letter}) {text}" for letter, text in zip(letters(len(options)), options, strict=True))
        memory = "\n".join(context_items) or "(nothing)"
        return PROMPT.format(memory=memory, query=query, options=listed)

    async def answer_async(self, context_items: Sequence[str], query: str, options: Sequence[str]) -> ReaderAnswer:
        result = await self.client.create([
            SystemMessage(content="Answer multiple-choice questions with a single letter."),
            UserMessage(content=self.prompt(context_items, query, options), source="user"),
        ])
        text = result.content if isinstance(result.content, str) else ""
        choice = parse_choice(text, len(options))
        scores = [1.0 if i == choice else 0.0 for i in range(len(options))]
        return ReaderAnswer(chosen_index=-1 if choice is None else choice, scores=scores, raw_output=text)

    def answer(self, context_items: Sequence[str], query: str, options: Sequence[str]) -> ReaderAnswer:
        return asyncio.run(self.answer_async(context_items, query, options))
