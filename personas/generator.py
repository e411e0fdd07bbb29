"""Seeded persona generation: Faker demographics, correlated preferences, fake sensitive facts.

Each persona draws from its own random stream (run seed, "persona", index), so a persona is the
same whichever shard, actor or process generates it. Preferences are chosen topic by topic:
demographic rules raise the prior of what is typical for the persona's group, implications of
the preferences already chosen are followed with their probability, exclusions are never
violated, and a configurable share of choices deliberately defies the demographic prior
(anti-stereotypical), as PersonaMem-v2's personas do.
"""

from __future__ import annotations

import random
import string
from datetime import datetime

from faker import Faker
from pydantic import BaseModel, ConfigDict, Field, model_validator

from personasim.personas.catalog import Topic, TopicCatalog
from personasim.personas.correlations import CorrelationGraph, node, parse_node
from personasim.personas.models import Demographics, Person, Persona, Polarity, Preference, SensitiveFacts, Stereotype
from personasim.personas.others import TopicPool, generate_people, topic_pool
from personasim.personas.seeding import derive_seed, rng_for

_COUNTRY_BY_LOCALE = {
    "en_US": "United States",
    "en_GB": "United Kingdom",
    "en_CA": "Canada",
    "en_AU": "Australia",
    "en_IN": "India",
    "en_IE": "Ireland",
    "en_NZ": "New Zealand",
}
_GENDERS = ("woman", "man", "non-binary")
_GENDER_WEIGHTS = (0.48, 0.48, 0.04)


class PopulationConfig(BaseModel):
    """How many users, and how rich each persona is."""

    model_config = ConfigDict(extra="forbid")

    users: int = Field(default=24, ge=1, description="Number of simulated users.")
    min_preferences: int = Field(default=20, ge=1, description="Fewest preferences a persona holds.")
    max_preferences: int = Field(default=40, ge=1, description="Most preferences a persona holds.")
    locales: list[str] = Field(
        default_factory=lambda: ["en_US", "en_GB", "en_CA", "en_AU", "en_IN"],
        min_length=1,
        description="Faker locales to draw demographics from.",
    )
    anti_stereotype_share: float = Field(
        default=0.15, ge=0.0, le=1.0, description="Share of demographically typical choices deliberately defied."
    )
    stereotype_topic_share: float = Field(
        default=0.4, ge=0.0, le=1.0, description="Chance a topic with a demographic prior is always included."
    )
    max_likes_per_topic: int = Field(default=3, ge=1, description="Liked options per multi-choice topic.")
    max_dislikes_per_topic: int = Field(default=2, ge=0, description="Disliked options per multi-choice topic.")
    min_people: int = Field(default=2, ge=0, description="Fewest people in a user's life (partner, kid, friend ...).")
    max_people: int = Field(
        default=3, ge=0, description="Most people in a user's life; 0 with min_people 0 turns others off."
    )
    min_others_preferences: int = Field(default=2, ge=1, description="Fewest preferences each of those people holds.")
    max_others_preferences: int = Field(default=4, ge=1, description="Most preferences each of those people holds.")

    @model_validator(mode="after")
    def _range(self) -> PopulationConfig:
        if self.min_preferences > self.max_preferences:
            raise ValueError("min_preferences must not exceed max_preferences")
        if self.min_people > self.max_people:
            raise ValueError("min_people must not exceed max_people")
        if self.min_others_preferences > self.max_others_preferences:
            raise ValueError("min_others_preferences must not exceed max_others_preferences")
        unknown = [loc for loc in self.locales if loc not in _COUNTRY_BY_LOCALE]
        if unknown:
            raise ValueError(f"unsupported locale(s) {unknown}; choose from {sorted(_COUNTRY_BY_LOCALE)}")
        return self


def persona_id_for(index: int) -> str:
    return f"p{index:07d}"


def preference_id_for(persona_id: str, topic: str, option: str, version: int) -> str:
    """Deterministic id; ``version`` counts how many preferences this persona has had on ``topic``."""
    return f"{persona_id}/{topic}/{option}#{version}"


