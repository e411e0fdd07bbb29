from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from personasim.personas import load_topic_catalog
from personasim.worlds import ScheduleConfig, SimClock, load_scenario_catalog, session_times


def test_scenario_catalog_is_data_with_enough_breadth():
    scenarios = load_scenario_catalog()
    assert len(scenarios.scenarios) >= 20
    assert len(scenarios.domains) >= 5
    topics = {t.id for t in load_topic_catalog().topics}
    scenarios.check_topics(topics)
    for topic in topics:
        assert scenarios.scenarios_for(topic), f"no scenario touches {topic}"


def test_scenario_catalog_rejects_unknown_topics(tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text('{"scenarios": [{"id": "x", "domain": "d", "title": "t", "topics": ["nope"],'
                   ' "intents": ["hi"], "lead": "ok"}]}')
    with pytest.raises(ValueError, match="unknown topics"):
        load_scenario_catalog(bad).check_topics({"other"})


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
