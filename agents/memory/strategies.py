"""The shipped memory strategies.

none, full_history, full_history_forgetting, sliding_window and rag keep raw messages (and differ
in which reach the context and in whether a forget request deletes); fact_list, temporal and
agentic keep what they extract. With the scripted backend,
extraction is rule-based (``rules.py``): it never sees the ground truth, only the conversation.
"""

from __future__ import annotations

import json
import re
import zlib
from datetime import datetime
from typing import Any

from autogen_core.models import SystemMessage, UserMessage

from personasim.agents.directive import (
    MEMORY_HEADER,
    TRANSCRIPT_HEADER,
    FactExtractionDirective,
    MemoryRewriteDirective,
    render_directive,
)
from personasim.agents.memory.base import MemorySettings, MemorySnapshot, PersonaMemory, top_k_by_similarity
from personasim.agents.memory.registry import register_memory
from personasim.agents.memory.rules import personal_sentences
from personasim.agents.tokens import count_tokens, truncate_to_tokens

_USER_LINE = re.compile(r"^\[[^\]]*\] user: ")
#: zlib level for a packed raw history. Level 1 packs a 24 KB history (6 default sessions) to 10.4 KB
#: in half the time of level 6 (9.2 KB): packing at each session's end was 8% of a large run's shard.
PACK_LEVEL = 1


class _MessageLog(PersonaMemory):
    """Shared by the strategies that keep raw messages.

    Between sessions the log is held as one zlib-compressed JSON list. A raw history is the
    largest thing a shard holds per user (26 KB of a user's ~45 after six default sessions, about
    150 KB at the pmv2-32k preset's horizon), its text compresses about fourfold, and it is read a
    few times a session (the snapshot, a forget request, the context when it is the chatbot's own
    memory). The session's new messages stay a plain list until ``end_session`` packs them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._packed = b""  # the log before this session
        self._new: list[str] = []  # this session's messages
        self._tokens = 0  # the whole log's tokens, kept as lines come and go (not recounted per session)

    @property
    def _lines(self) -> list[str]:
        old = json.loads(zlib.decompress(self._packed)) if self._packed else []
        return old + self._new

    @_lines.setter
    def _lines(self, lines: list[str]) -> None:
        self._pack(lines, sum(count_tokens(line) for line in lines))

    def _pack(self, lines: list[str], tokens: int) -> None:
        """Hold ``lines`` (whose tokens are ``tokens``) as the whole log, packed."""
        self._packed = zlib.compress(json.dumps(lines).encode(), PACK_LEVEL) if lines else b""
        self._new = []
        self._tokens = tokens

    async def remember(self, role: str, text: str, time: str) -> None:
        self._new.append(f"[{time}] {role}: {text}")
        # the line's count, from the text's (counted already when it was said) and its tag's
        self._tokens += count_tokens(f"[{time}] {role}:") + count_tokens(text)

    async def end_session(self, session_end: datetime) -> None:
        self._pack(self._lines, self._tokens)

    def _visible(self) -> tuple[int, list[str]]:
        """(offset into the log, entries visible in the context)."""
        return 0, list(self._lines)

    def items(self) -> list[str]:
        return self._visible()[1]

    def forget(self, subject: str) -> set[int]:
        """The user's messages about ``subject`` go; the assistant's replies stay. They are the
        assistant's words, not what the user told it, and classifying them sentence by sentence
        would cost a 32k-token history about a minute per request (they are 80-400 tokens each)."""
        items = self.items()
        said = [i for i, line in enumerate(items) if _USER_LINE.match(line)]
        mask = self.forget_mask([items[i] for i in said], subject)
        doomed = {i for i, gone in zip(said, mask, strict=True) if gone}
        if doomed:
            self.drop(doomed)
        return doomed

    def drop(self, indices: set[int]) -> None:
        offset, _ = self._visible()
        self._lines = [line for i, line in enumerate(self._lines) if i - offset not in indices]

    async def clear(self) -> None:
        self._lines = []


@register_memory
class NoMemory(PersonaMemory):
    """Remembers nothing: the floor every other strategy is read against."""

    name = "none"

    async def remember(self, role: str, text: str, time: str) -> None:
        return None

    async def end_session(self, session_end: datetime) -> None:
        return None

    def items(self) -> list[str]:
        return []

    def drop(self, indices: set[int]) -> None:
        return None

    async def clear(self) -> None:
        return None


@register_memory
class FullHistory(_MessageLog):
    """The whole past conversation, cut from the oldest end to the context window: the long-context
    baseline as PersonaMem-v2 runs it. A forget request is kept as said and deletes nothing, so
    honouring it is the reader's job; ``full_history_forgetting`` is the variant that deletes."""

    name = "full_history"

    @property
    def acts_on_forget_requests(self) -> bool:
        return False

    def _visible(self) -> tuple[int, list[str]]:
        lines = self._lines
        if self._tokens <= self.settings.full_history_max_tokens:  # all of it fits: nothing to count
            return 0, lines
        kept = truncate_to_tokens(lines, self.settings.full_history_max_tokens)
        return len(lines) - len(kept), kept

    async def end_session(self, session_end: datetime) -> None:
        offset, kept = self._visible()
        if offset:
            self._lines = kept
        else:
            self._pack(kept, self._tokens)

    def snapshot(self) -> MemorySnapshot:
        """The base class's snapshot, with the token count kept rather than recounted: a whole raw
        history is too long for the count cache, and counting it again at every session's end was
        a tenth of a large run's shard time (no token spans the newline that joins two lines, so
        the kept sum is the same number)."""
        offset, items = self._visible()
        tokens = self._tokens if offset == 0 else sum(count_tokens(line) for line in items)
        return MemorySnapshot(text="\n".join(items), items=items, tokens=tokens)


