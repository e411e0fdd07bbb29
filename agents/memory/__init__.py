"""Memory strategies: AutoGen ``Memory`` implementations behind one registry.

Importing the package registers the shipped strategies (``strategies``), and any import of a
submodule imports the package first, so the registry is never seen without them.
"""

from personasim.agents.memory import strategies as _strategies  # noqa: F401 - registers the shipped ones
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