class PersonaGenerator:
    """Generates persona ``index`` of a population, identically on every call and every machine."""

    def __init__(
        self, catalog: TopicCatalog, config: PopulationConfig, seed: int, correlations: CorrelationGraph | None = None
    ) -> None:
        self.catalog = catalog
        self.config = config
        self.seed = seed
        if correlations is None:
            from personasim.personas.correlations import load_correlations

            correlations = load_correlations(catalog)
        self.graph = correlations
        self._fakers: dict[str, Faker] = {}
        self._topics = sorted(catalog.topics, key=lambda t: t.id)
        self._topic_ids = [t.id for t in self._topics]
        self._likes_nodes = {t.id: [node(t.id, o.id, "likes") for o in t.options] for t in self._topics}
        self._first_statement: dict[str, str] = {}
        self._others_pool: TopicPool | None = None

    def _faker(self, locale: str) -> Faker:
        if locale not in self._fakers:
            self._fakers[locale] = Faker(locale)
        return self._fakers[locale]

    # -- public -----------------------------------------------------------------------------
    def generate(self, index: int, start: datetime) -> Persona:
        rng = rng_for(self.seed, "persona", index)
        persona_id = persona_id_for(index)
        locale = rng.choice(self.config.locales)
        fake = self._faker(locale)
        fake.seed_instance(derive_seed(self.seed, "faker", index))
        demographics = Demographics(
            locale=locale,
            name=fake.name(),
            age=rng.randint(18, 84),
            gender=rng.choices(_GENDERS, weights=_GENDER_WEIGHTS)[0],
            occupation=fake.job(),
            city=fake.city(),
            country=_COUNTRY_BY_LOCALE[locale],
        )
        chosen = self._choose(demographics, rng)
        preferences = [self._preference(persona_id, key, stereo, rng, start) for key, stereo in chosen]
        facts = self._sensitive_facts(fake, rng, demographics, preferences)
        people, others = self._people(fake, index, persona_id, demographics, start)
        return Persona(
            id=persona_id, index=index, demographics=demographics, preferences=preferences, sensitive_facts=facts,
            people=people, others_preferences=others,
        )

    def _people(
        self, fake: Faker, index: int, persona_id: str, demographics: Demographics, start: datetime
    ) -> tuple[list[Person], list[Preference]]:
        """Drawn last, from the ``others`` streams: whatever they draw, the user's own persona is unchanged."""
        cfg = self.config
        if cfg.max_people == 0:
            return [], []
        if self._others_pool is None:
            self._others_pool = topic_pool(self.catalog)
        return generate_people(
            self.catalog, fake, self.seed, index, persona_id, demographics, start,
            (cfg.min_people, cfg.max_people), (cfg.min_others_preferences, cfg.max_others_preferences),
            self._others_pool,
        )

    # -- preference choice ---------------------------------------------------------------------
    def _choose(self, demographics: Demographics, rng: random.Random) -> list[tuple[str, Stereotype]]:
        cfg = self.config
        target = rng.randint(cfg.min_preferences, cfg.max_preferences)
        prior: dict[str, float] = {}
        typical: set[str] = set()
        for rule in self.graph.rules_for(demographics):
            for n in rule.prefer:
                prior[n] = prior.get(n, 0.0) + rule.weight
                typical.add(n)
        typical_topics = {parse_node(n)[0] for n in typical}
        # a demographic prior makes a topic likely to come up, not certain: personas stay varied
        early = [t for t in sorted(typical_topics) if rng.random() < self.config.stereotype_topic_share]
        chosen: dict[str, Stereotype] = {}
        blocked: set[str] = set()
        forced: dict[str, list[str]] = {}
        # Each topic gives at least one preference, so `target` topics suffice; sampling them is
        # far cheaper than shuffling all. Topics with a demographic prior come first, so
        # stereotypes (and their defiance) show up.
        sampled = rng.sample(self._topic_ids, min(target, len(self._topic_ids)))
        queue = early + [t for t in sampled if t not in early]
        decided: set[str] = set()
        while len(chosen) < target:
            if not queue:
                rest = [t for t in self._topic_ids if t not in decided]
                if not rest:
                    break
                queue = rng.sample(rest, len(rest))
            topic_id = queue.pop(0)
            if topic_id in decided:
                continue
            decided.add(topic_id)
            picks = self._pick_for_topic(
                self.catalog.topic(topic_id), prior, typical, typical_topics, blocked, forced.pop(topic_id, []), rng,
                room=target - len(chosen),
            )
            for key, stereo in picks:
                chosen[key] = stereo
                excluded = self.graph.excluded(key)
                if excluded:
                    blocked |= excluded
                for implied, probability in self.graph.implied(key):
                    t_id = parse_node(implied)[0]
                    if t_id not in decided and implied not in blocked and rng.random() < probability:
                        forced.setdefault(t_id, []).append(implied)
                        queue.insert(0, t_id)
        return list(chosen.items())

    def _pick_for_topic(
        self, topic: Topic, prior: dict[str, float], typical: set[str], typical_topics: set[str],
        blocked: set[str], forced: list[str], rng: random.Random, room: int,
    ) -> list[tuple[str, Stereotype]]:
        cfg = self.config
        likes_nodes = self._likes_nodes[topic.id]
        has_prior = topic.id in typical_topics
        typical_here = [n for n in likes_nodes if n in typical] if has_prior else []
        defy = bool(typical_here) and rng.random() < cfg.anti_stereotype_share
        picks: list[str] = [n for n in forced if n not in blocked]
        if topic.exclusive:
            if not any(n.endswith(":likes") for n in picks):
                candidates = [n for n in likes_nodes if n not in blocked and not (defy and n in typical_here)]
                if candidates:
                    if has_prior and not defy:
                        weights = [1.0 + prior.get(n, 0.0) for n in candidates]
                        picks.append(rng.choices(candidates, weights=weights)[0])
                    else:
                        picks.append(candidates[rng.randrange(len(candidates))])
            picks = [n for n in picks if n.endswith(":likes")][:1]
        else:
            n_likes = rng.randint(1, cfg.max_likes_per_topic)
            n_dislikes = 0 if topic.likes_only else rng.randint(0, cfg.max_dislikes_per_topic)
            used = {parse_node(n)[1] for n in picks}
            pool = [n for n in likes_nodes if n not in blocked and parse_node(n)[1] not in used]
            want = max(0, n_likes - sum(n.endswith(":likes") for n in picks))
            if has_prior and not defy:
                while pool and want:
                    n = rng.choices(pool, weights=[1.0 + prior.get(x, 0.0) for x in pool])[0]
                    pool.remove(n)
                    picks.append(n)
                    want -= 1
            else:
                if defy:
                    pool = [n for n in pool if n not in typical_here]
                picks += rng.sample(pool, min(want, len(pool)))
            used = {parse_node(n)[1] for n in picks}
            dislike_pool = [
                n for n in (x[:-6] + ":dislikes" for x in likes_nodes)
                if parse_node(n)[1] not in used and n not in blocked
            ]
            if defy:  # defying the group: dislike what is typical for it
                defiant = [n.replace(":likes", ":dislikes") for n in typical_here]
                dislike_pool = [n for n in defiant if n in dislike_pool] or dislike_pool
            picks += rng.sample(dislike_pool, min(n_dislikes, len(dislike_pool)))
        picks = picks[: max(room, 1)]
        if not has_prior:
            return [(n, "neutral") for n in picks]
        return [(n, self._stereotype(n, topic, typical)) for n in picks]

    @staticmethod
    def _stereotype(n: str, topic: Topic, typical: set[str]) -> Stereotype:
        t, option, polarity = parse_node(n)
        if n in typical:
            return "stereotypical"
        if polarity == "dislikes" and node(t, option, "likes") in typical:
            return "anti_stereotypical"
        if polarity == "likes" and topic.exclusive and any(node(t, o.id, "likes") in typical for o in topic.options):
            return "anti_stereotypical"
        return "neutral"

    def _preference(
        self, persona_id: str, key: str, stereo: Stereotype, rng: random.Random, start: datetime
    ) -> Preference:
        topic_id, option_id, polarity = parse_node(key)
        topic = self.catalog.topic(topic_id)
        statement = self._first_statement.get(key)
        if statement is None:
            statement = self._first_statement[key] = self.catalog.statements(topic_id, option_id, polarity)[0]  # type: ignore[arg-type]
        return Preference(
            id=preference_id_for(persona_id, topic_id, option_id, 0),
            persona_id=persona_id,
            domain=topic.domain,
            topic=topic_id,
            option=option_id,
            statement=statement,
            polarity=Polarity(polarity),
            strength=round(rng.uniform(0.4, 1.0), 3),
            sensitive=topic.sensitive,
            sensitivity=topic.sensitivity,
            stereotype=stereo,
            valid_from=start,
            valid_to=None,
        )

    # -- sensitive facts ---------------------------------------------------------------------
    @staticmethod
    def _sensitive_facts(
        fake: Faker, rng: random.Random, demographics: Demographics, preferences: list[Preference]
    ) -> SensitiveFacts:
        digits = string.digits
        handle = ".".join(demographics.name.lower().replace("'", "").split()[-2:])
        return SensitiveFacts(
            address=f"{fake.street_address()}, {demographics.city}",
            phone=fake.phone_number(),
            email=f"{handle}{rng.randint(1, 99)}@{fake.free_email_domain()}",
            national_id="".join(rng.choices(digits, k=3)) + "-" + "".join(rng.choices(digits, k=2)) + "-"
            + "".join(rng.choices(digits, k=4)),
            passport_number=rng.choice(string.ascii_uppercase) + "".join(rng.choices(digits, k=8)),
            credit_card=" ".join("".join(rng.choices(digits, k=4)) for _ in range(4)),
            bank_account="".join(rng.choices(digits, k=10)),
            api_key="sk-" + "".join(rng.choices(string.ascii_letters + digits, k=32)),
            health_facts=[p.statement for p in preferences if p.sensitivity == "health" and p.polarity == "likes"],
        )
