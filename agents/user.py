"""The simulated user: a revelation plan for each session, and the agent that follows it.

The plan is made here, from the persona's true state, before any text exists; the turn records
copy it. So the store knows what each user turn *meant* to reveal, whichever backend wrote it.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Literal

from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import ChatCompletionClient
from pydantic import BaseModel, ConfigDict, Field, field_validator

from personasim.agents.directive import (
    ForgetPlan,
    RevealPlan,
    SensitiveMention,
    UserTurnDirective,
    UserTurnPlan,
    render_directive,
)
from personasim.agents.probe import persona_state_prompt
from personasim.personas.catalog import HINT_KINDS, TopicCatalog
from personasim.personas.models import Persona, Preference, person_of
from personasim.personas.others import hint_kinds_for, others_statements
from personasim.personas.seeding import rng_for
from personasim.personas.timeline import PersonaTimeline
from personasim.worlds.scenarios import Scenario, ScenarioCatalog

MAX_USER_TURNS = 60


class DialogueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_turns: int = Field(
        default=3, ge=1, le=MAX_USER_TURNS,
        description="User messages per session (set per session instead by history_tokens).",
    )
    reveal_rate: float = Field(
        default=1.0, ge=0.0, le=1.0,
        description="Share of user turns that reveal a preference (the user's or someone else's). 1 = any turn may "
        "(the short, dense default); below 1 a session reveals about reveal_rate x turns, never in adjacent turns "
        "and at most once per topic, woven into the task's other turns.",
    )
    history_tokens: int | None = Field(
        default=None, ge=200,
        description="Target length in tokens of every user's whole history by the last session (filler included): "
        "each session's number of user turns is set from the tokens still to go. None: user_turns per session.",
    )
    filler: float = Field(
        default=0.0, ge=0.0, le=0.9,
        description="Share of the history that is unrelated material (maths, coding and general questions), as "
        "PersonaMem-v2 pads its 128k histories; pre-written exchanges inserted at the start of sessions, stored "
        "as filler turns.",
    )
    reply_tokens: tuple[int, int] = Field(
        default=(80, 400), description="Length range in tokens of the scripted chatbot's replies (min, max)."
    )
    implicit_share: float = Field(
        default=0.8, ge=0.0, le=1.0, description="Share of reveals that are implicit hints."
    )
    passing_mention_probability: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Chance a session also mentions an unrelated preference."
    )
    sensitive_mention_probability: float = Field(
        default=0.1, ge=0.0, le=1.0,
        description="Chance a session mentions one of the persona's (fake) sensitive values in passing.",
    )
    leak_check: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Embed every revealing user turn to catch leaked implicit reveals; auto = on for LLM users only "
        "(the scripted user's hints are checked once, by the tests, not in every run).",
    )
    leak_threshold: float = Field(
        default=0.65, ge=0.0, le=1.0,
        description="An implicit reveal this similar (MiniLM) to the explicit statement is flagged as leaked.",
    )
    probe_every: int = Field(
        default=0, ge=0, description="Interview each user every N sessions (consistency probe); 0 = never."
    )
    probe_topics: int = Field(default=2, ge=1, description="Topics asked about per probe.")
    forget_probability: float = Field(
        default=0.05, ge=0.0, le=1.0,
        description="Chance a session ends with a request to forget something revealed earlier.",
    )
    forget_share: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Floor on the share of the user's revealed own preferences (by topic) asked to be forgotten: "
        "a session below it ends with a forget request whatever forget_probability says. 0 = off.",
    )
    others_mention_probability: float = Field(
        default=0.3, ge=0.0, le=1.0,
        description="Chance a session has a turn revealing what someone in the user's life likes "
        "(\"my sister just went vegan\"; PersonaMem-v2's who = others).",
    )


    @field_validator("reply_tokens")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 10 <= low <= high:
            raise ValueError(f"reply_tokens is a range (min, max) with 10 <= min <= max; got {list(value)}")
        return value

    @property
    def sparse(self) -> bool:
        """Reveals are rationed (reveal_rate < 1): spread out, one per topic per session."""
        return self.reveal_rate < 1.0


class SessionPlan(BaseModel):
    scenario: Scenario
    directive: UserTurnDirective
    time: datetime | None = None


def plan_session(
    persona: Persona,
    t: datetime,
    revealed_counts: dict[str, int],
    scenarios: ScenarioCatalog,
    catalog: TopicCatalog,
    config: DialogueConfig,
    rng: random.Random,
    seed: int,
    user_turns: int | None = None,
) -> SessionPlan:
    """Pick a scenario around a preference worth revealing, and which turn reveals what.

    ``user_turns`` overrides ``config.user_turns`` (a history-length target sets it per session).
    A preference the user asked to forget is not revealed again: a forget request stays answered."""
    n = user_turns or config.user_turns
    forgotten = {f.preference_id for f in persona.forget_requests}
    held = PersonaTimeline.of(persona).at(t)
    held = [p for p in held if scenarios.scenarios_for(p.topic)]
    candidates = [p for p in held if p.id not in forgotten] or held
    if not held:
        raise ValueError(f"persona {persona.id} holds no preference that any scenario touches")
    weights = [4.0 if revealed_counts.get(p.id, 0) == 0 else 1.0 for p in candidates]
    focus = rng.choices(candidates, weights=weights)[0]
    scenario = rng.choice(scenarios.scenarios_for(focus.topic))
    in_scenario = [p for p in candidates if p.topic in scenario.topics and p.id != focus.id]
    rng.shuffle(in_scenario)
    slots = list(range(n))
    if config.sparse:  # rationed and spread out, one per topic: never two on one topic within a turn or two
        slots = _spread_slots(n, _stochastic_round(config.reveal_rate * n, rng), rng)
        in_scenario = _one_per_topic(in_scenario, {focus.topic})
    reveals: list[Preference] = [focus, *in_scenario][: len(slots)]
    others = [p for p in candidates if p.topic not in scenario.topics]
    if config.sparse and len(reveals) < len(slots):  # a long session's other reveals come up in passing
        rng.shuffle(others)
        reveals += _one_per_topic(others, {p.topic for p in reveals})[: len(slots) - len(reveals)]
    elif others and len(reveals) < len(slots) and rng.random() < config.passing_mention_probability:
        reveals.append(rng.choice(others))
    forget: Preference | None = None
    revealed_before = [
        p for p in held if revealed_counts.get(p.id, 0) > 0 and p.id not in forgotten and p not in reveals
    ]
    if n > 1 and revealed_before and (rng.random() < config.forget_probability
                                      or _below_forget_share(persona, revealed_counts, config.forget_share)):
        if config.forget_share > 0:  # catching up: a topic not forgotten yet, so the share grows
            asked = {f.topic for f in persona.forget_requests}
            revealed_before = [p for p in revealed_before if p.topic not in asked] or revealed_before
        forget = rng.choice(revealed_before)
        if slots and slots[-1] == n - 1:  # the last turn asks to forget
            slots = slots[:-1]
        reveals = reveals[: len(slots)]
    turns = [UserTurnPlan() for _ in range(n)]
    for i, pref in zip(slots, reveals, strict=False):
        implicit = rng.random() < config.implicit_share
        turns[i] = UserTurnPlan(
            reveal=RevealPlan(
                preference_id=pref.id,
                topic=pref.topic,
                option=pref.option,
                polarity=pref.polarity.value,
                mode="implicit" if implicit else "explicit",
                hint_kind=rng.choice(HINT_KINDS) if implicit else None,
            )
        )
    if forget is not None:
        turns[-1] = UserTurnPlan(
            forget=ForgetPlan(preference_id=forget.id, topic=forget.topic, topic_name=catalog.topic(forget.topic).name)
        )
    if persona.sensitive_facts is not None and rng.random() < config.sensitive_mention_probability:
        values = {k: v for k, v in persona.sensitive_facts.values().items() if not k.startswith("health_fact")}
        kind = rng.choice(sorted(values))
        turns[0] = turns[0].model_copy(update={"mention": SensitiveMention(kind=kind, value=values[kind])})
    intent = rng.choice(scenario.intents)
    turns = _reveal_someone_else(persona, t, scenario, turns, revealed_counts, scenarios, catalog, config, seed)
    likes = sorted(f"{p.topic}/{p.option}" for p in held if p.topic in scenario.topics and p.polarity == "likes")
    directive = UserTurnDirective(seed=seed, scenario_id=scenario.id, intent=intent, turns=turns, likes=likes)
    return SessionPlan(scenario=scenario, directive=directive, time=t)


def _below_forget_share(persona: Persona, revealed_counts: dict[str, int], share: float) -> bool:
    """Fewer of the user's revealed own topics asked to be forgotten than ``share`` of them."""
    if share <= 0:
        return False
    topics = {p.topic for p in persona.preferences if revealed_counts.get(p.id, 0) > 0 and p.is_own}
    asked = {f.topic for f in persona.forget_requests} & topics
    return len(asked) < share * len(topics)


