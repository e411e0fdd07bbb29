"""The ``scripted`` backend: the offline default (deterministic templates, no model).

Never cached: it is cheaper than a cache lookup and already reproducible."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from autogen_core.models import ChatCompletionClient

from personasim.agents.backend_registry import Backend, register_backend
from personasim.agents.scripted import ScriptedChatCompletionClient

if TYPE_CHECKING:
    from personasim.agents.backends import BackendConfig
    from personasim.agents.wrappers import CacheMode
    from personasim.personas.catalog import TopicCatalog


@register_backend("scripted")
class ScriptedBackend(Backend):
    is_llm = False

    @classmethod
    def create(
        cls,
        config: BackendConfig,
        catalog: TopicCatalog | None = None,
        cache_path: str | Path | None = None,
        cache_mode: CacheMode = "readwrite",
        concurrency_share: int = 1,
        model_server: Any | None = None,
    ) -> ChatCompletionClient:
        return ScriptedChatCompletionClient(catalog=catalog, model=config.model)
