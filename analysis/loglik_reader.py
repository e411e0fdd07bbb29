"""A local transformers model answers by option log-likelihood instead of by generating a letter.

Scoring each full option as the model's continuation of (memory, request) never fails to parse,
needs no instruction following (so small or base models can be compared), and is what
lm-eval-harness does for multiple choice. Scores are the mean log-probability per option token,
so a long option is not penalised for its length (``normalise="sum"`` gives the raw total).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from personasim.agents.transformers_backend import Dtype, load_causal_lm
from personasim.analysis.reader import ReaderAnswer

SYSTEM = "You are a personal assistant. What you remember about the user:\n{memory}"


class LogLikelihoodReader:
    """Picks the option the model finds most likely as its reply to the user's request."""

    name = "loglik"

    def __init__(
        self,
        path: str | Path,
        dtype: Dtype = "auto",
        device: str = "auto",
        normalise: Literal["mean", "sum"] = "mean",
        max_length: int | None = None,
    ) -> None:
        self.model, self.tokenizer, self.device = load_causal_lm(path, dtype, device)
        self.model_name = Path(path).name
        self.normalise = normalise
        limit = getattr(self.model.config, "max_position_embeddings", None) or 4096
        self.max_length = min(max_length or limit, limit)

    def prompt(self, context_items: Sequence[str], query: str) -> str:
        memory = "\n".join(context_items) or "(nothing)"
        chat = [{"role": "system", "content": SYSTEM.format(memory=memory)}, {"role": "user", "content": query}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        return f"system: {chat[0]['content']}\nuser: {query}\nassistant:"

    def answer(self, context_items: Sequence[str], query: str, options: Sequence[str]) -> ReaderAnswer:
        import torch

        prompt_ids = self.tokenizer(self.prompt(context_items, query), add_special_tokens=False)["input_ids"]
        option_ids = [self.tokenizer(" " + o, add_special_tokens=False)["input_ids"] or [self.tokenizer.eos_token_id]
                      for o in options]
        longest = max(len(o) for o in option_ids)
        if longest >= self.max_length:
            raise ValueError(f"an option is {longest} tokens, longer than the model's {self.max_length}-token window")
        keep = self.max_length - longest
        prompt_ids = prompt_ids[-keep:]  # the oldest memory goes first when the window is full
        rows = [prompt_ids + o for o in option_ids]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
        with torch.no_grad():
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        scores = []
        for i, o in enumerate(option_ids):
            start = len(prompt_ids) - 1  # the logit at position t predicts token t + 1
            targets = torch.tensor(o, device=self.device)
            token_lp = logprobs[i, start : start + len(o)].gather(1, targets[:, None]).squeeze(1)
            total = float(token_lp.sum())
            scores.append(total / len(o) if self.normalise == "mean" else total)
        best = max(range(len(scores)), key=scores.__getitem__)
        return ReaderAnswer(chosen_index=best, scores=[round(s, 6) for s in scores])
