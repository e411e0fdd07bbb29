"""Machine-readable instructions embedded in prompts.

An LLM reads the natural-language part of a prompt; the scripted backend reads this block. Both
therefore follow the same plan, which is what lets the offline default stand in for a real model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated, Literal

from autogen_core.models import LLMMessage, SystemMessage
from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, TypeAdapter, model_serializer

from personasim.personas.models import SELF, Person

RevealMode = Literal["explicit", "implicit"]

_BLOCK = re.compile(r"<personasim-directive>(.*?)</personasim-directive>", re.DOTALL)


class RevealPlan(BaseModel):
    """Which preference one user turn reveals, and how."""

    preference_id: str
    topic: str
    option: str
    polarity: Literal["likes", "dislikes"] = "likes"
    mode: RevealMode
    hint_kind: str | None = Field(default=None, description="For implicit reveals: behaviour, anecdote ...")
    owner: str = Field(default=SELF, description="Whose preference: the user's own, or `<relation>:<name>`.")
    person: Person | None = Field(default=None, description="The person it belongs to, when not the user.")

    @model_serializer(mode="wrap")
    def _omit_self(self, handler: SerializerFunctionWrapHandler) -> dict:
        """The user's own reveals serialise exactly as before people existed, so the prompts that
        embed them (and their token counts, and the backends' caches) do not change."""
        data = handler(self)
        if self.owner == SELF and self.person is None:
            data.pop("owner", None)
            data.pop("person", None)
        return data


class ForgetPlan(BaseModel):
    """The user asks the assistant to forget a preference it revealed earlier."""

    preference_id: str
    topic: str
    topic_name: str


class SensitiveMention(BaseModel):
    """A fake sensitive value the user drops in passing (to study redaction and leakage)."""

    kind: str
    value: str


class UserTurnPlan(BaseModel):
    reveal: RevealPlan | None = None
    forget: ForgetPlan | None = None
    mention: SensitiveMention | None = None


class UserTurnDirective(BaseModel):
    task: Literal["user_turn"] = "user_turn"
    seed: int
    scenario_id: str
    intent: str
    turns: list[UserTurnPlan]
    likes: list[str] = Field(
        default_factory=list,
        description="`topic/option` the user likes now on the scenario's topics: how the user reacts when the "
        "chatbot tailors its answer to one (a stale memory gets a visibly lukewarm reaction).",
    )


class ChatbotReplyDirective(BaseModel):
    """How long the scripted chatbot's replies are (an LLM chatbot is only asked to be substantive)."""

    task: Literal["chatbot_reply"] = "chatbot_reply"
    min_tokens: int = 80
    max_tokens: int = 400


class MemoryRewriteDirective(BaseModel):
    task: Literal["memory_rewrite"] = "memory_rewrite"
    budget_tokens: int
    session_date: str


class ProbeDirective(BaseModel):
    """An out-of-conversation interview question to the simulated user (consistency probe)."""

    task: Literal["probe"] = "probe"
    topic: str
    topic_name: str
    held_statements: list[str] = Field(description="What the persona truly holds on the topic now.")


class FactExtractionDirective(BaseModel):
    """Extract the user's personal facts from one message (fact_list and temporal memories)."""

    task: Literal["fact_extraction"] = "fact_extraction"


AnyDirective = (
    UserTurnDirective | MemoryRewriteDirective | ProbeDirective | FactExtractionDirective | ChatbotReplyDirective
)
Directive = Annotated[AnyDirective, Field(discriminator="task")]
_ADAPTER: TypeAdapter[AnyDirective] = TypeAdapter(Directive)


def render_directive(directive: AnyDirective) -> str:
    return f"<personasim-directive>{directive.model_dump_json()}</personasim-directive>"


def find_directive(messages: Sequence[LLMMessage]) -> AnyDirective | None:
    """The directive of the first system message that carries one, if any."""
    for message in messages:
        if isinstance(message, SystemMessage):
            match = _BLOCK.search(message.content)
            if match:
                return _parse_directive(match.group(1))
    return None


@lru_cache(maxsize=1024)
def _parse_directive(payload: str) -> AnyDirective:
    """Parsed once per distinct block: a session's system prompt, and so its directive, is the same
    on every turn, and validating it again on each of them was a tenth of the scripted backend's
    time. Directives are read, never changed, so sharing one object is safe."""
    return _ADAPTER.validate_json(payload)


MEMORY_HEADER = "CURRENT MEMORY:"
TRANSCRIPT_HEADER = "NEW CONVERSATION:"
