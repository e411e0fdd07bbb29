"""The ``scripted`` backend: the offline default (deterministic templates, no model).

Never cached: it is cheaper than a cache lookup and already reproducible."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autogen_core.models import ChatCompletionClient

from personasim.agents.backend_registry import Backend, ClientOptions, register_backend
from personasim.agents.scripted import ScriptedChatCompletionClient

if TYPE_CHECKING:
    from personasim.agents.backends import BackendConfig


@register_backend("scripted")
class ScriptedBackend(Backend):
    is_llm = False

    @classmethod
    def create(cls, config: BackendConfig, options: ClientOptions) -> ChatCompletionClient:
        return ScriptedChatCompletionClient(catalog=options.catalog, model=config.model)
