"""The shipped memory strategies: none, full history, and PersonaMem-v2's agentic memory."""

from __future__ import annotations

from datetime import datetime

from autogen_core import CancellationToken
from autogen_core.memory import MemoryContent
from autogen_core.models import SystemMessage, UserMessage

from personasim.agents.directive import (
    MEMORY_HEADER,
    TRANSCRIPT_HEADER,
    MemoryRewriteDirective,
    render_directive,
)
from personasim.agents.memory.base import PersonaMemory
from personasim.agents.memory.registry import register_memory
from personasim.agents.tokens import truncate_to_tokens


@register_memory
class NoMemory(PersonaMemory):
    """Remembers nothing: the floor every other strategy is read against."""

    name = "none"

    async def add(self, content: MemoryContent, cancellation_token: CancellationToken | None = None) -> None:
        return None

    async def end_session(self, session_end: datetime) -> None:
        return None

    def items(self) -> list[str]:
        return []

    async def clear(self) -> None:
        return None


@register_memory
class FullHistory(PersonaMemory):
    """The whole past conversation, cut from the oldest end to the context window (long context)."""

    name = "full_history"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._lines: list[str] = []

    async def add(self, content: MemoryContent, cancellation_token: CancellationToken | None = None) -> None:
        meta = content.metadata or {}
        self._lines.append(f"[{meta.get('time', '')}] {meta.get('role', 'user')}: {content.content}")

    async def end_session(self, session_end: datetime) -> None:
        self._lines = truncate_to_tokens(self._lines, self.settings.full_history_max_tokens)

    def items(self) -> list[str]:
        return truncate_to_tokens(self._lines, self.settings.full_history_max_tokens)

    async def clear(self) -> None:
        self._lines = []


@register_memory
class AgenticMemory(PersonaMemory):
    """One human-readable memory per user, rewritten by the model after each session.

    As in PersonaMem-v2, the memory is bounded (default 2,000 tokens) and built only from the
    conversation: the writer sees the old memory and the new session, never questions or truth.
    """

    name = "agentic"
    instructions = (
        "You maintain a concise memory of one user for a personal assistant. Rewrite the memory so it "
        "keeps everything that reveals the user's preferences, habits and circumstances, newest last, "
        "each line starting with the date in brackets. Drop requests and small talk. Stay within "
        "{budget} tokens; when over budget, drop the oldest lines first."
    )

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        if self.model_client is None:
            raise ValueError("the agentic memory needs a model client to rewrite its memory")
        self._text = ""
        self._pending: list[str] = []

    async def add(self, content: MemoryContent, cancellation_token: CancellationToken | None = None) -> None:
        role = (content.metadata or {}).get("role", "user")
        self._pending.append(f"{role}: {content.content}")

    async def end_session(self, session_end: datetime) -> None:
        if not self._pending:
            return
        budget = self.settings.agentic_budget_tokens
        directive = MemoryRewriteDirective(budget_tokens=budget, session_date=session_end.date().isoformat())
        system = self.instructions.format(budget=budget) + "\n\n" + render_directive(directive)
        request = f"{MEMORY_HEADER}\n{self._text}\n\n{TRANSCRIPT_HEADER}\n" + "\n".join(self._pending)
        assert self.model_client is not None
        result = await self.model_client.create(
            [SystemMessage(content=system), UserMessage(content=request, source="user")]
        )
        text = result.content if isinstance(result.content, str) else ""
        lines = [line for line in text.splitlines() if line.strip()]
        self._text = "\n".join(truncate_to_tokens(lines, budget))
        self._pending = []

    def items(self) -> list[str]:
        return [line for line in self._text.splitlines() if line.strip()]

    async def clear(self) -> None:
        self._text = ""
        self._pending = []
