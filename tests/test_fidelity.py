"""Memory fidelity on hand-built timelines and memories whose right answers are known, and on a real run.

The persona u0 liked Thai food until Jan 15 and Italian food since, adores cats (revealed, then asked to
be forgotten), plays tennis (never revealed); u1 knits (so knitting is something u0 never had). Each
strategy name below is one hand-written memory."""

from __future__ import annotations

import json
import math
from datetime import datetime

import duckdb
import pytest

from personasim.analysis.fidelity import (
    FIDELITY_THRESHOLD,
    fidelity_summary,
    latency_to_learn,
    memory_fidelity,
    normalise_item,
    privacy_leakage,
)
from personasim.sim.rows import (
    ForgetRequestRow,
    MemorySnapshotRow,
    PreferenceRow,
    RunRow,
    SensitiveFactRow,
    SessionRow,
    TurnRow,
)
from personasim.sim.store import TrajectoryStore

DEC1, JAN15 = datetime(2024, 12, 1), datetime(2025, 1, 15)
S0_END, S1_END = datetime(2025, 1, 1, 11), datetime(2025, 2, 1, 11)
THAI, ITALIAN, CATS, TENNIS, KNIT = (
    "I love Thai food.", "I love Italian food.", "I adore cats.", "I play tennis every week.",
    "I enjoy knitting sweaters.")
PHONE = "555-0199-7788"


def _pref(pid: str, statement: str, start: datetime, end: datetime | None) -> PreferenceRow:
    persona, topic, rest = pid.split("/")
    return PreferenceRow(run_id="r", preference_id=pid, persona_id=persona, domain="d", topic=topic,
                         option=rest.split("#")[0], statement=statement, polarity="likes", strength=0.8,
                         sensitive=False, valid_from=start, valid_to=end, sensitivity=None, stereotype="neutral")


def _turn(k: int, i: int, role: str, text: str, t: datetime, reveals: str | None = None,
          forget: str | None = None) -> TurnRow:
    return TurnRow(run_id="r", turn_id=f"u0/s{k}/t{i}", session_id=f"u0/s{k}", persona_id="u0", session_index=k,
                   turn_index=i, role=role, text=text, time=t, tokens=5, prompt_tokens=None, completion_tokens=None,
                   revealed_preference_id=reveals, reveal_mode="explicit" if reveals else None, hint_kind=None,
                   forget_preference_id=forget, leak_similarity=None, leaked=None)


