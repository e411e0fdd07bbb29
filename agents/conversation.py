"""One session of dialogue between a simulated user and the chatbot."""

from __future__ import annotations

from datetime import datetime, timedelta

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken
from pydantic import BaseModel

from personasim.agents.directive import ForgetPlan, RevealPlan, UserTurnPlan
from personasim.agents.tokens import count_tokens


class TurnRecord(BaseModel):
    """A message as it happened, with what it was meant to reveal (user turns only)."""

    index: int
    role: str
    text: str
    time: datetime
    tokens: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reveal: RevealPlan | None = None
    forget: ForgetPlan | None = None


async def speak(agent: AssistantAgent, incoming: list[BaseChatMessage]) -> tuple[str, int | None, int | None]:
    response = await agent.on_messages(incoming, CancellationToken())
    message = response.chat_message
    text = message.to_text() if hasattr(message, "to_text") else str(message)
    usage = message.models_usage
    if usage is None:
        return text, None, None
    return text, usage.prompt_tokens, usage.completion_tokens


async def run_session(
    user: AssistantAgent,
    chatbot: AssistantAgent,
    plans: list[UserTurnPlan],
    start: datetime,
    minutes_per_turn: float,
) -> list[TurnRecord]:
    """Alternate user and chatbot messages, one user message per planned turn."""
    records: list[TurnRecord] = []
    step = timedelta(minutes=minutes_per_turn)
    t = start
    incoming: list[BaseChatMessage] = []
    for plan in plans:
        text, p_tok, c_tok = await speak(user, incoming)
        records.append(
            TurnRecord(
                index=len(records), role="user", text=text, time=t, tokens=count_tokens(text),
                prompt_tokens=p_tok, completion_tokens=c_tok, reveal=plan.reveal, forget=plan.forget,
            )
        )
        t += step
        reply, p_tok, c_tok = await speak(chatbot, [TextMessage(content=text, source="user")])
        records.append(
            TurnRecord(
                index=len(records), role="assistant", text=reply, time=t, tokens=count_tokens(reply),
                prompt_tokens=p_tok, completion_tokens=c_tok,
            )
        )
        t += step
        incoming = [TextMessage(content=reply, source="assistant")]
    return records
