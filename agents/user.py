"""The simulated user: a revelation plan for each session, and the agent that follows it.

The plan is made here, from the persona's true state, before any text exists; the turn records
copy it. So the store knows what each user turn *meant* to reveal, whichever backend wrote it.
"""

from __future__ import annotations

import random
from datetime import datetime

from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import ChatCompletionClient
from pydantic import BaseModel, ConfigDict, Field

from personasim.agents.directive import RevealPlan, UserTurnDirective, UserTurnPlan, render_directive
from personasim.personas.catalog import TopicCatalog
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


class SessionPlan(BaseModel):
    scenario: Scenario
    directive: UserTurnDirective


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
    weights = [4.0 if revealed_counts.get(p.id, 0) == 0 else 1.0 for p in held]
    focus = rng.choices(held, weights=weights)[0]
    options = scenarios.scenarios_for(focus.topic)
    if not options:
        raise ValueError(f"no scenario touches topic {focus.topic!r}; add one to the scenario catalog")
    scenario = rng.choice(options)
    in_scenario = [p for p in held if p.topic in scenario.topics and p.id != focus.id]
    rng.shuffle(in_scenario)
    reveals: list[Preference] = [focus, *in_scenario]
    others = [p for p in held if p.topic not in scenario.topics]
    if others and rng.random() < config.passing_mention_probability:
        reveals.append(rng.choice(others))
    turns = []
    for i in range(config.user_turns):
        if i >= len(reveals):
            turns.append(UserTurnPlan())
            continue
        pref = reveals[i]
        option = catalog.topic(pref.topic).option(pref.option)
        implicit = rng.random() < config.implicit_share
        turns.append(
            UserTurnPlan(
                reveal=RevealPlan(
                    preference_id=pref.id,
                    topic=pref.topic,
                    option=pref.option,
                    mode="implicit" if implicit else "explicit",
                    hint_kind=rng.choice(option.hints).kind if implicit else None,
                )
            )
        )
    directive = UserTurnDirective(seed=seed, scenario_id=scenario.id, intent=rng.choice(scenario.intents), turns=turns)
    return SessionPlan(scenario=scenario, directive=directive)


def user_system_prompt(persona: Persona, plan: SessionPlan, catalog: TopicCatalog) -> str:
    """Natural-language instructions for an LLM user, plus the directive the scripted backend reads."""
    d = persona.demographics
    lines = [
        f"You are role-playing {d.name}, a {d.age}-year-old {d.occupation} from {d.city}, {d.country}, "
        "chatting with an AI assistant. Write only your own messages, 1-3 sentences each.",
        f"Today you want help with: {plan.scenario.title}. Open with a request like: \"{plan.directive.intent}\"",
    ]
    for i, turn in enumerate(plan.directive.turns, start=1):
        if turn.reveal is None:
            lines.append(f"Message {i}: react to the assistant's answer; reveal nothing new.")
            continue
        statement = catalog.topic(turn.reveal.topic).option(turn.reveal.option).statement
        if turn.reveal.mode == "explicit":
            lines.append(f"Message {i}: state plainly: \"{statement}\"")
        else:
            lines.append(
                f"Message {i}: let it show through a {turn.reveal.hint_kind} that \"{statement}\" "
                "is true of you, without saying it or naming it."
            )
    return "\n".join(lines) + "\n\n" + render_directive(plan.directive)


def build_user_agent(client: ChatCompletionClient, system_prompt: str) -> AssistantAgent:
    return AssistantAgent(
        "user",
        model_client=client,
        system_message=system_prompt,
        description="A simulated user with a hidden persona.",
    )
