"""Client wrappers every LLM backend goes through: a response cache, retries, a concurrency cap.

They are ``ChatCompletionClient``s themselves, so AutoGen agents and memories use them unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import sqlite3
import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage, ModelInfo, RequestUsage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

logger = logging.getLogger("personasim.backends")
CacheMode = Literal["off", "read", "readwrite"]


class _Delegate(ChatCompletionClient):
    """Forwards everything but ``create`` to the wrapped client."""

    def __init__(self, inner: ChatCompletionClient) -> None:
        self.inner = inner

    def create_stream(self, messages: Sequence[LLMMessage], **kwargs: Any) -> AsyncGenerator[str | CreateResult, None]:
        return self._stream(messages, **kwargs)

    async def _stream(self, messages: Sequence[LLMMessage], **kwargs: Any) -> AsyncGenerator[str | CreateResult, None]:
        result = await self.create(messages, **kwargs)
        if isinstance(result.content, str):
            yield result.content
        yield result

    async def close(self) -> None:
        await self.inner.close()

    def actual_usage(self) -> RequestUsage:
        return self.inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self.inner.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:  # noqa: B006
        return self.inner.count_tokens(messages, tools=tools)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:  # noqa: B006
        return self.inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelInfo:  # type: ignore[override]
        return self.inner.model_info

    @property
    def model_info(self) -> ModelInfo:
        return self.inner.model_info


class RetryPolicy(BaseModel):
    max_retries: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0


def is_retryable(exc: BaseException) -> bool:
    """429, 5xx, timeouts and connection errors are worth retrying; anything else is our fault."""
    try:
        import openai
    except ImportError:  # pragma: no cover - openai comes with autogen-ext[openai]
        return isinstance(exc, (TimeoutError, ConnectionError))
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, (TimeoutError, ConnectionError, asyncio.TimeoutError))


class BackendUnreachableError(ConnectionError):
    """The model server could not be reached (connection refused, DNS, timeouts) after every retry."""


def _unreachable(exc: BaseException) -> bool:
    try:
        import openai
    except ImportError:  # pragma: no cover
        return isinstance(exc, (TimeoutError, ConnectionError))
    return isinstance(exc, (openai.APIConnectionError, TimeoutError, ConnectionError, asyncio.TimeoutError))


class ResilientClient(_Delegate):
    """At most ``max_concurrency`` calls in flight; retryable failures retried with exponential backoff.

    ``server`` (the base URL) is named when the server cannot be reached at all: the OpenAI
    client's own message is "Connection error.", which says neither where nor what to fix."""

    def __init__(self, inner: ChatCompletionClient, max_concurrency: int, retry: RetryPolicy,
                 server: str | None = None) -> None:
        super().__init__(inner)
        self.server = server
        self.retry = retry
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._jitter = random.Random(0)
        self.retries = 0

    async def create(self, messages: Sequence[LLMMessage], **kwargs: Any) -> CreateResult:
        attempt = 0
        while True:
            try:
                async with self._semaphore:
                    return await self.inner.create(messages, **kwargs)
            except Exception as exc:
                if attempt >= self.retry.max_retries or not is_retryable(exc):
                    if self.server is not None and _unreachable(exc):
                        raise BackendUnreachableError(
                            f"cannot reach the model server at {self.server} ({type(exc).__name__}: {exc}; "
                            f"{attempt + 1} attempt(s)); start it there or fix base_url"
                        ) from exc
                    raise
                delay = min(self.retry.max_delay_s, self.retry.base_delay_s * 2**attempt)
                delay *= 0.5 + self._jitter.random()
                logger.warning("LLM call failed (%s); retry %d in %.2fs", type(exc).__name__, attempt + 1, delay)
                attempt += 1
                self.retries += 1
                await asyncio.sleep(delay)


class ResponseCache:
    """Content-addressed store of LLM responses beside the trajectory store (SQLite, WAL).

    Several Ray actors may write at once, which SQLite's WAL mode allows; the key is a hash of
    everything that determines a response, so a rerun or a fork replays calls bit-identically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        self._con.commit()

    @staticmethod
    def key(backend: str, model: str, messages: Sequence[LLMMessage], params: Mapping[str, Any]) -> str:
        payload = json.dumps(
            {"backend": backend, "model": model, "messages": [m.model_dump(mode="json") for m in messages],
             "params": dict(params)},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str) -> CreateResult | None:
        with self._lock:
            row = self._con.execute("SELECT result FROM responses WHERE key = ?", [key]).fetchone()
        return CreateResult.model_validate_json(row[0]) if row else None

    def put(self, key: str, result: CreateResult) -> None:
        with self._lock:
            self._con.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", [key, result.model_dump_json()])
            self._con.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT count(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        self._con.close()


class CachedClient(_Delegate):
    def __init__(self, inner: ChatCompletionClient, cache: ResponseCache, mode: CacheMode, backend: str,
                 model: str, params: Mapping[str, Any]) -> None:
        super().__init__(inner)
        self.cache, self.mode, self.backend, self.model, self.params = cache, mode, backend, model, dict(params)
        self.hits = self.misses = 0

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],  # noqa: B006
        tool_choice: Any = "auto",
        json_output: Any = None,
        extra_create_args: Mapping[str, Any] = {},  # noqa: B006
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        key = ResponseCache.key(self.backend, self.model, messages, {**self.params, **extra_create_args})
        if self.mode in ("read", "readwrite"):
            hit = self.cache.get(key)
            if hit is not None:
                self.hits += 1
                return hit.model_copy(update={"cached": True})
        self.misses += 1
        result = await self.inner.create(messages, extra_create_args=extra_create_args,
                                         cancellation_token=cancellation_token)
        if self.mode == "readwrite":
            self.cache.put(key, result)
        return result
