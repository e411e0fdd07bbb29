"""Seeded persona generation: Faker demographics plus one held option for a sample of topics.

Each persona draws from its own random stream (run seed, "persona", index), so a persona is the
same whichever shard, actor or process generates it.
"""

from __future__ import annotations

from datetime import datetime

from faker import Faker
from pydantic import BaseModel, ConfigDict, Field

from personasim.personas.catalog import TopicCatalog
from personasim.personas.models import Demographics, Persona, Polarity, Preference
from personasim.personas.seeding import derive_seed, rng_for

_COUNTRY_BY_LOCALE = {
    "en_US": "United States",
    "en_GB": "United Kingdom",
    "en_CA": "Canada",
    "en_AU": "Australia",
    "en_IN": "India",
    "de_DE": "Germany",
    "fr_FR": "France",
    "es_ES": "Spain",
    "it_IT": "Italy",
    "nl_NL": "Netherlands",
    "ja_JP": "Japan",
    "pt_BR": "Brazil",
}
_GENDERS = ("woman", "man", "non-binary")
_GENDER_WEIGHTS = (0.48, 0.48, 0.04)


class PopulationConfig(BaseModel):
    """How many users, and how rich each persona is."""
    model_config = ConfigDict(extra="forbid")


    users: int = Field(default=24, ge=1, description="Number of simulated users.")
    preferences_per_user: int = Field(
        default=8, ge=1, description="Topics on which each persona holds a preference."
    )
    locales: list[str] = Field(
        default_factory=lambda: ["en_US", "en_GB", "en_CA", "en_AU", "en_IN"],
        min_length=1,
        description="Faker locales to draw demographics from.",
    )


def persona_id_for(index: int) -> str:
    return f"p{index:06d}"


def preference_id_for(persona_id: str, topic: str, option: str, version: int) -> str:
    """Deterministic id; ``version`` counts how often this persona has held anything on ``topic``."""
    return f"{persona_id}/{topic}/{option}#{version}"


class PersonaGenerator:
    """Generates persona ``index`` of a population, identically on every call and every machine."""

    def __init__(self, catalog: TopicCatalog, config: PopulationConfig, seed: int) -> None:
        unknown = [loc for loc in config.locales if loc not in _COUNTRY_BY_LOCALE]
        if unknown:
            raise ValueError(
                f"unsupported locale(s) {unknown}; choose from {sorted(_COUNTRY_BY_LOCALE)}"
            )
        self.catalog = catalog
        self.config = config
        self.seed = seed
        self._fakers: dict[str, Faker] = {}

    def _faker(self, locale: str) -> Faker:
        if locale not in self._fakers:
            self._fakers[locale] = Faker(locale)
        return self._fakers[locale]

    def generate(self, index: int, start: datetime) -> Persona:
        rng = rng_for(self.seed, "persona", index)
        persona_id = persona_id_for(index)
        locale = rng.choice(self.config.locales)
        fake = self._faker(locale)
        fake.seed_instance(derive_seed(self.seed, "faker", index))
        demographics = Demographics(
            locale=locale,
            name=fake.name(),
            age=rng.randint(18, 79),
            gender=rng.choices(_GENDERS, weights=_GENDER_WEIGHTS)[0],
            occupation=fake.job(),
            city=fake.city(),
            country=_COUNTRY_BY_LOCALE[locale],
        )
        n_topics = min(self.config.preferences_per_user, len(self.catalog.topics))
        topics = rng.sample(self.catalog.topics, n_topics)
        preferences = []
        for topic in sorted(topics, key=lambda t: t.id):
            option = rng.choice(topic.options)
            preferences.append(
                Preference(
                    id=preference_id_for(persona_id, topic.id, option.id, 0),
                    persona_id=persona_id,
                    domain=topic.domain,
                    topic=topic.id,
                    option=option.id,
                    statement=option.statement,
                    polarity=Polarity.LIKES,
                    strength=round(rng.uniform(0.4, 1.0), 3),
                    sensitive=topic.sensitive,
                    valid_from=start,
                )
            )
        return Persona(id=persona_id, index=index, demographics=demographics, preferences=preferences)
