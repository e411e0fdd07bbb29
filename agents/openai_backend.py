"""The ``openai`` backend: any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp, OpenAI).

Through autogen-ext's client (imported only when a client is built), behind a concurrency cap,
retries with exponential backoff, and the content-addressed response cache."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from autogen_core.models import ChatCompletionClient, ModelFamily, ModelInfo

from personasim.agents.backend_registry import Backend, ClientOptions, register_backend
from personasim.agents.wrappers import CachedClient, ResilientClient, ResponseCache, RetryPolicy

if TYPE_CHECKING:
    from personasim.agents.backends import BackendConfig


def _model_info(config: BackendConfig) -> ModelInfo:
    # memories add their own system message mid-conversation; OpenAI-compatible servers accept that
    base = ModelInfo(vision=False, function_calling=False, json_output=False, family=ModelFamily.UNKNOWN,
                     structured_output=False, multiple_system_messages=True)
    return ModelInfo(**{**base, **(config.model_info or {})})  # type: ignore[typeddict-item]


@register_backend("openai")
class OpenAIBackend(Backend):
    is_llm = True

    @classmethod
    def validate(cls, config: BackendConfig) -> None:
        if config.model == "scripted-v1":
            raise ValueError("the openai backend needs `model` (the served model's name)")

    @classmethod
    def create(cls, config: BackendConfig, options: ClientOptions) -> ChatCompletionClient:
        from autogen_ext.models.openai import OpenAIChatCompletionClient

        api_key = "EMPTY"
        if config.api_key_env:
            api_key = os.environ.get(config.api_key_env, "")
            if not api_key:
                raise ValueError(
                    f"environment variable {config.api_key_env} (named by api_key_env) is empty; export the API key"
                )
        params: dict[str, Any] = {"temperature": config.temperature, "max_tokens": config.max_tokens}
        if config.seed is not None:
            params["seed"] = config.seed
        inner = OpenAIChatCompletionClient(
            model=config.model, base_url=config.base_url, api_key=api_key, model_info=_model_info(config),
            timeout=config.timeout_s, max_retries=0, **params,
        )
        per_process = max(1, math.ceil(config.max_concurrency / max(1, options.concurrency_share)))
        client: ChatCompletionClient = ResilientClient(
            inner, per_process, RetryPolicy(max_retries=config.max_retries),
            server=config.base_url or "https://api.openai.com/v1",
        )
        if options.cache_path is not None and options.cache_mode != "off":
            client = CachedClient(client, ResponseCache(options.cache_path), options.cache_mode, "openai",
                                  f"{config.base_url}|{config.model}", params)
        return client
