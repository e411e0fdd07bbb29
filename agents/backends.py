"""Model backends by name, per role. Each returns an AutoGen ``ChatCompletionClient``.

``BackendConfig.kind`` names a backend registered with ``@register_backend`` (see
``personasim.agents.backend_registry``); ``create_client`` builds its client. The built-ins:

- ``scripted``: the offline default (deterministic templates; never cached: it is cheaper than a
  cache lookup and already reproducible). Not an LLM (``is_llm`` is False).
- ``transformers``: a local causal LM from a path, batched across concurrent sessions.
- ``openai``: any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp, OpenAI) through
  autogen-ext's client, behind a concurrency cap, retries with exponential backoff, and the
  content-addressed response cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from autogen_core.models import ChatCompletionClient
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from personasim.agents.backend_registry import ClientOptions, backend_class
from personasim.agents.wrappers import CacheMode
from personasim.personas.catalog import TopicCatalog

#: The fields of AutoGen's ``ModelInfo`` (autogen_core.models), the only content ``model_info`` takes.
MODEL_INFO_KEYS = ("vision", "function_calling", "json_output", "family", "structured_output",
                   "multiple_system_messages")


class BackendConfig(BaseModel):
    """Which model plays a role (the simulated user, or the chatbot and its memory writer)."""

    model_config = ConfigDict(extra="forbid")

    # any registered backend name; a plain str so the JSON (hashed into run ids) is what it always was
    kind: str = Field(default="scripted", description="A registered backend: scripted, openai, transformers ...")
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

    @field_validator("model_info")
    @classmethod
    def _model_info(cls, info: dict[str, Any] | None) -> dict[str, Any] | None:
        """AutoGen's ModelInfo: known keys, booleans (``family`` a short name). Free-form content
        here was once the way to smuggle megabytes into the stored config."""
        if info is None:
            return None
        unknown = sorted(set(info) - set(MODEL_INFO_KEYS))
        if unknown:
            raise ValueError(f"unknown model_info keys {unknown}; AutoGen's ModelInfo has {', '.join(MODEL_INFO_KEYS)}")
        for key, value in info.items():
            if key == "family":
                if not isinstance(value, str) or len(value) > 100:
                    raise ValueError("model_info.family must be a model family name (a string of at most 100 "
                                     "characters), e.g. 'unknown'")
            elif not isinstance(value, bool):
                raise ValueError(f"model_info.{key} must be true or false, not {type(value).__name__}")
        return info

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        backend_class(kind)  # a ValueError listing the registered names when unknown
        return kind

    @model_validator(mode="after")
    def _check(self) -> BackendConfig:
        backend_class(self.kind).validate(self)
        return self

    @property
    def is_llm(self) -> bool:
        """Whether this backend is a real language model (False for ``scripted``)."""
        return backend_class(self.kind).is_llm


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
    options = ClientOptions(catalog=catalog, cache_path=cache_path, cache_mode=cache_mode,
                            concurrency_share=concurrency_share, model_server=model_server)
    return backend_class(config.kind).create(config, options)
