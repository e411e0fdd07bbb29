"""A local Hugging Face causal LM as an AutoGen ``ChatCompletionClient``.

Weights come from a path the user supplies (nothing is downloaded). Requests from every
concurrent session of an actor are gathered into batches (up to ``batch_size``, waiting at most
``batch_wait_ms`` for more) and generated together with left padding, in a worker thread so the
event loop keeps running.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
)
from autogen_core.tools import Tool, ToolSchema

Dtype = Literal["auto", "float32", "float16", "bfloat16"]


def local_model_info() -> ModelInfo:
    """What AutoGen may ask of a local causal LM: plain text, no tools, no vision."""
    return ModelInfo(vision=False, function_calling=False, json_output=False, family=ModelFamily.UNKNOWN,
                     structured_output=False, multiple_system_messages=True)


class ModelPathError(ValueError):
    """The model path is missing or does not hold a causal language model."""


def _role_messages(messages: Sequence[LLMMessage]) -> list[dict[str, str]]:
    out = []
    for m in messages:
        content = m.content if isinstance(m.content, str) else str(m.content)
        role = "system" if isinstance(m, SystemMessage) else "assistant" if isinstance(m, AssistantMessage) else "user"
        if out and out[-1]["role"] == role == "system":
            out[-1]["content"] += "\n\n" + content  # many chat templates allow one system message
        else:
            out.append({"role": role, "content": content})
    return out


def load_causal_lm(path: str | Path, dtype: Dtype = "auto", device: str = "auto") -> tuple[Any, Any, str]:
    """(model, tokenizer, device) from a local folder; never downloads. Left padding, a pad token.

    Shared by the chat client and the log-likelihood reader, so both fail the same clear way on a
    wrong path."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise ModelPathError(f"model path {path} does not exist; pass the folder of a saved causal LM")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelPathError(f"{path} holds no model config (config.json): {exc}") from exc
    if type(config) not in AutoModelForCausalLM._model_mapping:
        raise ModelPathError(f"{path} is not a causal language model ({type(config).__name__}); use a decoder-only LM")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype, local_files_only=True)
    model.to(device).eval()
    return model, tokenizer, device


class TransformersChatCompletionClient(ChatCompletionClient):
    def __init__(
        self,
        path: str | Path,
        dtype: Dtype = "auto",
        device: str = "auto",
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        batch_size: int = 8,
        batch_wait_ms: float = 5.0,
    ) -> None:
        self.model, self.tokenizer, device = load_causal_lm(path, dtype, device)
        path = Path(path)
        self.device, self.path = device, path
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.batch_size, self.batch_wait = batch_size, batch_wait_ms / 1000.0
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[tuple[str, int, int]]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self.batches: list[int] = []

    # -- prompts ------------------------------------------------------------------------------
    def render(self, messages: Sequence[LLMMessage]) -> str:
        chat = _role_messages(messages)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        return "".join(f"{m['role']}: {m['content']}\n" for m in chat) + "assistant:"

    # -- batching -----------------------------------------------------------------------------
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
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop:  # a new event loop (another asyncio.run): new worker
            self._queue = asyncio.Queue()
            self._loop = loop
            self._worker = loop.create_task(self._serve())
        future: asyncio.Future[tuple[str, int, int]] = asyncio.get_running_loop().create_future()
        await self._queue.put((self.render(messages), future))
        text, prompt_tokens, completion_tokens = await future
        self._last = RequestUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        self._total = RequestUsage(
            prompt_tokens=self._total.prompt_tokens + prompt_tokens,
            completion_tokens=self._total.completion_tokens + completion_tokens,
        )
        return CreateResult(finish_reason="stop", content=text, usage=self._last, cached=False)

    async def _serve(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.batch_wait
            while len(batch) < self.batch_size:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            prompts = [p for p, _ in batch]
            try:
                outputs = await asyncio.to_thread(self._generate, prompts)
            except Exception as exc:  # every waiter learns what went wrong
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches.append(len(batch))
            for (_, future), output in zip(batch, outputs, strict=True):
                if not future.done():
                    future.set_result(output)

    def _generate(self, prompts: list[str]) -> list[tuple[str, int, int]]:
        import torch

        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        sampling = self.temperature > 0
        generator_seed = self.seed
        torch.manual_seed(generator_seed)
        with torch.no_grad():
            generated = self.model.generate(
                **encoded, max_new_tokens=self.max_new_tokens, do_sample=sampling,
                temperature=self.temperature if sampling else None, top_p=None, top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        width = encoded["input_ids"].shape[1]
        out = []
        for i in range(len(prompts)):
            new = generated[i, width:]
            text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
            prompt_len = int(encoded["attention_mask"][i].sum())
            out.append((text, prompt_len, int((new != self.tokenizer.pad_token_id).sum())))
        return out

    # -- the rest of the protocol -------------------------------------------------------------
    def create_stream(self, messages: Sequence[LLMMessage], **kwargs: Any) -> AsyncGenerator[str | CreateResult, None]:
        async def stream() -> AsyncGenerator[str | CreateResult, None]:
            result = await self.create(messages, **kwargs)
            yield str(result.content)
            yield result

        return stream()

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def actual_usage(self) -> RequestUsage:
        return self._last

    def total_usage(self) -> RequestUsage:
        return self._total

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:  # noqa: B006
        return len(self.tokenizer(self.render(messages))["input_ids"])

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:  # noqa: B006
        limit = getattr(self.model.config, "max_position_embeddings", 4096)
        return max(0, limit - self.count_tokens(messages))

    @property
    def capabilities(self) -> ModelInfo:  # type: ignore[override]
        return self.model_info

    @property
    def model_info(self) -> ModelInfo:
        return local_model_info()
