"""Pydantic models of the persona truth: preferences with validity intervals, drift events,
forgetting requests and fake sensitive facts."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter


class Polarity(StrEnum):
    LIKES = "likes"
    DISLIKES = "dislikes"


Stereotype = Literal["stereotypical", "anti_stereotypical", "neutral"]
Relation = Literal["partner", "child", "sister", "brother", "mother", "father", "friend", "colleague", "roommate"]

#: ``Preference.owner`` of the user's own preferences; others' are ``<relation>:<name>``.
SELF = "self"
#: Marks the owner segment of another person's preference id: ``<persona>/@<owner>/<topic>/<option>#<v>``.
_OWNER_MARK = "/@"


def others_preference_id(persona_id: str, owner: str, topic: str, option: str, version: int = 0) -> str:
    """Deterministic id of a preference held by someone in the user's life; it names the owner, so
    it can never collide with the user's own ``<persona>/<topic>/<option>#<v>``."""
    return f"{persona_id}{_OWNER_MARK}{owner}/{topic}/{option}#{version}"


def owner_of_id(preference_id: str) -> str:
    """The owner a preference id names (``self`` for the user's own)."""
    at = preference_id.find(_OWNER_MARK)
    if at < 0:
        return SELF
    return preference_id[at + len(_OWNER_MARK):].split("/", 1)[0]
DriftKind = Literal["topic_swap", "life_event", "gradual", "reversal", "seasonal", "exposure"]


@dataclass(slots=True)
class Preference:
    """One preference held over ``[valid_from, valid_to)``; ``valid_to=None`` means still held.

    A preference is a polarity on one option of a topic (likes ``favorite_cuisine/thai``). When
    drift changes it, the old object is closed (``valid_to`` set) and a new one opened, so the full
    history stays queryable and ``PersonaTimeline.at(t)`` stays exact.

    ``owner`` is ``self`` for the user's own preferences; a person in the user's life (see
    :class:`Person`) owns theirs as ``<relation>:<name>`` (``sister:Anna``), and their ids say so.

    A slotted dataclass rather than a pydantic model: a population holds millions of these, and
    this costs a quarter of the memory. Pydantic still validates it wherever it crosses a boundary
    (inside ``Persona``, or through ``PREFERENCE_ADAPTER``).
    """

    id: str
    persona_id: str
    domain: str
    topic: str
    option: str
    statement: str
    polarity: Polarity
    strength: Annotated[float, Field(ge=0.0, le=1.0)]
    sensitive: bool = False
    sensitivity: str | None = None
    stereotype: Stereotype = "neutral"
    valid_from: datetime = datetime.min
    valid_to: datetime | None = None
    owner: str = SELF

    def __post_init__(self) -> None:
        # The id names the owner, and is the truth: code that rebuilds preferences from the store
        # without reading ``owner`` (older readers) still keeps others' preferences apart.
        if self.owner == SELF and _OWNER_MARK in self.id:
            self.owner = owner_of_id(self.id)

    @property
    def is_own(self) -> bool:
        """Held by the user, not by someone in the user's life."""
        return self.owner == SELF

    def held_at(self, t: datetime) -> bool:
        return self.valid_from <= t and (self.valid_to is None or t < self.valid_to)

    @property
    def key(self) -> str:
        """``topic/option:polarity``: the node of this preference in the correlation graph."""
        return f"{self.topic}/{self.option}:{self.polarity.value}"

    def copy(self) -> Preference:
        return replace(self)

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in PREFERENCE_FIELDS}


PREFERENCE_FIELDS = tuple(f.name for f in fields(Preference))
PREFERENCE_ADAPTER: TypeAdapter[Preference] = TypeAdapter(Preference)


class DriftEvent(BaseModel):
    """A change of preference at ``time``: which model made it, and the cause that explains it."""

    id: str
    persona_id: str
    time: datetime
    kind: DriftKind = "topic_swap"
    cause: str
    topic: str
    old: Preference | None = Field(default=None, description="None when the preference is newly acquired.")
    new: Preference | None = Field(default=None, description="None when the preference was dropped.")


class ForgetRequest(BaseModel):
    """The user asked the assistant to forget a preference: later memories must not hold it."""

    id: str
    persona_id: str
    time: datetime
    preference_id: str
    topic: str


class SensitiveFacts(BaseModel):
    """Fake, Faker-generated identifiers a user may mention in passing; memories must not leak them."""

    address: str
    phone: str
    email: str
    national_id: str
    passport_number: str
    credit_card: str
    bank_account: str
    api_key: str
    health_facts: list[str] = Field(default_factory=list)

    def values(self) -> dict[str, str]:
        out = {k: v for k, v in self.model_dump().items() if isinstance(v, str)}
        out.update({f"health_fact_{i}": v for i, v in enumerate(self.health_facts)})
        return out


class Demographics(BaseModel):
    """Faker-generated, seeded demographics; ``locale`` is the Faker locale used."""

    locale: str
    name: str
    age: int = Field(ge=0, le=120)
    gender: str
    occupation: str
    city: str
    country: str

    @property
    def life_stage(self) -> str:
        if self.age < 30:
            return "young_adult"
        if self.age < 50:
            return "adult"
        if self.age < 65:
            return "midlife"
        return "senior"


class Person(BaseModel):
    """Someone in the user's life (PersonaMem-v2's ``who = others``), with preferences of their own.

    ``owner`` is the key their preferences carry; ``gender`` only picks pronouns for the
    sentences that talk about them."""

    relation: Relation
    name: str
    gender: str = "non-binary"

    @property
    def owner(self) -> str:
        return f"{self.relation}:{self.name}"

    @property
    def title(self) -> str:
        """How the user refers to them: "sister", "partner", "kid" (gender-free for a child)."""
        return "kid" if self.relation == "child" else self.relation

    @property
    def mention(self) -> str:
        """"sister Anna", to follow "my " or "your "."""
        return f"{self.title} {self.name}"

    @property
    def pronouns(self) -> dict[str, str]:
        """Subject, object, possessive, reflexive, and the forms of *to be* that agree with them."""
        if self.gender == "woman":
            return {"subj": "she", "obj": "her", "poss": "her", "refl": "herself", "is": "is", "was": "was"}
        if self.gender == "man":
            return {"subj": "he", "obj": "him", "poss": "his", "refl": "himself", "is": "is", "was": "was"}
        return {"subj": "they", "obj": "them", "poss": "their", "refl": "themselves", "is": "are", "was": "were"}


def person_of(people: list[Person], owner: str) -> Person | None:
    """The person an ``owner`` key names, if any."""
    return next((p for p in people if p.owner == owner), None)


class Persona(BaseModel):
    """A simulated user: who they are, and every preference they ever held.

    ``preferences`` holds the full history (closed and open intervals) of the user's own
    preferences; use :class:`~personasim.personas.timeline.PersonaTimeline` to ask what holds at
    a time. ``people`` are the people in the user's life and ``others_preferences`` theirs (each
    with its ``owner``), kept apart so that nothing which reasons about the user (drift, plans,
    scoring) can mistake a sister's taste for the user's. Drift never changes them.
    """

    id: str
    index: int = Field(ge=0)
    demographics: Demographics
    preferences: list[Preference]
    drift_events: list[DriftEvent] = Field(default_factory=list)
    forget_requests: list[ForgetRequest] = Field(default_factory=list)
    sensitive_facts: SensitiveFacts | None = None
    people: list[Person] = Field(default_factory=list)
    others_preferences: list[Preference] = Field(default_factory=list)
