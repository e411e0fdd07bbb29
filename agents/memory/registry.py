"""One registry of memory strategies, so a user adds their own in one file with ``@register_memory``."""

from __future__ import annotations

from typing import Any, TypeVar

from autogen_core.models import ChatCompletionClient

from personasim.agents.memory.base import MemorySettings, PersonaMemory

_REGISTRY: dict[str, type[PersonaMemory]] = {}
M = TypeVar("M", bound=type[PersonaMemory])


def register_memory(cls: M) -> M:
    name = getattr(cls, "name", None)
    if not name:
        raise ValueError(f"{cls.__name__} must set a class attribute `name`")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"a memory strategy named {name!r} is already registered")
    _REGISTRY[name] = cls
    return cls


def available_memories() -> list[str]:
    return sorted(_REGISTRY)


def check_memory_names(names: list[str]) -> list[str]:
    known = available_memories()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown memory strategy {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    return names


def create_memory(
    name: str,
    settings: MemorySettings,
    model_client: ChatCompletionClient | None = None,
    redact_values: list[str] | None = None,
    embedder: Any | None = None,
) -> PersonaMemory:
    check_memory_names([name])
    return _REGISTRY[name](settings, model_client=model_client, redact_values=redact_values, embedder=embedder)


def memory_class(name: str) -> type[PersonaMemory]:
    check_memory_names([name])
    return _REGISTRY[name]


def load_plugins(modules: list[str]) -> None:
    """Import modules that register extra strategies (in every process that builds memories)."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(
                f"cannot import memory plugin {module!r} ({exc}); install it or put it on PYTHONPATH"
            ) from exc
