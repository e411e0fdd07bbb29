"""Model backends by name, per role. Each returns an AutoGen ``ChatCompletionClient``.

- ``scripted``: the offline default (deterministic templates; never cached: it is cheaper than a
  cache lookup and already reproducible).
- ``transformers``: a local causal LM from a path, batched across concurrent sessions.
- ``openai``: any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp, OpenAI) through
  autogen-ext's client, behind a concurrency cap, retries with exponential backoff, and the
  content-addressed response cache.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

from autogen_core.models import ChatCompletionClient, ModelFamily, ModelInfo
from pydantic import BaseModel, ConfigDict, Field, model_validator

from personasim.agents.scripted import ScriptedChatCompletionClient
from personasim.agents.wrappers import CachedClient, CacheMode, ResilientClient, ResponseCache, RetryPolicy
from personasim.personas.catalog import TopicCatalog


class BackendConfig(BaseModel):
    """Which model plays a role (the simulated user, or the chatbot and its memory writer)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["scripted", "openai", "transformers"] = "scripted"
    model: str = "scripted-v1"
    base_url: str | None = Field(default=None, description="e.g. http://localhost:8000/v1 for a vLLM server.")
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the API key (never the key itself)."
    )
    model_info: dict[str, Any] | None = Field(
        default=None, description="AutoGen model_info for models the client does not know (vision, family ...)."
    )
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=400, ge=1)
    seed: int | None = Field(default=None, description="Sampling seed sent to servers that support it.")
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    max_concurrency: int = Field(
        default=32, ge=1, description="Calls in flight at once to this backend, across all actors (split evenly)."
    )
    path: str | None = Field(default=None, description="transformers: folder of a saved causal LM.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = Field(default="auto", description="transformers: cuda, cpu, or auto.")
    batch_size: int = Field(default=8, ge=1, description="transformers: requests generated together.")

    @model_validator(mode="after")
    def _check(self) -> BackendConfig:
        if self.kind == "openai" and self.model == "scripted-v1":
            raise ValueError("the openai backend needs `model` (the served model's name)")
        if self.kind == "transformers" and not self.path:
            raise ValueError("the transformers backend needs `path` (a folder holding a saved causal LM)")
        return self


def _model_info(config: BackendConfig) -> ModelInfo:
    # memories add their own system message mid-conversation; OpenAI-compatible servers accept that
    base = ModelInfo(vision=False, function_calling=False, json_output=False, family=ModelFamily.UNKNOWN,
                     structured_output=False, multiple_system_messages=True)
    return ModelInfo(**{**base, **(config.model_info or {})})  # type: ignore[typeddict-item]


def create_client(
    config: BackendConfig,
    catalog: TopicCatalog | None = None,
    cache_path: str | Path | None = None,
    cache_mode: CacheMode = "readwrite",
    concurrency_share: int = 1,
    model_server: Any | None = None,
) -> ChatCompletionClient:
    """The client for one backend. ``concurrency_share``: how many processes (actors) split the
    backend's ``max_concurrency``, so the server sees at most that many calls in flight.
    ``model_server``: a shared ``ModelServer`` actor that holds the transformers model (the
    engine starts one per GPU), used instead of loading the weights here."""
    if config.kind == "scripted":
        return ScriptedChatCompletionClient(catalog=catalog, model=config.model)
    if config.kind == "openai":
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
        per_process = max(1, math.ceil(config.max_concurrency / max(1, concurrency_share)))
        client: ChatCompletionClient = ResilientClient(inner, per_process, RetryPolicy(max_retries=config.max_retries))
        if cache_path is not None and cache_mode != "off":
            client = CachedClient(client, ResponseCache(cache_path), cache_mode, "openai",
                                  f"{config.base_url}|{config.model}", params)
        return client
    if config.kind == "transformers":
        from personasim.agents.transformers_backend import TransformersChatCompletionClient

        assert config.path is not None
        local: ChatCompletionClient
        if model_server is not None:
            from personasim.agents.model_actor import RemoteModelClient

            local = RemoteModelClient(model_server)
        else:
            local = TransformersChatCompletionClient(
                config.path, dtype=config.dtype, device=config.device, max_new_tokens=config.max_tokens,
                temperature=config.temperature, seed=config.seed or 0, batch_size=config.batch_size,
            )
        if cache_path is not None and cache_mode != "off":
            params = {"temperature": config.temperature, "max_tokens": config.max_tokens, "seed": config.seed}
            local = CachedClient(local, ResponseCache(cache_path), cache_mode, "transformers", config.path, params)
        return local
    raise ValueError(f"unknown backend {config.kind!r}; choose from: scripted, openai, transformers")