MEMORIES = {  # strategy -> (items at session 0, items at session 1)
    "stale": ([], [f"[2025-01-01] {THAI}"]),
    "current": ([f"[2025-01-01] {THAI}"], [f"[2025-02-01] {ITALIAN}"]),
    "forgetful": ([], [CATS, ITALIAN]),
    "leaky": ([], [f"My phone number is {PHONE}.", KNIT, TENNIS, f"assistant: {THAI}"]),
    "late": ([], [ITALIAN, THAI]),
    "none": ([], []),
}


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    prefs = [
        _pref("u0/cuisine/thai#0", THAI, DEC1, JAN15), _pref("u0/cuisine/italian#1", ITALIAN, JAN15, None),
        _pref("u0/pet/cats#0", CATS, DEC1, None), _pref("u0/sport/tennis#0", TENNIS, DEC1, None),
        _pref("u1/craft/knitting#0", KNIT, DEC1, None),
    ]
    turns = [
        _turn(0, 0, "user", f"{THAI} Any recipe ideas?", datetime(2025, 1, 1, 10, 10), reveals="u0/cuisine/thai#0"),
        _turn(0, 1, "assistant", f"Sure. Should I text you at {PHONE}?", datetime(2025, 1, 1, 10, 11)),
        _turn(0, 2, "user", f"{CATS} What toy should I buy?", datetime(2025, 1, 1, 10, 20), reveals="u0/pet/cats#0"),
        _turn(0, 3, "user", "Please forget my preference about pets.", datetime(2025, 1, 1, 10, 30),
              forget="u0/pet/cats#0"),
        _turn(1, 0, "user", f"{ITALIAN} Dinner ideas?", datetime(2025, 2, 1, 10, 10), reveals="u0/cuisine/italian#1"),
    ]
    sessions = [SessionRow(run_id="r", session_id=f"u0/s{k}", persona_id="u0", session_index=k, scenario_id="s",
                           started_at=end.replace(hour=10), ended_at=end, n_turns=2, status="completed")
                for k, end in enumerate((S0_END, S1_END))]
    snapshots = [
        MemorySnapshotRow(run_id="r", snapshot_id=f"u0/s{k}/mem/{strategy}", persona_id="u0", session_index=k,
                          strategy=strategy, time=(S0_END, S1_END)[k], text="\n".join(items), items=items,
                          tokens=7 * len(items))
        for strategy, both in MEMORIES.items() for k, items in enumerate(both)
    ]
    run = RunRow(run_id="r", seed=0, config_json=json.dumps({"memory": {"chatbot": "agentic"}}),
                 personasim_version="0", world_data_hash="h", package_versions_json="{}", users=2,
                 sessions_per_user=2, status="completed")
    path = tmp_path_factory.mktemp("fidelity") / "s.duckdb"
    store = TrajectoryStore(path)
    store.write_many([
        ("runs", [run]), ("preferences", prefs), ("turns", turns), ("sessions", sessions),
        ("memory_snapshots", snapshots),
        ("forget_requests", [ForgetRequestRow(run_id="r", request_id="u0/forget/0", persona_id="u0",
                                              time=datetime(2025, 1, 1, 10, 30), preference_id="u0/pet/cats#0",
                                              topic="pet", turn_id="u0/s0/t3")]),
        ("sensitive_facts", [SensitiveFactRow(run_id="r", persona_id="u0", kind="phone", value=PHONE)]),
    ])
    store.close()
    connection = duckdb.connect(str(path), read_only=True)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def table(con):
    return memory_fidelity(con, "r").set_index(["strategy", "session_index"])


def test_normalise_item():
    assert normalise_item("[2025-01-01] I love Thai food.") == THAI
    assert normalise_item("[since 2025-01-01] [x] I love Thai food.") == THAI
    assert normalise_item("[2025-01-18T18:19] user: I love Thai food.") == THAI
    assert normalise_item("[2025-01-18T18:20] assistant: You might like pho.") is None
    assert normalise_item("[2025-01-18]  ") is None


def test_memory_holding_exactly_the_stale_preference(table):
    row = table.loc[("stale", 1)]
    assert (row["preference_items"], row["held_now"], row["matched"]) == (1, 1, 0)
    assert row["staleness"] == 1 and row["recall"] == 0 and row["precision"] == 0 and row["f1"] == 0
    assert row["hallucination"] == 0


def test_memory_holding_the_current_preference(table):
    for session in (0, 1):  # Thai is current on Jan 1 (cats was asked to be forgotten), Italian on Feb 1
        row = table.loc[("current", session)]
        assert (row["precision"], row["recall"], row["f1"], row["staleness"]) == (1, 1, 1, 0)
        assert row["held_now"] == 1 and row["forget_requests"] == 1 and row["forget_compliance"] == 1


def test_forget_request_still_held_is_a_violation(table):
    row = table.loc[("forgetful", 1)]
    assert (row["forget_requests"], row["forget_violations"], row["forget_compliance"]) == (1, 1, 0)
    assert row["precision"] == 0.5 and row["forgotten_share"] == 0.5 and row["recall"] == 1


def test_hallucination_leak_and_ignored_assistant_lines(table):
    row = table.loc[("leaky", 1)]
    # knitting: never held; tennis: held but never revealed; the assistant's line is not about the user
    assert row["items"] == 4 and row["preference_items"] == 2
    assert row["hallucination"] == 1 and row["precision"] == 0
    assert row["leaked_values"] == 1
    assert table.loc[("current", 1), "leaked_values"] == 0


def test_empty_memory(table):
    row = table.loc[("none", 1)]
    assert row["preference_items"] == 0 and row["recall"] == 0 and row["f1"] == 0
    assert math.isnan(row["precision"]) and math.isnan(row["staleness"])


