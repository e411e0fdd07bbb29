"""The chatbot under study: an AutoGen assistant whose only knowledge of the user is its memory.

What the chatbot is told (its instructions and "what you remember about this user") is written
here and nowhere else: the AutoGen chatbot of a simulated run and the observation the online
environment gives a policy both come from these functions, so a policy trained online sees the
prompt a simulated chatbot sees.
"""

from __future__ import annotations

from collections.abc import Sequence

from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import ChatCompletionClient

from personasim.agents.directive import ChatbotReplyDirective, render_directive
from personasim.agents.memory.base import MEMORY_HEADER, PersonaMemory, memory_prompt

__all__ = [
    "CHATBOT_SYSTEM_PROMPT", "MEMORY_HEADER", "build_chatbot", "chatbot_messages", "chatbot_system_prompt",
    "memory_prompt",
]

CHATBOT_SYSTEM_PROMPT = (
    "You are a helpful personal assistant. Help with the user's task substantively: a draft, a plan, options "
    "with reasons or an explanation, as the task needs. Use what you remember about the user to personalise "
    "your answers, without repeating private details back to them."
)
DEFAULT_REPLY_TOKENS = (80, 400)


def chatbot_system_prompt(reply_tokens: tuple[int, int] = DEFAULT_REPLY_TOKENS) -> str:
    """The instructions, and the reply-length directive that the scripted backend reads."""
    low, high = reply_tokens
    return CHATBOT_SYSTEM_PROMPT + "\n\n" + render_directive(ChatbotReplyDirective(min_tokens=low, max_tokens=high))


def chatbot_messages(
    memory: PersonaMemory | None, turns: Sequence[tuple[str, str]],
    reply_tokens: tuple[int, int] = DEFAULT_REPLY_TOKENS,
) -> list[dict[str, str]]:
    """What a chatbot policy sees: one system message (instructions, then the memory selected for
    the latest user message), then the session so far as (role, text) turns."""
    query = next((text for role, text in reversed(turns) if role == "user"), None)
    remembered = memory_prompt(memory.context_text(query)) if memory is not None else ""
    system = chatbot_system_prompt(reply_tokens) + (f"\n\n{remembered}" if remembered else "")
    return [{"role": "system", "content": system}] + [{"role": role, "content": text} for role, text in turns]


def build_chatbot(
    client: ChatCompletionClient, memory: PersonaMemory | None, reply_tokens: tuple[int, int] = DEFAULT_REPLY_TOKENS
) -> AssistantAgent:
    return AssistantAgent(
        "assistant",
        model_client=client,
        system_message=chatbot_system_prompt(reply_tokens),
        memory=[memory] if memory is not None else None,
        description="A personal assistant with long-term memory.",
    )
