"""The offline default backend: a deterministic AutoGen ``ChatCompletionClient``.

It plays three parts, chosen by the directive in the prompt: the simulated user (following the
revelation plan), the chatbot (a templated, helpful reply), and the memory writer (rule-based
notes). Its output depends only on the messages it is given, never on call order or a global RNG,
so the same run reproduces byte for byte whichever actor executes it.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
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
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from personasim.agents.directive import (
    MEMORY_HEADER,
    TRANSCRIPT_HEADER,
    ChatbotReplyDirective,
    FactExtractionDirective,
    MemoryRewriteDirective,
    ProbeDirective,
    RevealPlan,
    UserTurnDirective,
    find_directive,
)
from personasim.agents.memory.rules import personal_sentences, rewrite_notes
from personasim.agents.replies import ReplyComposer, memory_lines_of, user_reaction
from personasim.agents.tokens import count_tokens
from personasim.personas.catalog import HINT_KINDS, TopicCatalog, load_topic_catalog
from personasim.personas.others import others_hints, others_statements
from personasim.personas.seeding import rng_for
from personasim.worlds.scenarios import Scenario

FOLLOW_UPS = (
    "What would you suggest?",
    "Does that change what you'd recommend?",
    "Could you adjust the suggestion with that in mind?",
    "Any other ideas?",
    "How would you tweak it?",
    "What would you do in my place?",
)
SENSITIVE_PHRASES = {
    "address": "address", "phone": "phone number", "email": "email", "national_id": "ID number",
    "passport_number": "passport number", "credit_card": "card number", "bank_account": "account number",
    "api_key": "API key",
}
FORGET_REQUESTS = (
    "Please forget my preference about {topic}.",
    "Please forget what I told you about my {topic}.",
)
CLOSINGS = (
    "Thanks, that's really helpful.",
    "Great, I'll give that a try.",
    "Perfect, that's all I needed.",
    "Thanks! I'll think it over.",
)

class _TaskTalk:
    """A session's task details and follow-up questions, shuffled once per session so a long
    session does not repeat itself before it has used them all."""

    def __init__(self, details: list[str], follow_ups: list[str]) -> None:
        self.details = details
        self.follow_ups = follow_ups

    def question(self, turn: int, rng: random.Random) -> str:
        if self.follow_ups:
            return self.follow_ups[turn % len(self.follow_ups)]
        return rng.choice(FOLLOW_UPS)

    def detail_or_question(self, turn: int, rng: random.Random) -> str:
        """Odd turns add a detail, even ones ask; each cycles through its list (the first detail
        went with the opening request)."""
        if turn % 2 and len(self.details) > 1:
            return self.details[1 + (turn // 2) % (len(self.details) - 1)]
        return self.question(turn, rng)


SCRIPTED_MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=False,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
    multiple_system_messages=True,
)


def _text(message: LLMMessage) -> str:
    content = getattr(message, "content", "")
    return content if isinstance(content, str) else ""


class ScriptedChatCompletionClient(ChatCompletionClient):
    """Seeded templates with real variety; no network, no model weights."""

    def __init__(self, catalog: TopicCatalog | None = None, model: str = "scripted-v1") -> None:
        self._catalog = catalog or load_topic_catalog()
        self._replies = ReplyComposer(self._catalog)
        self.model = model
        self._last_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

    # -- ChatCompletionClient -------------------------------------------------------------
    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],  # noqa: B006 - signature fixed by AutoGen
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},  # noqa: B006
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        directive = find_directive(messages)
        if isinstance(directive, UserTurnDirective):
            content = self._user_turn(directive, messages)
        elif isinstance(directive, MemoryRewriteDirective):
            content = self._rewrite_memory(directive, messages)
        elif isinstance(directive, FactExtractionDirective):
            message = next((_text(m) for m in messages if isinstance(m, UserMessage)), "")
            content = "\n".join(personal_sentences(message))
        elif isinstance(directive, ProbeDirective):
            # the scripted user never loses its persona: it answers with what it truly holds
            content = (" ".join(directive.held_statements)
                       or f"I don't have a strong preference about {directive.topic_name}.")
        else:
            reply_directive = directive if isinstance(directive, ChatbotReplyDirective) else None
            content = self._assistant_reply(messages, reply_directive)
        usage = RequestUsage(
            prompt_tokens=sum(count_tokens(_text(m)) for m in messages),
            completion_tokens=count_tokens(content),
        )
        self._last_usage = usage
        self._total_usage = RequestUsage(
            prompt_tokens=self._total_usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total_usage.completion_tokens + usage.completion_tokens,
        )
        return CreateResult(finish_reason="stop", content=content, usage=usage, cached=False)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],  # noqa: B006
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},  # noqa: B006
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        result = await self.create(messages, cancellation_token=cancellation_token)
        assert isinstance(result.content, str)
        yield result.content
        yield result

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return self._last_usage

    def total_usage(self) -> RequestUsage:
        return self._total_usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:  # noqa: B006
        return sum(count_tokens(_text(m)) for m in messages)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:  # noqa: B006
        return max(0, 1_000_000 - self.count_tokens(messages))

    @property
    def capabilities(self) -> ModelInfo:  # type: ignore[override]
        return SCRIPTED_MODEL_INFO

    @property
    def model_info(self) -> ModelInfo:
        return SCRIPTED_MODEL_INFO

    # -- the three parts ------------------------------------------------------------------
    def _user_turn(self, directive: UserTurnDirective, messages: Sequence[LLMMessage]) -> str:
        """The planned turn: a reveal (or a forget request) when the plan says so, woven into the
        task: the request that opens it, details and follow-up questions in between, a reaction to
        a reply tailored to one of the task's topics, and a closing at the end."""
        turn = sum(1 for m in messages if isinstance(m, AssistantMessage))
        rng = rng_for(directive.seed, "user-turn", turn)
        plan = directive.turns[turn] if turn < len(directive.turns) else None
        if plan is not None and plan.forget is not None:
            return rng.choice(FORGET_REQUESTS).format(topic=plan.forget.topic_name)
        scenario = self._scenario(directive.scenario_id)
        parts: list[str] = []
        last_reply = next((_text(m) for m in reversed(messages) if isinstance(m, UserMessage)), "") if turn else ""
        if scenario is not None and last_reply:
            reaction = user_reaction(last_reply, directive.likes, scenario.topics, self._catalog, rng)
            if reaction:
                parts.append(reaction)
        reveal = plan.reveal if plan is not None else None
        if reveal is not None and reveal.person is not None:
            parts.append(self._about_someone_else(reveal, rng))
        elif reveal is not None:
            if reveal.mode == "explicit":
                parts.append(rng.choice(self._catalog.statements(reveal.topic, reveal.option, reveal.polarity)))
            else:
                kind = reveal.hint_kind if reveal.hint_kind in HINT_KINDS else None
                hints = self._catalog.hints(reveal.topic, reveal.option, reveal.polarity, kind)  # type: ignore[arg-type]
                parts.append(rng.choice(hints).text)
        if plan is not None and plan.mention is not None:
            phrase = SENSITIVE_PHRASES.get(plan.mention.kind, plan.mention.kind.replace("_", " "))
            parts.append(f"By the way, my {phrase} is {plan.mention.value}.")
        talk = self._task_talk(directive, scenario)
        if turn == 0:
            parts.append(directive.intent)
            if talk.details:
                parts.append(talk.details[0])
        elif turn == len(directive.turns) - 1 and turn > 0 and reveal is None:
            parts.append(rng.choice(CLOSINGS))
        elif reveal is not None:
            parts.append(talk.question(turn, rng))
        else:
            parts.append(talk.detail_or_question(turn, rng))
        return " ".join(parts)

    def _scenario(self, scenario_id: str) -> Scenario | None:
        try:
            return self._replies.scenarios.scenario(scenario_id)
        except KeyError:  # a scenario of another world pack: no task detail to add
            return None

    def _task_talk(self, directive: UserTurnDirective, scenario: Scenario | None) -> _TaskTalk:
        rng = rng_for(directive.seed, "task-talk")
        details = list(scenario.details) if scenario else []
        follow_ups = list(scenario.follow_ups) if scenario else []
        rng.shuffle(details)
        rng.shuffle(follow_ups)
        return _TaskTalk(details, follow_ups)

    def _about_someone_else(self, reveal: RevealPlan, rng: random.Random) -> str:
        """A sentence about a person in the user's life: their preference stated, or hinted at
        through what they do (a hint of the planned kind; the statement if none fits)."""
        person = reveal.person
        assert person is not None
        if reveal.mode == "implicit":
            kind = reveal.hint_kind if reveal.hint_kind in HINT_KINDS else None
            hints = others_hints(self._catalog, person, reveal.topic, reveal.option, kind)  # type: ignore[arg-type]
            if hints:
                return rng.choice(hints)
        return rng.choice(others_statements(self._catalog, person, reveal.topic, reveal.option))

    def _assistant_reply(self, messages: Sequence[LLMMessage], directive: ChatbotReplyDirective | None) -> str:
        """A substantive reply to the session's task (``agents/replies.py``), tailored by the memory
        the chatbot was handed (system messages after the first)."""
        directive = directive or ChatbotReplyDirective()
        systems = [_text(m) for m in messages if isinstance(m, SystemMessage)]
        conversation = [
            ("user" if isinstance(m, UserMessage) else "assistant", _text(m))
            for m in messages if isinstance(m, UserMessage | AssistantMessage)
        ]
        return self._replies.compose(
            conversation, memory_lines_of(systems[1:]), directive.min_tokens, directive.max_tokens)

    def _rewrite_memory(self, directive: MemoryRewriteDirective, messages: Sequence[LLMMessage]) -> str:
        request = next((_text(m) for m in messages if isinstance(m, UserMessage)), "")
        old, _, transcript = request.partition(TRANSCRIPT_HEADER)
        old = old.replace(MEMORY_HEADER, "", 1).strip()
        user_lines = [
            m.group(1) for m in re.finditer(r"^user:\s*(.*)$", transcript, flags=re.MULTILINE)
        ]
        return rewrite_notes(old, user_lines, directive.session_date, directive.budget_tokens)