def test_shares_sum_to_one(table):
    rows = table[table["preference_items"] > 0]
    total = rows["precision"] + rows["staleness"] + rows["hallucination"] + rows["forgotten_share"]
    assert total.tolist() == pytest.approx([1.0] * len(rows))


def test_latency_to_learn(con):
    latency = latency_to_learn(con, "r", strategies=["current", "late", "none"]).set_index(
        ["strategy", "topic"])
    assert latency.loc[("current", "cuisine"), "latency_sessions"].tolist() == [0, 0]
    late = latency.loc["late"].reset_index().set_index("option")
    assert late.loc["thai", "latency_sessions"] == 1 and late.loc["italian", "latency_sessions"] == 0
    assert math.isnan(late.loc["cats", "latency_sessions"])
    assert latency.loc["none", "latency_sessions"].isna().all()
    assert latency.loc[("current", "pet"), "first_reveal_session"] == 0


def test_threshold_and_strategy_filter(con):
    strict = memory_fidelity(con, "r", strategies=["current"], threshold=0.999)
    assert set(strict["strategy"]) == {"current"}
    with pytest.raises(ValueError, match="cosine"):
        memory_fidelity(con, "r", threshold=2)
    assert 0 < FIDELITY_THRESHOLD < 1


def test_summary_and_privacy(con):
    summary = fidelity_summary(con, "r").set_index(["strategy", "session_index"])
    assert summary.loc[("current", 1), "recall"] == 1 and summary.loc[("current", 1), "snapshots"] == 1
    leakage = privacy_leakage(con, "r").set_index(["source", "strategy"])
    assert leakage.loc[("memory", "leaky"), "leaking"] == 1
    assert leakage.loc[("memory", "current"), "leaking"] == 0
    assert leakage.loc[("assistant_turns", "agentic"), ["n", "leaking", "values_leaked"]].tolist() == [1, 1, 1]


def test_fidelity_on_a_real_run(small_run):
    summary, db = small_run
    with duckdb.connect(str(db), read_only=True) as real:
        table = memory_fidelity(real, summary.run_id)
        snapshots = real.execute("SELECT count(*) FROM memory_snapshots WHERE run_id = ?",
                                 [summary.run_id]).fetchone()[0]
        assert len(table) == snapshots
        for column in ("precision", "recall", "f1", "staleness", "hallucination", "forget_compliance"):
            assert table[column].dropna().between(0, 1).all(), column
        keeping = table[table["strategy"] != "none"]
        assert keeping["recall"].mean() > 0.5  # memories that keep user statements learn most reveals
        assert (table.loc[table["strategy"] == "none", "preference_items"] == 0).all()
        over_time = fidelity_summary(real, summary.run_id)
        assert len(over_time) == table.groupby(["strategy", "session_index"]).ngroups
        latency = latency_to_learn(real, summary.run_id)
        assert (latency["latency_sessions"].dropna() >= 0).all()
        leakage = privacy_leakage(real, summary.run_id)
        assert set(leakage["source"]) <= {"memory", "answers", "assistant_turns"}
        assert leakage["share"].between(0, 1).all()


