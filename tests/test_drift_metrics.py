"""Drift metrics on a hand-built timeline whose right answers are known, and on a real small run."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pytest

from personasim.analysis.drift import (
    drift_by_cause,
    jensen_shannon,
    js_divergence,
    life_event_share,
    preference_half_life,
    turnover_by_month,
)
from personasim.sim.rows import DriftEventRow, PreferenceRow, SessionRow
from personasim.sim.store import TrajectoryStore

JAN1 = datetime(2025, 1, 1)
END = datetime(2025, 3, 2)  # JAN1 + 60 days: the last session of every user ends here


def _pref(pid: str, domain: str, start: datetime, end: datetime | None, strength: float = 1.0,
          polarity: str = "likes") -> PreferenceRow:
    persona, topic, rest = pid.split("/")
    option = rest.split("#")[0]
    return PreferenceRow(run_id="r", preference_id=pid, persona_id=persona, domain=domain, topic=topic, option=option,
                         statement=f"I like {option}.", polarity=polarity, strength=strength, sensitive=False,
                         valid_from=start, valid_to=end, sensitivity=None, stereotype="neutral")


def _event(i: int, persona: str, t: datetime, kind: str, cause: str, old: str | None, new: str | None) -> DriftEventRow:
    topic = (old or new or "").split("/")[1]
    return DriftEventRow(run_id="r", event_id=f"{persona}/drift/{i}", persona_id=persona, time=t, cause=cause,
                         topic=topic, old_preference_id=old, new_preference_id=new, kind=kind)


def _sessions(persona: str) -> list[SessionRow]:
    spans = [(JAN1, JAN1 + timedelta(hours=1)), (END - timedelta(hours=1), END)]
    return [SessionRow(run_id="r", session_id=f"{persona}/s{k}", persona_id=persona, session_index=k, scenario_id="s",
                       started_at=a, ended_at=b, n_turns=2, status="completed") for k, (a, b) in enumerate(spans)]


FEB1, FEB10, FEB15, FEB20, JAN15 = (datetime(2025, 2, 1), datetime(2025, 2, 10), datetime(2025, 2, 15),
                                    datetime(2025, 2, 20), datetime(2025, 1, 15))


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    """u0: thai -> italian (Feb 1), cats strength change (Feb 10, same preference), adopts yoga by a life
    event (Feb 15). u1: tea, dropped on Feb 20. u2: x -> y on Jan 15 (disjoint likes)."""
    prefs = [
        _pref("u0/cuisine/thai#0", "food", JAN1, FEB1), _pref("u0/cuisine/italian#1", "food", FEB1, None),
        _pref("u0/pet/cats#0", "pets", JAN1, FEB10), _pref("u0/pet/cats#1", "pets", FEB10, None, strength=0.6),
        _pref("u0/hobby/yoga#0", "misc", FEB15, None),
        _pref("u1/drink/tea#0", "misc", JAN1, FEB20),
        _pref("u2/music/x#0", "misc", JAN1, JAN15), _pref("u2/music/y#1", "misc", JAN15, None),
    ]
    events = [
        _event(0, "u2", JAN15, "topic_swap", "bored", "u2/music/x#0", "u2/music/y#1"),
        _event(0, "u0", FEB1, "topic_swap", "bored", "u0/cuisine/thai#0", "u0/cuisine/italian#1"),
        _event(1, "u0", FEB10, "gradual", "cooling off over time", "u0/pet/cats#0", "u0/pet/cats#1"),
        _event(2, "u0", FEB15, "life_event", "moved to a new city", None, "u0/hobby/yoga#0"),
        _event(0, "u1", FEB20, "gradual", "interest faded over time", "u1/drink/tea#0", None),
    ]
    path = tmp_path_factory.mktemp("drift") / "s.duckdb"
    store = TrajectoryStore(path)
    store.write_many([("preferences", prefs), ("drift_events", events),
                      ("sessions", [s for p in ("u0", "u1", "u2") for s in _sessions(p)])])
    store.close()
    connection = duckdb.connect(str(path), read_only=True)
    yield connection
    connection.close()


def test_turnover_by_month_population_and_per_user(con):
    table = turnover_by_month(con, "r")
    assert table["month"].tolist() == [0, 1]
    assert table["users_active"].tolist() == [3, 3]
    assert table[["replaced", "dropped", "adopted", "events"]].values.tolist() == [[1, 0, 0, 1], [2, 1, 1, 4]]
    assert table["held_at_start"].tolist() == [4, 4]  # Jan 1: thai, cats, tea, x; Jan 31: thai, cats, tea, y
    assert table["turnover"].tolist() == pytest.approx([1 / 4, 3 / 4])
    assert table["events_per_user"].tolist() == pytest.approx([1 / 3, 4 / 3])
    users = turnover_by_month(con, "r", per_user=True).set_index(["persona_id", "month"])
    assert len(users) == 6
    assert users.loc[("u0", 1), "events"] == 3 and users.loc[("u0", 1), "turnover"] == pytest.approx(1.0)
    assert users.loc[("u1", 0), "turnover"] == 0


def test_drift_by_cause_counts_and_shares(con):
    table = drift_by_cause(con, "r")
    by_kind = table.groupby("kind")["events"].sum().to_dict()
    assert by_kind == {"gradual": 2, "life_event": 1, "topic_swap": 2}
    assert table["share"].sum() == pytest.approx(1.0)
    swap = table[table["kind"] == "topic_swap"].iloc[0]
    assert (swap["cause"], swap["events"], swap["users"], swap["share"], swap["share_of_kind"]) == (
        "bored", 2, 2, pytest.approx(0.4), pytest.approx(1.0))


def test_half_life_is_the_exponential_mle_with_censoring(con):
    table = preference_half_life(con, "r").set_index("domain")
    # food: thai 31 days (ended) + italian 29 days (censored at Mar 2) = 60 days, one ended
    assert table.loc["food", "exposure_days"] == pytest.approx(60)
    assert table.loc["food", "ended"] == 1
    assert table.loc["food", "half_life_days"] == pytest.approx(math.log(2) * 60)
    # pets: the strength change does not end the spell: 60 days, nothing ended -> infinite half-life
    assert table.loc["pets", "spells"] == 1 and table.loc["pets", "ended"] == 0
    assert math.isinf(table.loc["pets", "half_life_days"])
    # all: 31 + 29 + 60 + yoga 15 + tea 50 + x 14 + y 46 = 245 days, three ended
    assert table.loc["all", "exposure_days"] == pytest.approx(245)
    assert table.loc["all", "half_life_days"] == pytest.approx(math.log(2) * 245 / 3)
    assert table.loc["all", "rate_per_month"] == pytest.approx(3 / 245 * 30)
    assert table.loc["all", "ci_low"] < table.loc["all", "half_life_days"] < table.loc["all", "ci_high"]


def test_js_divergence_zero_unchanged_one_disjoint(con):
    users = js_divergence(con, "r", per_user=True).set_index(["persona_id", "t"])
    assert users.loc[("u2", JAN1), "js"] == pytest.approx(1.0)  # x -> y: disjoint
    assert users.loc[("u0", JAN1), "js"] == pytest.approx(0.0)  # nothing changed before Jan 31
    assert users.loc[("u1", JAN1), "js"] == pytest.approx(0.0)
    assert ("u1", JAN1 + timedelta(days=30)) not in users.index  # tea dropped: nothing liked on Mar 2
    # u0 from Jan 31 to Mar 2: {thai .5, cats .5} -> {italian, cats .6, yoga}, weights by strength
    p = np.array([0.5, 0.0, 0.5, 0.0])
    q = np.array([0.0, 1.0, 0.6, 1.0]) / 2.6
    m = (p + q) / 2
    expected = 0.5 * sum(a * np.log2(a / b) for a, b in zip(p, m, strict=True) if a > 0) + 0.5 * sum(
        a * np.log2(a / b) for a, b in zip(q, m, strict=True) if a > 0)
    assert users.loc[("u0", JAN1 + timedelta(days=30)), "js"] == pytest.approx(expected)
    population = js_divergence(con, "r")
    assert population["users"].tolist() == [3, 2]
    assert population["mean_js"].iloc[0] == pytest.approx(1 / 3)
    assert jensen_shannon({"a": 1.0}, {"a": 1.0}) == 0 and jensen_shannon({"a": 1.0}, {"b": 1.0}) == 1
    with pytest.raises(ValueError):
        js_divergence(con, "r", delta_days=0)


def test_life_event_share(con):
    overall = life_event_share(con, "r").iloc[0]
    assert (overall["events"], overall["life_events"]) == (5, 1)
    assert overall["event_share"] == pytest.approx(0.2)
    # changed: x, y, thai, italian, cats (likes; one preference), yoga, tea -> 7; life events: yoga
    assert (overall["changed_preferences"], overall["life_changed"]) == (7, 1)
    users = life_event_share(con, "r", per_user=True).set_index("persona_id")
    assert users.loc["u0", "event_share"] == pytest.approx(1 / 3)
    assert users.loc["u0", "preference_share"] == pytest.approx(1 / 4)
    assert users.loc["u1", "life_events"] == 0


def test_unknown_run_is_a_clear_error(con):
    with pytest.raises(ValueError, match="no sessions"):
        turnover_by_month(con, "nope")


def test_drift_metrics_on_a_real_run(small_run):
    summary, db = small_run
    with duckdb.connect(str(db), read_only=True) as real:
        run_id = summary.run_id
        turnover = turnover_by_month(real, run_id)
        assert len(turnover) >= 1 and (turnover["turnover"].dropna().between(0, 1)).all()
        assert turnover["events"].sum() == real.execute(
            "SELECT count(*) FROM drift_events WHERE run_id = ?", [run_id]).fetchone()[0]
        causes = drift_by_cause(real, run_id)
        assert causes["share"].sum() == pytest.approx(1.0) or causes.empty
        assert set(causes["kind"]) <= {"topic_swap", "life_event", "gradual", "reversal", "seasonal", "exposure"}
        half = preference_half_life(real, run_id)
        assert half["domain"].iloc[-1] == "all" and (half["exposure_days"] >= 0).all()
        js = js_divergence(real, run_id, delta_days=14, step_days=14, per_user=True)
        assert js["js"].between(0, 1).all()
        share = life_event_share(real, run_id, per_user=True)
        assert len(share) == summary.users
