"""One session of dialogue between a simulated user and the chatbot."""

from __future__ import annotations

from collections.abc import Sequence
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
    filler: bool = False


async def speak(agent: AssistantAgent, incoming: list[BaseChatMessage]) -> tuple[str, int | None, int | None]:
    response = await agent.on_messages(incoming, CancellationToken())
    message = response.chat_message
    text = message.to_text() if hasattr(message, "to_text") else str(message)
    usage = message.models_usage
    if usage is None:
        return text, None, None
    return text, usage.prompt_tokens, usage.completion_tokens


class Conversation:
    """A session's dialogue as it unfolds, one message at a time, whoever writes the chatbot's side.

    Why one class: a simulated run answers the user with an AutoGen chatbot (``run_session``) and
    the online environment with a policy's replies, one step at a time. Both record the user's
    turns here (plan copied, token usage kept) and advance the same clock, so a session's turns
    read the same whichever side spoke for the chatbot."""

    def __init__(self, user: AssistantAgent, plans: list[UserTurnPlan], start: datetime,
                 minutes_per_turn: float) -> None:
        self.user = user
        self.plans = plans
        self.time = start  # when the next message is written
        self.step = timedelta(minutes=minutes_per_turn)
        self.records: list[TurnRecord] = []
        self.user_turns = 0

    @property
    def plan_done(self) -> bool:
        """Every planned user turn has been spoken: the user has nothing left to say."""
        return self.user_turns >= len(self.plans)

    def insert_filler(self, exchanges: Sequence[tuple[str, str]]) -> None:
        """Unrelated (user, assistant) exchanges written beforehand (PersonaMem-v2's padding): they
        lengthen the history every memory sees, but neither agent of the session speaks them."""
        for user_text, assistant_text in exchanges:
            for role, text in (("user", user_text), ("assistant", assistant_text)):
                self.records.append(TurnRecord(
                    index=len(self.records), role=role, text=text, time=self.time, tokens=count_tokens(text),
                    filler=True,
                ))
                self.time += self.step

    async def user_speaks(self, reply: str | None = None, prefix: str | None = None) -> TurnRecord:
        """The user's next planned turn, answering the chatbot's ``reply`` (None: it opens the session).

        ``prefix`` goes before the user's text in the record only (the online environment's scripted
        reaction to a recommendation); the user agent does not see it."""
        incoming: list[BaseChatMessage] = [] if reply is None else [TextMessage(content=reply, source="assistant")]
        text, prompt_tokens, completion_tokens = await speak(self.user, incoming)
        if prefix:
            text = f"{prefix} {text}"
        plan = self.plans[self.user_turns]
        record = TurnRecord(
            index=len(self.records), role="user", text=text, time=self.time, tokens=count_tokens(text),
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, reveal=plan.reveal, forget=plan.forget,
        )
        self.records.append(record)
        self.user_turns += 1
        self.time += self.step
        return record

    def chatbot_replied(self, text: str, prompt_tokens: int | None = None,
                        completion_tokens: int | None = None) -> TurnRecord:
        """Record the chatbot's reply (an AutoGen agent's or a policy's) to the user's last turn."""
        record = TurnRecord(
            index=len(self.records), role="assistant", text=text, time=self.time, tokens=count_tokens(text),
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        )
        self.records.append(record)
        self.time += self.step
        return record

    async def with_chatbot(self, chatbot: AssistantAgent) -> list[TurnRecord]:
        """Alternate user and chatbot messages until every planned user turn has had its answer."""
        reply: str | None = None
        while not self.plan_done:
            said = await self.user_speaks(reply)
            reply, prompt_tokens, completion_tokens = await speak(
                chatbot, [TextMessage(content=said.text, source="user")])
            self.chatbot_replied(reply, prompt_tokens, completion_tokens)
        return self.records


async def run_session(
    user: AssistantAgent,
    chatbot: AssistantAgent,
    plans: list[UserTurnPlan],
    start: datetime,
    minutes_per_turn: float,
) -> list[TurnRecord]:
    """Alternate user and chatbot messages, one user message per planned turn."""
    return await Conversation(user, plans, start, minutes_per_turn).with_chatbot(chatbot)
