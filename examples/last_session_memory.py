"""A memory strategy in one file: remembers only the last session's user messages.

Use it with ``memory.plugins = ["last_session_memory"]`` in a config file (the module must be
importable where the simulation runs: installed, or on PYTHONPATH), then
``--memory none,last_session``.
"""

from __future__ import annotations

from datetime import datetime

from personasim.agents.memory import PersonaMemory, register_memory


@register_memory
class LastSessionMemory(PersonaMemory):
    name = "last_session"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._current: list[str] = []
        self._kept: list[str] = []

    async def remember(self, role: str, text: str, time: str) -> None:
        if role == "user":
            self._current.append(text)

    async def end_session(self, session_end: datetime) -> None:
        self._kept, self._current = self._current, []

    def items(self) -> list[str]:
        return list(self._kept)

    def drop(self, indices: set[int]) -> None:
        self._kept = [item for i, item in enumerate(self._kept) if i not in indices]

    async def clear(self) -> None:
        self._current, self._kept = [], []
