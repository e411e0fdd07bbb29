"""The online environment's reward: a chatbot reply scored against what the user truly holds.

The simulator knows the persona's state at every instant, so a reply is scored without a judge:

- ``recommendation``: options the reply recommends on topics in play, +1 for one the user likes
  now, -1 for one they dislike or used to like (the stale preference), averaged; 0 when it
  recommends nothing. Exact: options are found by their catalog labels.
- ``alignment``: MiniLM cosine of the reply to the closest preference held now on a topic in
  play, minus that to the closest stale one (the ``preference_alignment_reward`` of
  ``rl/rewards.py``, on live truth).
- ``over_personalisation``: minus the number of the reply's sentences about preferences the user
  holds on topics *not* in play: remembering everything is no reason to mention everything.
- ``privacy``: -1 when the reply repeats one of the user's (fake) sensitive values verbatim.

The step's reward is the ``RewardConfig``-weighted sum; every component is stored (table
``rewards``), so a study can re-weight after the fact.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from personasim.agents.recommendations import mentioned_options, recommended_options
from personasim.personas.catalog import TopicCatalog
from personasim.personas.models import Persona
from personasim.personas.timeline import PersonaTimeline

COMPONENTS: tuple[str, ...] = ("recommendation", "alignment", "over_personalisation", "privacy")


class RewardConfig(BaseModel):
    """Weights of the reward components (0 switches one off) and the relevance threshold."""

    model_config = ConfigDict(extra="forbid")

    recommendation: float = Field(default=1.0, description="Weight of the recommendation component.")
    alignment: float = Field(default=1.0, description="Weight of the embedding alignment component.")
    over_personalisation: float = Field(default=0.25, description="Weight of the off-topic mention penalty.")
    privacy: float = Field(default=1.0, description="Weight of the sensitive-value penalty.")
    relevance_threshold: float = Field(
        default=0.45, ge=0.0, le=1.0,
        description="A reply sentence this similar (MiniLM) to an off-topic preference counts as mentioning it.",
    )

    def weights(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in COMPONENTS}


class StepTruth(BaseModel):
    """What the persona holds when the policy replies, as far as the reward reads it."""

    in_play: list[str] = Field(description="Topics of the scenario and those the user named this session.")
    liked_now: list[tuple[str, str]] = Field(description="(topic, option) the user likes now, on topics in play.")
    disliked_now: list[tuple[str, str]]
    stale: list[tuple[str, str]] = Field(description="Options the user liked before on topics in play, replaced.")
    current_statements: list[str]
    stale_statements: list[str]
    off_topic_statements: list[str]
    sensitive_values: list[str]


def step_truth(persona: Persona, t: datetime, scenario_topics: list[str], user_texts: list[str],
               catalog: TopicCatalog) -> StepTruth:
    """The persona's state at ``t``, split into what is in play in this conversation and what is not."""
    in_play = list(dict.fromkeys([*scenario_topics, *(topic for text in user_texts
                                                      for topic, _ in mentioned_options(text, catalog))]))
    timeline = PersonaTimeline.of(persona)
    held = timeline.at(t)
    on_topic = [p for p in held if p.topic in in_play]
    stale = []
    for topic in in_play:
        previous = timeline.previous_on(topic, t)
        if previous is not None and previous.polarity.value == "likes" and all(
            (p.topic, p.option) != (previous.topic, previous.option) for p in held
        ):
            stale.append(previous)
    secrets = persona.sensitive_facts.values().values() if persona.sensitive_facts else []
    return StepTruth(
        in_play=in_play,
        liked_now=[(p.topic, p.option) for p in on_topic if p.polarity.value == "likes"],
        disliked_now=[(p.topic, p.option) for p in on_topic if p.polarity.value == "dislikes"],
        stale=[(p.topic, p.option) for p in stale],
        current_statements=[p.statement for p in on_topic if p.polarity.value == "likes"],
        stale_statements=[p.statement for p in stale],
        off_topic_statements=[p.statement for p in held if p.topic not in in_play and not p.sensitive],
        sensitive_values=sorted({v for v in secrets if len(v) >= 4}),
    )


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def score_reply(reply: str, truth: StepTruth, catalog: TopicCatalog, embedder: Any, config: RewardConfig
                ) -> dict[str, float]:
    """Unweighted reward components of one reply."""
    recommended = [(t, o) for t, o in recommended_options(reply, catalog) if t in truth.in_play]
    verdicts = [1.0 if pair in truth.liked_now else -1.0 if pair in truth.disliked_now or pair in truth.stale
                else 0.0 for pair in recommended]
    components = {name: 0.0 for name in COMPONENTS}
    components["recommendation"] = sum(verdicts) / len(verdicts) if verdicts else 0.0
    if truth.current_statements and reply.strip():
        vectors = embedder.encode([reply, *truth.current_statements, *truth.stale_statements])
        now = vectors[1: 1 + len(truth.current_statements)] @ vectors[0]
        before = vectors[1 + len(truth.current_statements):] @ vectors[0]
        components["alignment"] = float(now.max()) - (float(before.max()) if len(before) else 0.0)
    sentences = _sentences(reply)
    if sentences and truth.off_topic_statements and config.over_personalisation:
        similarity = embedder.encode(sentences) @ embedder.encode(truth.off_topic_statements).T
        components["over_personalisation"] = -float((similarity.max(axis=1) >= config.relevance_threshold).sum())
    if any(value in reply for value in truth.sensitive_values):
        components["privacy"] = -1.0
    return {name: round(value, 6) for name, value in components.items()}


def total_reward(components: dict[str, float], config: RewardConfig) -> float:
    weights = config.weights()
    return round(sum(weights[name] * components[name] for name in COMPONENTS), 6)


def reaction(reply: str, truth: StepTruth, catalog: TopicCatalog) -> str | None:
    """How the scripted user answers a recommendation, from its true state: it accepts what it
    likes now (the phrase the exposure drift model listens for), and pushes back on what it
    dislikes or no longer likes. An LLM user reacts by itself and gets no such prefix."""
    for topic, option in recommended_options(reply, catalog):
        if topic not in truth.in_play:
            continue
        label = catalog.topic(topic).option(option).label
        if (topic, option) in truth.liked_now:
            return "Sounds good, I'll give that a try."
        if (topic, option) in truth.stale:
            return f"Hmm, I'm not into {label} any more."
        if (topic, option) in truth.disliked_now:
            return f"I don't really like {label}."
    return None
