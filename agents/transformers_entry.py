"""The ``transformers`` backend: a local causal LM from ``path``, batched across concurrent sessions.

Through a shared ``ModelServer`` actor when the engine passes one (one per GPU), else loaded here.
torch and transformers load only when a client is built.

This registry entry lives apart from ``transformers_backend`` (the client) because it uses both
that client and ``model_actor.RemoteModelClient``, and ``model_actor`` imports
``transformers_backend``: one module above both keeps the import graph free of cycles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autogen_core.models import ChatCompletionClient

from personasim.agents.backend_registry import Backend, ClientOptions, register_backend
from personasim.agents.wrappers import CachedClient, ResponseCache

if TYPE_CHECKING:
    from personasim.agents.backends import BackendConfig


@register_backend("transformers")
class TransformersBackend(Backend):
    is_llm = True

    @classmethod
    def validate(cls, config: BackendConfig) -> None:
        if not config.path:
            raise ValueError("the transformers backend needs `path` (a folder holding a saved causal LM)")

    @classmethod
    def create(cls, config: BackendConfig, options: ClientOptions) -> ChatCompletionClient:
        assert config.path is not None
        local: ChatCompletionClient
        if options.model_server is not None:
            from personasim.agents.model_actor import RemoteModelClient

            local = RemoteModelClient(options.model_server)
        else:
            from personasim.agents.transformers_backend import TransformersChatCompletionClient

            local = TransformersChatCompletionClient(
                config.path, dtype=config.dtype, device=config.device, max_new_tokens=config.max_tokens,
                temperature=config.temperature, seed=config.seed or 0, batch_size=config.batch_size,
            )
        if options.cache_path is not None and options.cache_mode != "off":
            params = {"temperature": config.temperature, "max_tokens": config.max_tokens, "seed": config.seed}
            local = CachedClient(local, ResponseCache(options.cache_path), options.cache_mode, "transformers",
                                 config.path, params)
        return local
