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
from pydantic import BaseModel, ConfigDict, Field

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
from personasim.personas.models import Persona, Preference
from personasim.personas.timeline import PersonaTimeline
from personasim.worlds.scenarios import Scenario, ScenarioCatalog


class DialogueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_turns: int = Field(default=3, ge=1, le=20, description="User messages per session.")
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
) -> SessionPlan:
    """Pick a scenario around a preference worth revealing, and which turn reveals what."""
    held = PersonaTimeline.of(persona).at(t)
    held = [p for p in held if scenarios.scenarios_for(p.topic)]
    if not held:
        raise ValueError(f"persona {persona.id} holds no preference that any scenario touches")
    weights = [4.0 if revealed_counts.get(p.id, 0) == 0 else 1.0 for p in held]
    focus = rng.choices(held, weights=weights)[0]
    scenario = rng.choice(scenarios.scenarios_for(focus.topic))
    in_scenario = [p for p in held if p.topic in scenario.topics and p.id != focus.id]
    rng.shuffle(in_scenario)
    reveals: list[Preference] = [focus, *in_scenario][: config.user_turns]
    others = [p for p in held if p.topic not in scenario.topics]
    if others and len(reveals) < config.user_turns and rng.random() < config.passing_mention_probability:
        reveals.append(rng.choice(others))
    forget: Preference | None = None
    forgotten = {f.preference_id for f in persona.forget_requests}
    revealed_before = [
        p for p in held if revealed_counts.get(p.id, 0) > 0 and p.id not in forgotten and p not in reveals
    ]
    if config.user_turns > 1 and revealed_before and rng.random() < config.forget_probability:
        forget = rng.choice(revealed_before)
        reveals = reveals[: config.user_turns - 1]
    turns = []
    for i in range(config.user_turns):
        if i >= len(reveals):
            turns.append(UserTurnPlan())
            continue
        pref = reveals[i]
        implicit = rng.random() < config.implicit_share
        turns.append(
            UserTurnPlan(
                reveal=RevealPlan(
                    preference_id=pref.id,
                    topic=pref.topic,
                    option=pref.option,
                    polarity=pref.polarity.value,
                    mode="implicit" if implicit else "explicit",
                    hint_kind=rng.choice(HINT_KINDS) if implicit else None,
                )
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
    directive = UserTurnDirective(seed=seed, scenario_id=scenario.id, intent=rng.choice(scenario.intents), turns=turns)
    return SessionPlan(scenario=scenario, directive=directive, time=t)


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
            lines.append(f"Message {i}: react to the assistant's answer; reveal nothing new.")
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


def build_user_agent(client: ChatCompletionClient, system_prompt: str) -> AssistantAgent:
    return AssistantAgent(
        "user",
        model_client=client,
        system_message=system_prompt,
        description="A simulated user with a hidden persona.",
    )