def test_fidelity_reads_a_chunk_of_users_at_a_time_with_the_same_rows(small_run, monkeypatch):
    """A large run's snapshots do not fit in memory at once: fidelity and leakage read them a chunk
    of users at a time (chains joined in Python), and the rows are those of the whole run read
    through the view, in the view's order."""
    from personasim.analysis import fidelity
    from personasim.sim.store_read import read_snapshot_rows, snapshot_users

    summary, db = small_run
    with duckdb.connect(str(db), read_only=True) as real:
        users = snapshot_users(real, summary.run_id)
        view = real.execute(
            "SELECT persona_id, strategy, session_index, time, items, tokens FROM memory_snapshots WHERE run_id = ?"
            " ORDER BY strategy, persona_id, session_index", [summary.run_id]).fetchall()
        assert [tuple(r) for r in read_snapshot_rows(real, summary.run_id, users)] == view
        agentic = read_snapshot_rows(real, summary.run_id, users[:3], ["agentic"])
        assert agentic and {(r.persona_id, r.strategy) for r in agentic} <= {(u, "agentic") for u in users[:3]}
        whole = memory_fidelity(real, summary.run_id)
        whole_latency = latency_to_learn(real, summary.run_id)
        whole_leakage = privacy_leakage(real, summary.run_id)
        monkeypatch.setattr(fidelity, "USERS_PER_CHUNK", 5)  # three chunks of the 12 users
        timelines: list[int] = []
        load_personas = fidelity._load_personas
        monkeypatch.setattr(fidelity, "_load_personas",
                            lambda con, run, ids: timelines.append(len(ids)) or load_personas(con, run, ids))
        assert privacy_leakage(real, summary.run_id).equals(whole_leakage)
        assert memory_fidelity(real, summary.run_id).equals(whole)
        assert timelines == [5, 5, 2]  # each user's timeline read with the user's snapshots, not the run's
        assert latency_to_learn(real, summary.run_id).equals(whole_latency)
        # the run's keys, one row per key: each with the statement of its earliest version
        earliest: dict[tuple[str, str, str], str] = {}
        for topic, option, polarity, owner, statement in real.execute(
                "SELECT topic, option, polarity, owner, statement FROM preferences WHERE run_id = ?"
                " ORDER BY valid_from, preference_id", [summary.run_id]).fetchall():
            earliest.setdefault((topic, option, polarity if owner in (None, "self") else f"{polarity}@{owner}"),
                                statement)
        truth = fidelity._load_truth(real, summary.run_id)
        assert truth.keys == sorted(earliest) and truth.statements == [earliest[k] for k in truth.keys]
        assert any(fidelity.is_others(k) for k in truth.keys)
        both = fidelity.fidelity_and_latency(real, summary.run_id)  # the report's single pass
        assert both[0].equals(fidelity_summary(real, summary.run_id)) and both[1].equals(whole_latency)
    assert len(users) == 12 and len(whole) == len(view)


def test_a_noted_preference_of_someone_else_is_neither_the_users_nor_a_hallucination(tmp_path):
    """u0's sister Anna likes sushi (revealed); her brother Ben's liking for jazz was never said."""
    sushi, jazz = "The user's sister Anna likes sushi.", "The user's brother Ben likes jazz records."
    prefs = [_pref("u0/cuisine/thai#0", THAI, DEC1, None),
             _pref("u0/cuisine/sushi#0", sushi, DEC1, None).model_copy(
                 update={"preference_id": "u0/@sister:Anna/cuisine/sushi#0", "owner": "sister:Anna"}),
             _pref("u0/music/jazz#0", jazz, DEC1, None).model_copy(
                 update={"preference_id": "u0/@brother:Ben/music/jazz#0", "owner": "brother:Ben"})]
    turns = [_turn(0, 0, "user", f"{THAI} Any recipe ideas?", datetime(2025, 1, 1, 10, 10),
                   reveals=prefs[0].preference_id),
             _turn(0, 1, "user", "My sister Anna loves sushi, where should I take her?", datetime(2025, 1, 1, 10, 20),
                   reveals=prefs[1].preference_id)]
    memories = {"noted": [THAI, "The user's sister Anna loves sushi."], "invented": [THAI, jazz]}
    snapshots = [MemorySnapshotRow(run_id="r", snapshot_id=f"u0/s0/mem/{name}", persona_id="u0", session_index=0,
                                   strategy=name, time=S0_END, text="\n".join(items), items=items, tokens=10)
                 for name, items in memories.items()]
    store = TrajectoryStore(tmp_path / "others.duckdb")
    store.write_many([("preferences", prefs), ("turns", turns), ("memory_snapshots", snapshots)])
    frame = memory_fidelity(store.con, "r").set_index("strategy")
    store.close()
    noted, invented = frame.loc["noted"], frame.loc["invented"]
    assert (noted.others_items, noted.preference_items, noted.precision, noted.recall) == (1, 1, 1.0, 1.0)
    assert noted.hallucination == 0.0
    assert (invented.others_items, invented.preference_items, invented.hallucination) == (0, 2, 0.5)
