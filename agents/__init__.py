"""Agents: the simulated user, the chatbot, model backends and memory strategies."""

from personasim.agents.backends import BackendConfig, create_client
from personasim.agents.chatbot import build_chatbot
from personasim.agents.conversation import TurnRecord, run_session
from personasim.agents.scripted import ScriptedChatCompletionClient
from personasim.agents.user import (
    DialogueConfig,
    SessionPlan,
    build_user_agent,
    plan_session,
    user_system_prompt,
)

__all__ = [
    "BackendConfig",
    "DialogueConfig",
    "ScriptedChatCompletionClient",
    "SessionPlan",
    "TurnRecord",
    "build_chatbot",
    "build_user_agent",
    "create_client",
    "plan_session",
    "run_session",
    "user_system_prompt",
]