@register_memory
class FullHistoryForgetting(FullHistory):
    """full_history that acts on forget requests: the user's messages about the subject are
    deleted (``forget_threshold``, ``forget_topic_k``) and the request is not kept. It measures
    what deleting buys a long context over leaving the request to the reader. Before store schema 10
    this was ``full_history``; an older store is renamed when opened (``sim/store_migrations.py``)."""

    name = "full_history_forgetting"

    @property
    def acts_on_forget_requests(self) -> bool:
        return True


@register_memory
class SlidingWindow(_MessageLog):
    """The last N messages only."""

    name = "sliding_window"

    def _visible(self) -> tuple[int, list[str]]:
        n = self.settings.window_messages
        return max(0, len(self._lines) - n), self._lines[-n:]

    async def end_session(self, session_end: datetime) -> None:
        self._lines = self._lines[-self.settings.window_messages:]


@register_memory
class RagMemory(_MessageLog):
    """Every past message indexed; the top-k most similar to the current message enter the context."""

    name = "rag"

    def context_for(self, query: str | None = None) -> list[str]:
        if not query:
            return self._lines[-self.settings.rag_top_k:]
        return top_k_by_similarity(self._lines, query, self.embedder, self.settings.rag_top_k)

    @classmethod
    def select_context(cls, items: list[str], query: str, embedder: Any, settings: MemorySettings) -> list[str]:
        return top_k_by_similarity(items, query, embedder, settings.rag_top_k)


class _FactStore(PersonaMemory):
    """Facts extracted from user messages by the model (a prompt; rule-based with the scripted
    backend), compared by meaning (MiniLM) with the facts kept."""

    extraction_prompt = (
        "Extract every personal fact the user states or implies about themselves in the message "
        "(preferences, habits, circumstances). Write one short first-person sentence per line, "
        "nothing else; write nothing if there is none."
    )

    async def extract(self, text: str) -> list[str]:
        if self.model_client is None:
            return personal_sentences(text)
        system = self.extraction_prompt + "\n\n" + render_directive(FactExtractionDirective())
        messages = [SystemMessage(content=system), UserMessage(content=text, source="user")]
        result = await self.model_client.create(messages)
        content = result.content if isinstance(result.content, str) else ""
        return [line.strip(" -*\t") for line in content.splitlines() if line.strip(" -*\t")]

    def _closest(self, candidate: str, facts: list[str]) -> tuple[int | None, float]:
        if not facts:
            return None, 0.0
        sims = self.embedder.encode(facts) @ self.embedder.encode([candidate])[0]
        best = int(sims.argmax())
        return best, float(sims[best])

    async def end_session(self, session_end: datetime) -> None:
        return None


@register_memory
class FactList(_FactStore):
    """mem0-style: candidate facts from each user message, then ADD / UPDATE / NOOP against the list
    (DELETE comes from forgetting). A candidate nearly identical to a kept fact is a duplicate
    (NOOP); one about the same thing replaces it (UPDATE, moved to the newest end)."""

    name = "fact_list"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._facts: list[tuple[str, str]] = []  # (date, text)
        self.operations = {"ADD": 0, "UPDATE": 0, "DELETE": 0, "NOOP": 0}

    async def remember(self, role: str, text: str, time: str) -> None:
        if role != "user":
            return
        for candidate in await self.extract(text):
            best, similarity = self._closest(candidate, [f for _, f in self._facts])
            if best is not None and similarity >= self.settings.fact_duplicate_similarity:
                self.operations["NOOP"] += 1
                continue
            if best is not None and similarity >= self.settings.fact_update_similarity:
                del self._facts[best]
                self.operations["UPDATE"] += 1
            else:
                self.operations["ADD"] += 1
            self._facts.append((time[:10], candidate))
        self._facts = self._facts[-self.settings.fact_list_max_facts:]

    def items(self) -> list[str]:
        return [f"[{t}] {text}" for t, text in self._facts]

    def drop(self, indices: set[int]) -> None:
        self.operations["DELETE"] += len(indices)
        self._facts = [f for i, f in enumerate(self._facts) if i not in indices]

    async def clear(self) -> None:
        self._facts = []


