"""Pydantic models of the persona truth: preferences with validity intervals and drift events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Polarity(StrEnum):
    LIKES = "likes"
    DISLIKES = "dislikes"


class Preference(BaseModel):
    """One preference held over ``[valid_from, valid_to)``; ``valid_to=None`` means still held.

    A preference is one option of a topic (e.g. topic ``diet_style``, option ``vegan``). When drift
    replaces it, the old object is closed (``valid_to`` set) and a new one is opened, so the full
    history stays queryable.
    """

    model_config = ConfigDict(frozen=False)

    id: str
    persona_id: str
    domain: str
    topic: str
    option: str
    statement: str
    polarity: Polarity = Polarity.LIKES
    strength: float = Field(ge=0.0, le=1.0)
    sensitive: bool = False
    valid_from: datetime
    valid_to: datetime | None = None

    def held_at(self, t: datetime) -> bool:
        return self.valid_from <= t and (self.valid_to is None or t < self.valid_to)


class DriftEvent(BaseModel):
    """A change of preference at ``time``, with the cause that explains it."""

    id: str
    persona_id: str
    time: datetime
    cause: str
    topic: str
    old: Preference
    new: Preference


class Demographics(BaseModel):
    """Faker-generated, seeded demographics; ``locale`` is the Faker locale used."""

    locale: str
    name: str
    age: int = Field(ge=0, le=120)
    gender: str
    occupation: str
    city: str
    country: str


class Persona(BaseModel):
    """A simulated user: who they are, and every preference they ever held.

    ``preferences`` holds the full history (closed and open intervals); use
    :class:`~personasim.personas.timeline.PersonaTimeline` to ask what holds at a time.
    """

    id: str
    index: int = Field(ge=0)
    demographics: Demographics
    preferences: list[Preference]
    drift_events: list[DriftEvent] = Field(default_factory=list)
