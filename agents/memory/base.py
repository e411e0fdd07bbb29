"""The protocol every memory strategy shares: an AutoGen ``Memory`` with snapshots and token cost.

Strategies differ only in what they keep and what they put into the context. The simulation
feeds every strategy the same messages (``add``), closes each session (``end_session``), and
records ``snapshot()``; readers and the live chatbot see ``context_for(query)``. That makes
strategies comparable on identical histories.

Shared behaviour, so no strategy can skip it:
- **Forgetting.** A user message that asks to forget something ("Please forget my preference
  about X") is never stored; the strategy deletes what it holds about X (``forget``). Matching is
  by meaning, the way a real memory would have to do it: an item goes when it is similar to X
  (MiniLM), or when X is a topic of the world's catalog and the item is about that topic
  (``topics.TopicIndex``), which catches notes that imply a preference without naming it.
- **Redaction.** Unless ``settings.redact`` is off, sensitive values (the persona's own, and
  anything that looks like an email, a card, a phone or an API key) are replaced by ``[REDACTED]``
  before anything is stored, so leakage can be studied both ways.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from autogen_core import CancellationToken
from autogen_core.memory import (
    Memory,
    MemoryContent,
    MemoryMimeType,
    MemoryQueryResult,
    UpdateContextResult,
)
from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import ChatCompletionClient, SystemMessage, UserMessage
from pydantic import BaseModel, ConfigDict, Field

from personasim.agents.memory.topics import TopicIndex, item_sentences, item_text, topic_index
from personasim.agents.tokens import count_tokens

REDACTED = "[REDACTED]"
_FORGET = re.compile(r"\bplease forget\b|\bforget (what|everything) I (told|said)\b", re.IGNORECASE)
_PII_PATTERNS = [
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"),  # email
    re.compile(r"\bsk-[A-Za-z0-9]{16,}\b"),  # API key
    re.compile(r"\b(?:\d[ -]?){13,19}\b"),  # card / account numbers
    re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),  # national id
    re.compile(r"\+?\(?\d[\d ()-]{8,}\d"),  # phone
]
#: What each PII pattern cannot match without (an email needs "@", a key "sk-", the rest a digit):
#: most messages have none of them, and five regex passes over every long reply were a tenth of
#: a large run's shard time.
_PII_NEEDS = [re.compile("@"), re.compile("sk-"), re.compile(r"\d"), re.compile(r"\d"), re.compile(r"\d")]


@lru_cache(maxsize=1024)
def _redacted(text: str, values: tuple[str, ...]) -> str:
    """``text`` with the user's sensitive ``values`` and PII patterns replaced. Cached: each of a
    user's memories redacts the same message (three with the default memories)."""
    for value in values:
        text = text.replace(value, REDACTED)
    for pattern, needs in zip(_PII_PATTERNS, _PII_NEEDS, strict=True):
        if needs.search(text):
            text = pattern.sub(REDACTED, text)
    return text


class MemorySettings(BaseModel):
    """Knobs shared by the shipped strategies (each reads the ones it needs)."""

    model_config = ConfigDict(extra="forbid")

    agentic_budget_tokens: int = Field(default=2000, ge=16, description="Token budget of the agentic memory text.")
    full_history_max_tokens: int = Field(
        default=32000, ge=16, description="Context window of full_history (and full_history_forgetting)."
    )
    window_messages: int = Field(default=12, ge=1, description="Messages the sliding window keeps.")
    rag_top_k: int = Field(default=6, ge=1, description="Past messages rag retrieves per query.")
    fact_list_max_facts: int = Field(default=200, ge=1, description="Facts the fact list keeps at most.")
    fact_duplicate_similarity: float = Field(
        default=0.92, ge=0.0, le=1.0, description="A new fact this similar to a kept one is a duplicate (NOOP)."
    )
    fact_update_similarity: float = Field(
        default=0.55, ge=0.0, le=1.0, description="A new fact this similar to a kept one replaces it (UPDATE)."
    )
    forget_threshold: float = Field(
        default=0.35, ge=0.0, le=1.0, description="Similarity to a forget request above which an item is deleted."
    )
    forget_topic_k: int = Field(
        default=10, ge=0, le=50,
        description="An item is also deleted when one of its sentences ranks the forgotten catalog topic among its k "
        "most likely topics (0: similarity to the request only). Chosen by bench/forget_topics.py: recall 0.95 "
        "of implicit hints, 2.8% of other topics' hints deleted per request.",
    )
    forget_topic_margin: float = Field(
        default=0.14, ge=0.0, le=2.0,
        description="... and that topic's score is within this margin of the sentence's best topic score.",
    )
    forget_topic_advice: bool = Field(
        default=True,
        description="Describe topics to the forgetting classifier with the catalog's per-option advice too (else "
        "names, labels, keywords and statements only). The advice was written from the same cues as the scripted "
        "user's hints, so it lifts recall on those most (0.67 -> 0.95, bench/forget_topics.py); turn it off to "
        "study forgetting without that help.",
    )
    redact: bool = Field(default=True, description="Redact sensitive values before storing them.")


