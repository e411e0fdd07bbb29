"""The protocol every memory strategy shares: an AutoGen ``Memory`` with snapshots and token cost.

Strategies differ only in what they keep and what they put into the context. The simulation
feeds every strategy the same messages (``add``), closes each session (``end_session``), and
records ``snapshot()``; readers and the live chatbot see ``context_text()``. That makes strategies
comparable on identical histories.
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import datetime
from typing import Any, ClassVar

from autogen_core import CancellationToken
from autogen_core.memory import (
    Memory,
    MemoryContent,
    MemoryMimeType,
    MemoryQueryResult,
    UpdateContextResult,
)
from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import ChatCompletionClient, SystemMessage
from pydantic import BaseModel, ConfigDict, Field

from personasim.agents.tokens import count_tokens


class MemorySettings(BaseModel):
    """Knobs shared by the shipped strategies (each reads the ones it needs)."""
    model_config = ConfigDict(extra="forbid")


    agentic_budget_tokens: int = Field(
        default=2000, ge=16, description="Token budget of the agentic memory text."
    )
    full_history_max_tokens: int = Field(
        default=32000, ge=16, description="Context window of the full-history strategy."
    )


class MemorySnapshot(BaseModel):
    text: str
    items: list[str] = Field(default_factory=list)
    tokens: int


def message_content(role: str, text: str, time: datetime) -> MemoryContent:
    """The one shape in which the simulation hands a chat message to a memory."""
    return MemoryContent(
        content=text,
        mime_type=MemoryMimeType.TEXT,
        metadata={"role": role, "time": time.isoformat(timespec="minutes")},
    )


class PersonaMemory(Memory):
    """Base of all strategies. Subclasses set ``name`` and implement the three abstract methods."""

    name: ClassVar[str]

    def __init__(self, settings: MemorySettings, model_client: ChatCompletionClient | None = None) -> None:
        self.settings = settings
        self.model_client = model_client

    # -- what a strategy decides -----------------------------------------------------------
    @abstractmethod
    async def add(self, content: MemoryContent, cancellation_token: CancellationToken | None = None) -> None:
        """Observe one message of the conversation."""

    @abstractmethod
    async def end_session(self, session_end: datetime) -> None:
        """Consolidate after a session (rewrite, summarise, index ...)."""

    @abstractmethod
    def items(self) -> list[str]:
        """The memory's current entries, in the order they enter the context."""

    # -- shared behaviour -----------------------------------------------------------------
    def context_text(self) -> str:
        return "\n".join(self.items())

    def snapshot(self) -> MemorySnapshot:
        text = self.context_text()
        return MemorySnapshot(text=text, items=self.items(), tokens=count_tokens(text))

    async def update_context(self, model_context: ChatCompletionContext) -> UpdateContextResult:
        text = self.context_text()
        if not text:
            return UpdateContextResult(memories=MemoryQueryResult(results=[]))
        await model_context.add_message(SystemMessage(content=f"What you remember about this user:\n{text}"))
        return UpdateContextResult(
            memories=MemoryQueryResult(results=[MemoryContent(content=text, mime_type=MemoryMimeType.TEXT)])
        )

    async def query(
        self, query: str | MemoryContent, cancellation_token: CancellationToken | None = None, **kwargs: Any
    ) -> MemoryQueryResult:
        return MemoryQueryResult(
            results=[MemoryContent(content=item, mime_type=MemoryMimeType.TEXT) for item in self.items()]
        )

    async def close(self) -> None:
        return None