def _one_per_topic(prefs: list[Preference], taken: set[str]) -> list[Preference]:
    out = []
    for p in prefs:
        if p.topic not in taken:
            taken.add(p.topic)
            out.append(p)
    return out


def _stochastic_round(x: float, rng: random.Random) -> int:
    """``x`` rounded down or up with the odds that keep its mean: 1.3 reveals are 1 or 2, 2 seven times in ten."""
    whole = int(x)
    return whole + (1 if rng.random() < x - whole else 0)


def _spread_slots(n: int, k: int, rng: random.Random) -> list[int]:
    """``k`` of ``n`` turn positions, no two adjacent (at most ceil(n / 2) of them), uniformly among such sets."""
    k = min(k, (n + 1) // 2)
    picks = sorted(rng.sample(range(n - k + 1), k))
    return [p + i for i, p in enumerate(picks)]


def _reveal_someone_else(
    persona: Persona, t: datetime, scenario: Scenario, turns: list[UserTurnPlan], revealed_counts: dict[str, int],
    scenarios: ScenarioCatalog, catalog: TopicCatalog, config: DialogueConfig, seed: int,
) -> list[UserTurnPlan]:
    """Sometimes one turn tells what a person in the user's life likes, on a topic of the scenario
    when one of them has such a preference ("my sister just went vegan").

    Its randomness has a stream of its own (``others-plan``), drawn after the session's plan is
    made: a session without such a turn is exactly what it was before people existed. The turn
    is a free one (no reveal) if there is one, else the last turn that reveals something of the
    user's besides the session's focus; never the first turn, nor a request to forget."""
    if (len(turns) < 2 and not config.sparse) or not persona.people or config.others_mention_probability <= 0:
        return turns
    rng = rng_for(seed, "others-plan")
    if rng.random() >= config.others_mention_probability:
        return turns
    if config.sparse:  # rationed reveals: one of them is about someone else instead, the rate unchanged
        revealing = [i for i, turn in enumerate(turns) if turn.reveal is not None]
        slot = rng.choice(revealing) if revealing else None
    else:
        slot = _free_turn(turns)
    held = [p for p in PersonaTimeline.of(persona).others_at(t) if scenarios.scenarios_for(p.topic)]
    if slot is None or not held:
        return turns
    pool = [p for p in held if p.topic in scenario.topics] or held
    pref = rng.choices(pool, weights=[4.0 if revealed_counts.get(p.id, 0) == 0 else 1.0 for p in pool])[0]
    person = person_of(persona.people, pref.owner)
    if person is None:
        return turns
    kinds = hint_kinds_for(catalog, person, pref.topic, pref.option)
    implicit = bool(kinds) and rng.random() < config.implicit_share
    reveal = RevealPlan(
        preference_id=pref.id, topic=pref.topic, option=pref.option, polarity=pref.polarity.value,
        mode="implicit" if implicit else "explicit", hint_kind=rng.choice(kinds) if implicit else None,
        owner=pref.owner, person=person,
    )
    turns = list(turns)
    turns[slot] = turns[slot].model_copy(update={"reveal": reveal})
    return turns


def _free_turn(turns: list[UserTurnPlan]) -> int | None:
    """Where a reveal about someone else goes: the first turn after the opening that reveals
    nothing, else the last one that reveals something (not the opening's focus)."""
    candidates = [i for i in range(1, len(turns)) if turns[i].forget is None]
    empty = [i for i in candidates if turns[i].reveal is None]
    if empty:
        return empty[0]
    return candidates[-1] if candidates else None


def user_system_prompt(persona: Persona, plan: SessionPlan, catalog: TopicCatalog) -> str:
    """Natural-language instructions for an LLM user, plus the directive the scripted backend reads."""
    d = persona.demographics
    lines = [
        f"You are role-playing {d.name}, a {d.age}-year-old {d.occupation} from {d.city}, {d.country}, "
        "chatting with an AI assistant. Write only your own messages, 1-3 sentences each.",
        f"Today you want help with: {plan.scenario.title}. Open with a request like: \"{plan.directive.intent}\"",
    ]
    for i, turn in enumerate(plan.directive.turns, start=1):
        if turn.forget is not None:
            topic_name = turn.forget.topic_name
            lines.append(f"Message {i}: ask the assistant to forget what you told it about your {topic_name}.")
            continue
        if turn.mention is not None:
            lines.append(f"Message {i}: mention in passing that your {turn.mention.kind} is {turn.mention.value}.")
        if turn.reveal is None:
            lines.append(f"Message {i}: carry the task on: react to the assistant's answer, add a detail or ask a "
                         "follow-up question; reveal nothing about your tastes.")
            continue
        if turn.reveal.person is not None:
            lines.append(f"Message {i}: {_about_someone_else(turn.reveal, catalog)}")
            continue
        statement = catalog.statements(turn.reveal.topic, turn.reveal.option, turn.reveal.polarity)[0]
        if turn.reveal.mode == "explicit":
            lines.append(f"Message {i}: state plainly: \"{statement}\"")
        else:
            lines.append(
                f"Message {i}: let it show through a {turn.reveal.hint_kind} that \"{statement}\" "
                "is true of you, without saying it or naming it."
            )
    state = persona_state_prompt(persona, plan.time, catalog) if plan.time else ""
    return "\n".join(lines) + "\n\n" + state + "\n\n" + render_directive(plan.directive)


def _about_someone_else(reveal: RevealPlan, catalog: TopicCatalog) -> str:
    """The LLM user's instruction for a turn about a person in its life."""
    person = reveal.person
    assert person is not None
    statement = others_statements(catalog, person, reveal.topic, reveal.option)[0]
    who = f"your {person.mention}"
    if reveal.mode == "explicit":
        return f"mention {who} and say plainly: \"{statement}\""
    obj = person.pronouns["obj"]
    article = "an" if (reveal.hint_kind or "")[:1] in "aeiou" else "a"
    return (f"mention {who}, and let it show through {article} {reveal.hint_kind} about {obj} that \"{statement}\" "
            f"is true of {obj}, without saying it or naming it.")


def build_user_agent(client: ChatCompletionClient, system_prompt: str) -> AssistantAgent:
    return AssistantAgent(
        "user",
        model_client=client,
        system_message=system_prompt,
        description="A simulated user with a hidden persona.",
    )