@register_memory
class TemporalMemory(_FactStore):
    """Facts with validity intervals: a newer fact on the same subject closes the older one, so the
    context holds what is true *now*, while ``history()`` keeps every interval."""

    name = "temporal"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._facts: list[dict[str, Any]] = []  # {text, since, until}

    async def remember(self, role: str, text: str, time: str) -> None:
        if role != "user":
            return
        for candidate in await self.extract(text):
            active = self._active()
            if active:
                sims = self.embedder.encode([f["text"] for f in active]) @ self.embedder.encode([candidate])[0]
                for fact, similarity in zip(active, sims, strict=True):
                    if similarity >= self.settings.fact_update_similarity:
                        fact["until"] = time[:10]
            self._facts.append({"text": candidate, "since": time[:10], "until": None})

    def _active(self) -> list[dict[str, Any]]:
        return [f for f in self._facts if f["until"] is None]

    def items(self) -> list[str]:
        return [f"[since {f['since']}] {f['text']}" for f in self._active()]

    def history(self) -> list[str]:
        return [f"[{f['since']} .. {f['until'] or 'now'}] {f['text']}" for f in self._facts]

    def drop(self, indices: set[int]) -> None:
        doomed = [f for i, f in enumerate(self._active()) if i in indices]
        self._facts = [f for f in self._facts if not any(f is d for d in doomed)]

    async def clear(self) -> None:
        self._facts = []


@register_memory
class AgenticMemory(PersonaMemory):
    """One human-readable memory per user, rewritten by the model after each session.

    As in PersonaMem-v2, the memory is bounded (default 2,000 tokens) and built only from the
    conversation: the writer sees the old memory and the new session, never questions or truth.
    """

    name = "agentic"
    instructions = (
        "You maintain a concise memory of one user for a personal assistant. Rewrite the memory so it "
        "keeps everything that reveals the user's preferences, habits and circumstances, newest last, "
        "each line starting with the date in brackets. Drop requests and small talk. Stay within "
        "{budget} tokens; when over budget, drop the oldest lines first."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.model_client is None:
            raise ValueError("the agentic memory needs a model client to rewrite its memory")
        self._text = ""
        self._pending: list[str] = []

    async def remember(self, role: str, text: str, time: str) -> None:
        self._pending.append(f"{role}: {text}")

    async def end_session(self, session_end: datetime) -> None:
        if not self._pending:
            return
        budget = self.settings.agentic_budget_tokens
        directive = MemoryRewriteDirective(budget_tokens=budget, session_date=session_end.date().isoformat())
        system = self.instructions.format(budget=budget) + "\n\n" + render_directive(directive)
        request = f"{MEMORY_HEADER}\n{self._text}\n\n{TRANSCRIPT_HEADER}\n" + "\n".join(self._pending)
        assert self.model_client is not None
        result = await self.model_client.create(
            [SystemMessage(content=system), UserMessage(content=request, source="user")]
        )
        text = result.content if isinstance(result.content, str) else ""
        lines = [line for line in text.splitlines() if line.strip()]
        self._text = "\n".join(truncate_to_tokens(lines, budget))
        self._pending = []

    def items(self) -> list[str]:
        return [line for line in self._text.splitlines() if line.strip()]

    def drop(self, indices: set[int]) -> None:
        self._text = "\n".join(line for i, line in enumerate(self.items()) if i not in indices)

    def forget(self, subject: str) -> set[int]:
        # what is still pending (this session) is forgotten too, before it reaches the rewrite,
        # by the same rule as the notes (similar to the subject, or about its catalog topic); the
        # chatbot's replies by their sentences (``forget_mask``'s ``by_sentence``)
        if self._pending:
            pending = self._pending
            said = [i for i, p in enumerate(pending) if p.startswith("user: ")]
            replies = [i for i, p in enumerate(pending) if not p.startswith("user: ")]
            doomed: set[int] = set()
            for positions, by_sentence in ((said, False), (replies, True)):
                mask = self.forget_mask([pending[i] for i in positions], subject, by_sentence=by_sentence)
                doomed.update(i for i, gone in zip(positions, mask, strict=True) if gone)
            self._pending = [p for i, p in enumerate(pending) if i not in doomed]
        return super().forget(subject)

    async def clear(self) -> None:
        self._text = ""
        self._pending = []
