"""One local model per GPU, shared by every shard: a Ray actor that batches requests from all of them.

Loading a transformers model in every shard actor would hold N copies of the weights and give
each copy a trickle of requests. Instead the engine starts one ``ModelServer`` per GPU (with
``num_gpus=1``; on a machine without one, a single CPU actor), and each shard talks to it through
``RemoteModelClient``. The server is an async actor, so calls from all shards arrive concurrently
and its client's batching queue turns them into full generation batches.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage, ModelInfo, RequestUsage
from autogen_core.tools import Tool, ToolSchema

from personasim.agents.backends import BackendConfig
from personasim.agents.tokens import count_tokens


class ModelServer:
    """The model, held once. Run as a Ray actor (``ray.remote(ModelServer)``)."""

    def __init__(self, config: BackendConfig) -> None:
        from personasim.agents.transformers_backend import TransformersChatCompletionClient

        assert config.path is not None
        self.client = TransformersChatCompletionClient(
            config.path, dtype=config.dtype, device=config.device, max_new_tokens=config.max_tokens,
            temperature=config.temperature, seed=config.seed or 0, batch_size=config.batch_size,
        )

    async def create(self, messages: list[LLMMessage]) -> tuple[str, int, int]:
        result = await self.client.create(messages)
        return str(result.content), result.usage.prompt_tokens, result.usage.completion_tokens

    def batch_sizes(self) -> list[int]:
        """How many requests each generation batch held (to check that shards' calls were pooled)."""
        return list(self.client.batches)

    def max_positions(self) -> int:
        return int(getattr(self.client.model.config, "max_position_embeddings", 4096))


class RemoteModelClient(ChatCompletionClient):
    """A shard's handle on a ``ModelServer``: every call goes to the shared model."""

    def __init__(self, server: Any, max_positions: int = 4096) -> None:
        self.server = server
        self.max_positions = max_positions
        self._last = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total = RequestUsage(prompt_tokens=0, completion_tokens=0)

    async def create(self, messages: Sequence[LLMMessage], **kwargs: Any) -> CreateResult:
        text, prompt_tokens, completion_tokens = await self.server.create.remote(list(messages))
        self._last = RequestUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        self._total = RequestUsage(
            prompt_tokens=self._total.prompt_tokens + prompt_tokens,
            completion_tokens=self._total.completion_tokens + completion_tokens,
        )
        return CreateResult(finish_reason="stop", content=text, usage=self._last, cached=False)

    def create_stream(self, messages: Sequence[LLMMessage], **kwargs: Any) -> AsyncGenerator[str | CreateResult, None]:
        async def stream() -> AsyncGenerator[str | CreateResult, None]:
            result = await self.create(messages, **kwargs)
            yield str(result.content)
            yield result

        return stream()

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return self._last

    def total_usage(self) -> RequestUsage:
        return self._total

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:  # noqa: B006
        """personasim's fixed token unit: an estimate, not a round trip to the model actor."""
        return sum(count_tokens(m.content if isinstance(m.content, str) else str(m.content)) for m in messages)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:  # noqa: B006
        return max(0, self.max_positions - self.count_tokens(messages))

    @property
    def capabilities(self) -> ModelInfo:  # type: ignore[override]
        return self.model_info

    @property
    def model_info(self) -> ModelInfo:
        from personasim.agents.transformers_backend import local_model_info

        return local_model_info()


def start_model_servers(config: BackendConfig) -> list[Any]:
    """One server per GPU the cluster has (``num_gpus=1`` each), or one CPU server without GPUs."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    actor = ray.remote(ModelServer)
    if gpus and config.device != "cpu":
        return [actor.options(num_gpus=1, num_cpus=0).remote(config) for _ in range(gpus)]
    return [actor.options(num_cpus=0).remote(config)]
