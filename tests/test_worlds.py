from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from personasim.personas import load_topic_catalog
from personasim.personas.catalog import HINT_KINDS
from personasim.worlds import ScheduleConfig, SimClock, load_scenario_catalog, session_times
from personasim.worlds.graph import WorldGraph, default_world


def test_scenario_taxonomy_reaches_the_papers_scale():
    scenarios = load_scenario_catalog()
    assert len(scenarios.scenarios) >= 300
    assert len(scenarios.domains) >= 15
    topics = load_topic_catalog()
    assert len(topics.domains) >= 15
    scenarios.check_topics(t.id for t in topics.topics)
    for s in scenarios.scenarios:
        assert s.intents and s.lead and 1 <= len(s.topics) <= 3


def test_world_graph_answers_taxonomy_queries():
    world = default_world()
    topics, scenarios = load_topic_catalog(), load_scenario_catalog()
    assert world.domains() == topics.domains
    for domain in world.domains():
        assert world.topics_in(domain) == sorted(t.id for t in topics.topics_in(domain))
    for topic in topics.topics:
        assert world.scenarios_for(topic.id) == sorted(s.id for s in scenarios.scenarios_for(topic.id))
        assert len(world.scenarios_for(topic.id)) >= 2, topic.id
    some = scenarios.scenarios[0]
    assert world.topics_of(some.id) == sorted(some.topics)
    assert some.id in world.scenarios_in(topics.topic(some.topics[0]).domain)


def test_world_graph_rejects_unknown_topics():
    scenarios = load_scenario_catalog()
    bad = scenarios.model_copy(update={"scenarios": [scenarios.scenarios[0].model_copy(update={"topics": ["nope"]})]})
    with pytest.raises(ValueError, match="unknown topics"):
        WorldGraph(load_topic_catalog(), bad)


def test_preference_space_has_twenty_thousand_distinct_statements():
    statements = list(load_topic_catalog().preference_statements())
    texts = [s.text for s in statements]
    assert len(texts) == len(set(texts))
    assert len(texts) >= 20_000
    assert {s.polarity for s in statements} == {"likes", "dislikes"}


def test_hint_bank_has_five_kinds_with_several_phrasings_per_topic():
    catalog = load_topic_catalog()
    for topic in catalog.topics:
        for option in topic.options:
            for polarity in ("likes", "dislikes"):
                for kind in HINT_KINDS:
                    phrasings = {h.text for h in catalog.hints(topic.id, option.id, polarity, kind)}
                    assert len(phrasings) >= 3, (topic.id, option.id, polarity, kind)


def test_implicit_hints_never_name_the_option():
    catalog = load_topic_catalog()
    for topic in catalog.topics:
        for option in topic.options:
            pattern = re.compile(
                r"\b(" + "|".join(re.escape(w) for w in option.naming_words()) + r")\b", re.IGNORECASE
            )
            for polarity in ("likes", "dislikes"):
                for hint in catalog.hints(topic.id, option.id, polarity):
                    assert not pattern.search(hint.text), (topic.id, option.id, hint.text)


def test_catalog_loading_is_strict(tmp_path):
    (tmp_path / "topics").mkdir()
    (tmp_path / "templates.json").write_text(
        (load_topic_catalog.__globals__["resources"].files("personasim.personas") / "data/templates.json").read_text()
    )
    (tmp_path / "topics" / "x.json").write_text('{"domain": "x", "topics": [{"id": "t", "name": "t"}]}')
    with pytest.raises(ValueError, match=r"invalid topic file .*x\.json"):
        load_topic_catalog(tmp_path)


def test_schedule_is_increasing_deterministic_and_per_user():
    cfg = ScheduleConfig(sessions=8)
    a = session_times(3, cfg, seed=1)
    assert a == session_times(3, cfg, seed=1)
    assert a != session_times(4, cfg, seed=1)
    assert len(a) == 8
    assert all(later - earlier >= timedelta(hours=6) for earlier, later in zip(a, a[1:], strict=False))
    assert a[0] >= cfg.start


def test_clock_only_moves_forward():
    clock = SimClock(datetime(2025, 1, 1))
    clock.advance(timedelta(hours=2))
    assert clock.now == datetime(2025, 1, 1, 2)
    with pytest.raises(ValueError):
        clock.jump_to(datetime(2024, 12, 31))
