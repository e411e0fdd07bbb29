from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from personasim.personas import (
    DriftConfig,
    PersonaGenerator,
    PersonaTimeline,
    PopulationConfig,
    TopicSwapDrift,
    load_topic_catalog,
    rng_for,
)

START = datetime(2025, 1, 6, 9)


def _generator(seed: int = 3, prefs: int = 8) -> PersonaGenerator:
    return PersonaGenerator(load_topic_catalog(), PopulationConfig(users=10, preferences_per_user=prefs), seed)


def test_generation_is_deterministic_and_seed_dependent():
    a = _generator(3).generate(5, START)
    b = _generator(3).generate(5, START)
    c = _generator(4).generate(5, START)
    assert a == b
    assert a != c
    assert len(a.preferences) == 8
    assert len({p.topic for p in a.preferences}) == 8


def test_demographics_come_from_faker_with_a_configured_locale():
    gen = PersonaGenerator(load_topic_catalog(), PopulationConfig(locales=["de_DE"]), 1)
    persona = gen.generate(0, START)
    assert persona.demographics.locale == "de_DE"
    assert persona.demographics.country == "Germany"
    assert persona.demographics.name


def test_timeline_at_before_and_after_a_drift_event():
    catalog = load_topic_catalog()
    persona = _generator().generate(0, START)
    drift = TopicSwapDrift(catalog, DriftConfig(probability=1.0))
    events = drift.apply_between(persona, START + timedelta(days=1), START + timedelta(days=3), rng_for(0, "t"))
    assert events, "probability 1.0 must replace every held preference"
    timeline = PersonaTimeline.of(persona)
    event = events[0]
    before = {p.id for p in timeline.at(event.time - timedelta(seconds=1))}
    after = {p.id for p in timeline.at(event.time)}
    assert event.old.id in before and event.new.id not in before
    assert event.new.id in after and event.old.id not in after
    assert event.old.option != event.new.option and event.old.topic == event.new.topic
    assert event.cause in DriftConfig().causes
    assert timeline.previous_on(event.topic, event.time).id == event.old.id
    assert timeline.previous_on(event.topic, event.time - timedelta(seconds=1)) is None


def test_drift_with_zero_probability_changes_nothing():
    persona = _generator().generate(1, START)
    drift = TopicSwapDrift(load_topic_catalog(), DriftConfig(probability=0.0))
    assert drift.apply_between(persona, START, START + timedelta(days=30), rng_for(0, "x")) == []
    assert all(p.valid_to is None for p in persona.preferences)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), index=st.integers(0, 500), steps=st.integers(1, 6),
       probability=st.floats(0.0, 1.0))
def test_never_two_preferences_on_one_topic_at_once(seed, index, steps, probability):
    catalog = load_topic_catalog()
    persona = _generator(seed).generate(index, START)
    drift = TopicSwapDrift(catalog, DriftConfig(probability=probability))
    t = START
    for k in range(steps):
        drift.apply_between(persona, t, t + timedelta(days=2), rng_for(seed, "d", k))
        t += timedelta(days=2)
    timeline = PersonaTimeline.of(persona)
    probes = sorted({p.valid_from for p in persona.preferences} | {t, START})
    for probe in probes:
        held = timeline.at(probe)
        assert len({p.topic for p in held}) == len(held)
        assert len(held) == len({p.topic for p in persona.preferences})
