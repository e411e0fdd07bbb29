"""Memory strategies: AutoGen ``Memory`` implementations behind one registry."""

from personasim.agents.memory.base import MemorySettings, MemorySnapshot, PersonaMemory, message_content
from personasim.agents.memory.registry import (
    available_memories,
    check_memory_names,
    create_memory,
    load_plugins,
    memory_class,
    register_memory,
)

__all__ = [
    "MemorySettings",
    "MemorySnapshot",
    "PersonaMemory",
    "available_memories",
    "check_memory_names",
    "create_memory",
    "load_plugins",
    "memory_class",
    "message_content",
    "register_memory",
]
