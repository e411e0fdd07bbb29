"""The chatbot under study: an AutoGen assistant whose only knowledge of the user is its memory."""

from __future__ import annotations

from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import ChatCompletionClient

from personasim.agents.memory.base import PersonaMemory

CHATBOT_SYSTEM_PROMPT = (
    "You are a helpful personal assistant. Use what you remember about the user to personalise "
    "your answers, without repeating private details back to them."
)


def build_chatbot(client: ChatCompletionClient, memory: PersonaMemory | None) -> AssistantAgent:
    return AssistantAgent(
        "assistant",
        model_client=client,
        system_message=CHATBOT_SYSTEM_PROMPT,
        memory=[memory] if memory is not None else None,
        description="A personal assistant with long-term memory.",
    )