class MemorySnapshot(BaseModel):
    text: str
    items: list[str] = Field(default_factory=list)
    tokens: int


def message_content(role: str, text: str, time: datetime) -> MemoryContent:
    """The one shape in which the simulation hands a chat message to a memory."""
    return MemoryContent(
        content=text,
        mime_type=MemoryMimeType.TEXT,
        metadata={"role": role, "time": time.isoformat(timespec="minutes")},
    )


def is_forget_request(text: str) -> bool:
    return bool(_FORGET.search(text))


def forget_subject(text: str) -> str:
    """What a forget request is about ("... my preference about cuisines." -> "cuisines")."""
    match = re.search(r"\babout (?:my )?(.+?)[.!?]*$", text.strip(), re.IGNORECASE)
    return match.group(1) if match else text


MEMORY_HEADER = "What you remember about this user:"


def memory_prompt(remembered: str) -> str:
    """The system text that hands the chatbot what its memory selected ('' when it selected nothing).

    The AutoGen chatbot (``update_context``) and the online environment's observation
    (``agents.chatbot.chatbot_messages``) both build it here, so a policy trained online sees the
    prompt a simulated chatbot sees."""
    return f"{MEMORY_HEADER}\n{remembered}" if remembered else ""


class PersonaMemory(Memory):
    """Base of all strategies. Subclasses set ``name`` and implement the abstract methods."""

    name: ClassVar[str]

    def __init__(
        self,
        settings: MemorySettings,
        model_client: ChatCompletionClient | None = None,
        redact_values: list[str] | None = None,
        embedder: Any | None = None,
    ) -> None:
        self.settings = settings
        self.model_client = model_client
        self._redact_values = tuple(sorted({v for v in (redact_values or []) if len(v) >= 4}, key=len, reverse=True))
        self._embedder = embedder
        self._topic_index: TopicIndex | None = None

    # -- what a strategy decides -----------------------------------------------------------
    @abstractmethod
    async def remember(self, role: str, text: str, time: str) -> None:
        """Observe one (already redacted) message of the conversation."""

    @abstractmethod
    async def end_session(self, session_end: datetime) -> None:
        """Consolidate after a session (rewrite, summarise, index ...)."""

    @abstractmethod
    def items(self) -> list[str]:
        """The memory's current entries, in the order they enter the context."""

    @abstractmethod
    def drop(self, indices: set[int]) -> None:
        """Delete the entries at these positions of ``items()`` (used by forgetting)."""

    # -- shared behaviour -----------------------------------------------------------------
    async def add(self, content: MemoryContent, cancellation_token: CancellationToken | None = None) -> None:
        meta = content.metadata or {}
        role, text = str(meta.get("role", "user")), str(content.content)
        if role == "user" and self.acts_on_forget_requests and is_forget_request(text):
            self.forget(forget_subject(text))
            return
        await self.remember(role, self.redact(text), str(meta.get("time", "")))

    @property
    def acts_on_forget_requests(self) -> bool:
        """Whether a forget request deletes (and is not stored); a raw history keeps both."""
        return True

    def redact(self, text: str) -> str:
        if not self.settings.redact:
            return text
        return _redacted(text, self._redact_values)

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from personasim.agents.embedding import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    @property
    def topic_index(self) -> TopicIndex:
        """The catalog's topics, for forgetting by topic (the shipped catalog; built once per embedder)."""
        if self._topic_index is None:
            self._topic_index = topic_index(self.embedder, advice=self.settings.forget_topic_advice)
        return self._topic_index

    def forget_mask(self, texts: list[str], subject: str, by_sentence: bool = False) -> list[bool]:
        """Which of ``texts`` (items, or pending messages) are about ``subject``.

        Either similar to it (cosine >= ``forget_threshold``, tags and role prefix stripped), or,
        when the subject is a catalog topic, about that topic (``TopicIndex.about``): a note that
        says "a tall glass of chilled bubbly mineral water" is never close to "drinks", yet drinks
        is among its most likely topics.

        ``by_sentence``: similarity is judged per sentence (a text goes when one of its sentences
        is similar), for the chatbot's replies. An 80-400 token task reply as a whole is almost
        never close to a one-word subject, even when one of its sentences is ("Since you like
        espresso, ..."), and embedding it whole was half of forgetting's MiniLM time; its
        sentences are embedded for the topic rule anyway, and many recur (the world's reply
        points), so the process's cache often has them."""
        if not texts:
            return []
        subject_vector = self.embedder.encode([subject])[0]
        threshold = self.settings.forget_threshold
        if by_sentence:
            owner, parts = item_sentences(texts)
            doomed = [False] * len(texts)
            if parts:
                for i, s in zip(owner, self.embedder.encode(parts) @ subject_vector, strict=True):
                    doomed[i] = doomed[i] or bool(s >= threshold)
        else:
            bare = [item_text(t) or t for t in texts]
            doomed = [bool(s >= threshold) for s in self.embedder.encode(bare) @ subject_vector]
        if self.settings.forget_topic_k > 0:
            topics = self.topic_index.resolve(subject).topics
            if topics:
                about = self.topic_index.about(
                    texts, topics, self.settings.forget_topic_k, self.settings.forget_topic_margin
                )
                doomed = [a or b for a, b in zip(doomed, about, strict=True)]
        return doomed

    def forget(self, subject: str) -> set[int]:
        """Delete every entry about ``subject``; returns the positions deleted."""
        doomed = {i for i, gone in enumerate(self.forget_mask(self.items(), subject)) if gone}
        if doomed:
            self.drop(doomed)
        return doomed

    def context_for(self, query: str | None = None) -> list[str]:
        """What goes into the context when answering ``query`` (default: every entry)."""
        return self.items()

    @classmethod
    def select_context(cls, items: list[str], query: str, embedder: Any, settings: MemorySettings) -> list[str]:
        """The same selection, from a stored snapshot (used by the evaluation)."""
        return items

    def context_text(self, query: str | None = None) -> str:
        return "\n".join(self.context_for(query))

    def snapshot(self) -> MemorySnapshot:
        items = self.items()
        text = "\n".join(items)
        # a token never spans the line breaks, so the items' counts (mostly counted before) add up
        return MemorySnapshot(text=text, items=items, tokens=sum(map(count_tokens, items)))

    async def update_context(self, model_context: ChatCompletionContext) -> UpdateContextResult:
        messages = await model_context.get_messages()
        query = next((m.content for m in reversed(messages) if isinstance(m, UserMessage)), None)
        text = self.context_text(query if isinstance(query, str) else None)
        if not text:
            return UpdateContextResult(memories=MemoryQueryResult(results=[]))
        await model_context.add_message(SystemMessage(content=memory_prompt(text)))
        return UpdateContextResult(
            memories=MemoryQueryResult(results=[MemoryContent(content=text, mime_type=MemoryMimeType.TEXT)])
        )

    async def query(
        self, query: str | MemoryContent, cancellation_token: CancellationToken | None = None, **kwargs: Any
    ) -> MemoryQueryResult:
        text = query if isinstance(query, str) else str(query.content)
        return MemoryQueryResult(
            results=[MemoryContent(content=item, mime_type=MemoryMimeType.TEXT) for item in self.context_for(text)]
        )

    async def close(self) -> None:
        return None


def top_k_by_similarity(items: list[str], query: str, embedder: Any, k: int) -> list[str]:
    """The ``k`` entries most similar to ``query``, kept in their original (time) order."""
    if len(items) <= k:
        return list(items)
    scores = embedder.encode(items) @ embedder.encode([query])[0]
    keep = sorted(np.argsort(-scores, kind="stable")[:k])
    return [items[i] for i in keep]
