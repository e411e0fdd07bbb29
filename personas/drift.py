"""Drift models: how a persona's preferences change between sessions.

A drift model mutates the persona in one way only: it closes a preference's validity interval
and opens a replacement, recording a :class:`DriftEvent` with its cause. The timeline stays exact
because nothing else ever edits preferences.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from personasim.personas.catalog import TopicCatalog
from personasim.personas.generator import preference_id_for
from personasim.personas.models import DriftEvent, Persona, Preference

DEFAULT_CAUSES = (
    "tried something new and liked it better",
    "changed circumstances at home",
    "a friend's recommendation",
    "advice from a professional",
    "a tighter budget",
    "moved to a new neighbourhood",
    "got bored of the old routine",
)


class DriftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Literal["topic_swap"] = "topic_swap"
    probability: float = Field(
        default=0.06,
        ge=0.0,
        le=1.0,
        description="Chance that each held preference is replaced between two sessions.",
    )
    causes: list[str] = Field(default_factory=lambda: list(DEFAULT_CAUSES), min_length=1)


class DriftModel(Protocol):
    def apply_between(
        self, persona: Persona, start: datetime, end: datetime, rng: random.Random
    ) -> list[DriftEvent]:
        """Apply drift in ``(start, end)`` to ``persona`` and return the new events."""
        ...


class TopicSwapDrift:
    """Each held preference may be replaced by another option of the same topic."""

    def __init__(self, catalog: TopicCatalog, config: DriftConfig) -> None:
        self.catalog = catalog
        self.config = config

    def apply_between(
        self, persona: Persona, start: datetime, end: datetime, rng: random.Random
    ) -> list[DriftEvent]:
        if end <= start:
            return []
        events: list[DriftEvent] = []
        held = sorted((p for p in persona.preferences if p.valid_to is None), key=lambda p: p.topic)
        for old in held:
            if rng.random() >= self.config.probability:
                continue
            topic = self.catalog.topic(old.topic)
            alternatives = [o for o in topic.options if o.id != old.option]
            if not alternatives:
                continue
            option = rng.choice(alternatives)
            time = start + (end - start) * rng.uniform(0.05, 0.95)
            time = time.replace(microsecond=0)
            version = sum(1 for p in persona.preferences if p.topic == old.topic)
            new = Preference(
                id=preference_id_for(persona.id, old.topic, option.id, version),
                persona_id=persona.id,
                domain=old.domain,
                topic=old.topic,
                option=option.id,
                statement=option.statement,
                polarity=old.polarity,
                strength=round(rng.uniform(0.4, 1.0), 3),
                sensitive=old.sensitive,
                valid_from=time,
            )
            old.valid_to = time
            persona.preferences.append(new)
            event = DriftEvent(
                id=f"{persona.id}/drift/{len(persona.drift_events)}",
                persona_id=persona.id,
                time=time,
                cause=rng.choice(self.config.causes),
                topic=old.topic,
                old=old.model_copy(),
                new=new.model_copy(),
            )
            persona.drift_events.append(event)
            events.append(event)
        return events
