"""Long horizons: ``analysis.horizon.horizon_shape`` against the raw tables, and the horizon bench.

One tiny run serves every test: the bench itself (``bench/horizon_bench.py``) on the 128k preset
(so filler is in the history) with 2 users, 4 sessions and a short history target, its store kept.
Each figure of the shape is recomputed here from the raw tables with pandas, never compared with a
number written down: the scripted backend's texts and counts change as it is developed."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import shutil
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from personasim.analysis.distance import PERSONAMEM_V2_DISTANCES
from personasim.analysis.horizon import WITHIN_TARGET, horizon_shape
from personasim.sim.store import StoreError

ROOT = Path(__file__).resolve().parents[1]
PRESET, USERS, SESSIONS, HISTORY = "pmv2-128k", 2, 4, 8000
MEMORY = ["none", "full_history", "fact_list"]


def _load_bench():
    spec = importlib.util.spec_from_file_location("horizon_bench", ROOT / "bench" / "horizon_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["horizon_bench"] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, ray_session):
    """The bench's exit status with --check, its JSON, and the kept store."""
    folder = Path(tmp_path_factory.mktemp("horizon"))
    db, out = folder / "h.duckdb", folder / "h.json"
    rc = bench.main([
        "--preset", PRESET, "--users", str(USERS), "--sessions", str(SESSIONS), "--history-tokens", str(HISTORY),
        "--memory", ",".join(MEMORY), "--n-boot", "50", "--db", str(db), "--out", str(out), "--keep-db", "--check",
    ])
    return rc, json.loads(out.read_text()), db


@pytest.fixture(scope="module")
def stored(bench_run):
    _, result, db = bench_run
    con = duckdb.connect(str(db), read_only=True)
    yield con, result["run_id"]
    con.close()


def _table(con, table: str, run_id: str) -> pd.DataFrame:
    return con.execute(f"SELECT * FROM {table} WHERE run_id = ?", [run_id]).df()


def _users(con, run_id: str) -> list[str]:
    return sorted(_table(con, "personas", run_id)["persona_id"])


# -- the shape, figure by figure ----------------------------------------------------------------------

def test_history_tokens_and_the_share_on_target_match_the_turns(stored):
    con, run_id = stored
    turns = _table(con, "turns", run_id)
    per_user = turns.groupby("persona_id")["tokens"].sum().reindex(_users(con, run_id), fill_value=0)
    (config_json,) = con.execute("SELECT config_json FROM runs WHERE run_id = ?", [run_id]).fetchall()[0]
    target = json.loads(config_json)["dialogue"]["history_tokens"]
    assert target == HISTORY

    shape = horizon_shape(con, run_id)
    assert shape.users == USERS
    assert (shape.history.min, shape.history.max) == (per_user.min(), per_user.max())
    assert shape.history.median == pytest.approx(per_user.median())
    assert shape.history.target == target
    expected = sum(abs(t - target) <= 0.1 * target for t in per_user) / len(per_user)
    assert shape.history.within_target_share == pytest.approx(expected)


def test_an_explicit_target_replaces_the_runs_own(stored):
    con, run_id = stored
    per_user = _table(con, "turns", run_id).groupby("persona_id")["tokens"].sum()
    target = int(per_user.max())  # the longest history is on it by definition; the others only if close
    shape = horizon_shape(con, run_id, target=target)
    assert shape.history.target == target
    expected = float(np.mean(np.abs(per_user.to_numpy() - target) <= WITHIN_TARGET * target))
    assert shape.history.within_target_share == pytest.approx(expected)
    assert shape.history.within_target_share >= 1 / USERS


def test_filler_share_counts_filler_tokens_of_the_whole_history(stored):
    con, run_id = stored
    turns = _table(con, "turns", run_id)
    assert turns["filler"].any(), "the 128k preset pads histories with filler"
    shape = horizon_shape(con, run_id)
    assert shape.filler_token_share == pytest.approx(turns.loc[turns["filler"], "tokens"].sum() / turns["tokens"].sum())


def _expected_reveals(con, run_id: str) -> dict[str, float]:
    """Reveal figures recomputed: pairs enumerated with itertools, not scanned as the module does."""
    turns = _table(con, "turns", run_id)
    prefs = _table(con, "preferences", run_id).set_index("preference_id")
    user = turns[(turns["role"] == "user") & ~turns["filler"]].sort_values(["session_id", "turn_index"])
    revealed = user["revealed_preference_id"].dropna()
    assert revealed.isin(prefs.index).all()
    adjacent = same_topic = 0
    for _, session in user.groupby("session_id"):
        ids = list(session["revealed_preference_id"])
        adjacent += sum(1 for a, b in itertools.pairwise(ids) if pd.notna(a) and pd.notna(b))
        marked = [(i, prefs.loc[p, "topic"]) for i, p in enumerate(ids) if pd.notna(p)]
        same_topic += sum(1 for (i, t), (j, u) in itertools.combinations(marked, 2) if j - i <= 2 and t == u)
    owners = prefs.loc[revealed, "owner"]
    return {
        "user_turns": len(user), "reveals": len(revealed), "reveal_rate": len(revealed) / len(user),
        "others_share": float((owners != "self").mean()) if len(owners) else None,
        "adjacent_violations": adjacent, "same_topic_within_2": same_topic,
    }


def test_reveal_rate_others_share_and_spacing_match_the_turns(stored):
    con, run_id = stored
    expected = _expected_reveals(con, run_id)
    assert expected["reveals"] > 0
    got = horizon_shape(con, run_id).reveals.model_dump()
    assert got == pytest.approx(expected)


def test_adjacent_and_same_topic_reveals_are_counted(bench_run, stored, tmp_path):
    """A copy of the store with two consecutive reveals of one preference planted in a session:
    the counters see exactly what the pair enumeration sees, and that is not nothing."""
    con, run_id = stored
    user = con.execute(
        "SELECT session_id, persona_id, turn_id FROM turns WHERE run_id = ? AND role = 'user' AND NOT filler"
        " ORDER BY session_id, turn_index", [run_id]).df()
    sizes = user.groupby("session_id").size()
    session = sizes[sizes >= 2].index[0]
    planted = user[user["session_id"] == session].head(2)
    persona = planted["persona_id"].iloc[0]
    (pref,) = con.execute("SELECT preference_id FROM preferences WHERE run_id = ? AND persona_id = ? AND owner = 'self'"
                          " ORDER BY preference_id LIMIT 1", [run_id, persona]).fetchall()[0]
    copy = tmp_path / "planted.duckdb"
    shutil.copy(bench_run[2], copy)
    with duckdb.connect(str(copy)) as planted_con:
        planted_con.execute(
            "UPDATE turns SET revealed_preference_id = ? WHERE run_id = ? AND list_contains(?, turn_id)",
            [pref, run_id, list(planted["turn_id"])])
        expected = _expected_reveals(planted_con, run_id)
        got = horizon_shape(planted_con, run_id).reveals
    assert expected["adjacent_violations"] >= 1 and expected["same_topic_within_2"] >= 1
    assert got.adjacent_violations == expected["adjacent_violations"]
    assert got.same_topic_within_2 == expected["same_topic_within_2"]


def test_reply_variety_and_length_match_the_assistant_turns(stored):
    con, run_id = stored
    turns = _table(con, "turns", run_id)
    replies = turns[(turns["role"] == "assistant") & ~turns["filler"]]
    counts = replies["text"].value_counts()
    got = horizon_shape(con, run_id).replies
    assert got.count == len(replies)
    assert got.distinct_share == pytest.approx(replies["text"].nunique() / len(replies))
    assert got.top_reply_count == counts.iloc[0]
    assert got.top_reply_share == pytest.approx(counts.iloc[0] / len(replies))
    assert got.mean_tokens == pytest.approx(replies["tokens"].mean())
    assert (got.min_tokens, got.max_tokens) == (replies["tokens"].min(), replies["tokens"].max())


def test_updates_and_forget_requests_per_user_match_the_tables(stored):
    con, run_id = stored
    turns = _table(con, "turns", run_id)
    prefs = _table(con, "preferences", run_id).set_index("preference_id")
    drift = _table(con, "drift_events", run_id)
    forgotten_ids = set(_table(con, "forget_requests", run_id)["preference_id"])
    user = turns[(turns["role"] == "user") & ~turns["filler"] & turns["revealed_preference_id"].notna()]
    own = user[prefs.loc[user["revealed_preference_id"], "owner"].to_numpy() == "self"]
    own = own.assign(topic=prefs.loc[own["revealed_preference_id"], "topic"].to_numpy())
    # one preference per topic: versions of it (before and after an update) count together
    revealed_by_user = own.groupby("persona_id").apply(
        lambda g: [sorted(set(v)) for _, v in g.groupby("topic")["revealed_preference_id"]])

    def updated(pid: str) -> bool:
        for new in drift.loc[drift["old_preference_id"] == pid, "new_preference_id"]:
            if pd.isna(new) or (prefs.loc[new, "option"], prefs.loc[new, "polarity"]) != (
                    prefs.loc[pid, "option"], prefs.loc[pid, "polarity"]):
                return True
        return False

    assert len(revealed_by_user), "no user revealed an own preference: the shares below would be vacuous"
    counts = [len(revealed_by_user.get(u, [])) for u in _users(con, run_id)]
    updated_shares = [np.mean([any(updated(p) for p in v) for v in topics]) for topics in revealed_by_user]
    forgotten_shares = [np.mean([any(p in forgotten_ids for p in v) for v in topics]) for topics in revealed_by_user]
    got = horizon_shape(con, run_id).updates
    assert got.revealed_mean == pytest.approx(np.mean(counts))
    assert got.revealed_min == min(counts)
    assert got.updated_share_mean == pytest.approx(np.mean(updated_shares))
    assert got.updated_share_min == pytest.approx(min(updated_shares))
    assert got.forgotten_share_mean == pytest.approx(np.mean(forgotten_shares))
    assert got.forgotten_share_min == pytest.approx(min(forgotten_shares))


def test_scenarios_and_questions_match_the_tables(stored):
    con, run_id = stored
    sessions = _table(con, "sessions", run_id)
    questions = _table(con, "questions", run_id)
    users = _users(con, run_id)
    got = horizon_shape(con, run_id)
    assert got.sessions == len(sessions) == USERS * SESSIONS
    assert got.scenarios == sessions["scenario_id"].nunique()
    assert got.questions.count == len(questions)
    assert got.questions.per_user_mean == pytest.approx(len(questions) / len(users))
    checkpoints = [questions.loc[questions["persona_id"] == u, "asked_at"].nunique() for u in users]
    assert got.questions.checkpoints_per_user_mean == pytest.approx(np.mean(checkpoints))
    assert got.questions.checkpoints_per_user_min == min(checkpoints)
    shares = questions["question_type"].value_counts() / len(questions)
    assert got.questions.type_shares == pytest.approx(shares.to_dict())
    assert sum(got.questions.type_shares.values()) == pytest.approx(1.0)


def test_an_unknown_run_is_a_store_error(stored):
    con, _ = stored
    with pytest.raises(StoreError, match="no run"):
        horizon_shape(con, "run-does-not-exist")


# -- the bench ------------------------------------------------------------------------------------

def test_bench_records_the_shape_and_exits_by_its_checks(bench_run, stored):
    rc, result, _ = bench_run
    con, run_id = stored
    assert result["horizon"] == json.loads(horizon_shape(con, run_id).model_dump_json())
    assert result["passed"] == all(c["passed"] is not False for c in result["checks"])
    assert rc == (0 if result["passed"] else 1)
    by_name = {c["name"]: c for c in result["checks"]}
    assert by_name["wall_seconds"]["passed"] is None  # the wall target names pmv2-32k, not this preset
    assert by_name["reveal_rate"]["value"] == result["horizon"]["reveals"]["reveal_rate"]
    assert by_name["within_history_target"]["passed"] == (result["horizon"]["history"]["within_target_share"] >= 1.0)
    assert {n for n in by_name if n.startswith("forget_compliance")} == {"forget_compliance[fact_list]"}


def test_bench_splits_wall_time_and_sizes_the_store(bench_run):
    _, result, db = bench_run
    wall = result["wall"]
    parts = wall["simulation_seconds"] + wall["store_seconds"] + wall["evaluation_seconds"]
    assert parts == pytest.approx(wall["run_seconds"], abs=0.05)
    assert min(wall["simulation_seconds"], wall["evaluation_seconds"]) > 0
    assert result["store"]["db_bytes"] > 0
    assert result["store"]["db_bytes_per_user"] == pytest.approx(result["store"]["db_bytes"] / USERS)
    assert result["db"] == str(db) and db.exists()


def test_bench_holds_one_replayed_user_that_is_the_stored_one(bench_run, stored):
    """The in-process replay of user 0 is the run's user 0 (seeded), so its bytes are the run's."""
    _, result, _ = bench_run
    con, run_id = stored
    held = result["memory_per_user"]
    (history,) = con.execute(
        "SELECT sum(t.tokens) FROM turns t JOIN personas p ON p.run_id = t.run_id AND p.persona_id = t.persona_id"
        " WHERE t.run_id = ? AND p.user_index = 0", [run_id]).fetchall()[0]
    assert held["history_tokens"] == history
    assert held["sessions"] == SESSIONS
    memories = held["memory_bytes"]
    assert set(memories) == set(MEMORY)
    assert memories["full_history"] > memories["none"]
    both = held["persona_and_memories_bytes"]
    assert max(held["persona_bytes"], *memories.values()) <= both <= held["persona_bytes"] + sum(memories.values())
    assert held["user_bytes"] >= both


def test_bench_accuracy_and_distance_tables(bench_run, stored):
    _, result, _ = bench_run
    con, run_id = stored
    questions = con.execute("SELECT count(*) FROM questions WHERE run_id = ?", [run_id]).fetchall()[0][0]
    by_strategy = result["accuracy"]["by_strategy"]
    assert {r["strategy"] for r in by_strategy} == set(MEMORY)
    assert all(r["answers"] == questions and 0.0 <= r["ci_low"] <= r["ci_high"] <= 1.0 for r in by_strategy)
    by_type = result["accuracy"]["by_type"]
    assert sum(r["answers"] for r in by_type if r["strategy"] == "none") == questions
    assert {r["strategy"] for r in result["accuracy"]["by_distance"]} <= set(MEMORY)
    assert result["distance"]["personamem_v2"] == PERSONAMEM_V2_DISTANCES
    rows = {r["statistic"]: r for r in result["distance"]["vs_personamem_v2"]}
    assert rows["median"]["personamem_v2_32k"] == PERSONAMEM_V2_DISTANCES["32k"]["median"]
    pooled = next(r for r in result["distance"]["distribution"] if r["question_type"] == "all")
    assert pooled["n"] + pooled["not_revealed"] == questions
    forget = result["forget_compliance"]["fact_list"]
    assert len(forget["by_session"]) == SESSIONS
    measured = [v for v in forget["by_session"] if v is not None]
    assert (forget["mean"] is None) == (not measured)
    if measured:
        assert forget["mean"] == pytest.approx(np.mean(measured))
        assert all(0.0 <= v <= 1.0 for v in measured)


# -- the bench's pieces, without a run ------------------------------------------------------------

def _result(**shape_changes) -> dict:
    """A passing result, as the bench writes it, with the parts ``checks`` reads."""
    shape = {
        "reveals": {"reveal_rate": 0.15, "others_share": 0.33},
        "replies": {"distinct_share": 0.99, "top_reply_count": 3, "top_reply_share": 0.001},
        "history": {"within_target_share": 1.0},
        "updates": {"updated_share_min": 0.55, "forgotten_share_min": 0.25},
        "questions": {"per_user_mean": 25.0, "checkpoints_per_user_min": 4,
                      "type_shares": {"updated_preference": 0.18, "forget_compliance": 0.2}},
    }
    for part, values in shape_changes.items():
        shape[part] = {**shape[part], **values}
    shape["scenarios"] = 320
    return {"preset": "pmv2-32k", "users": 200, "preset_scale": True, "wall": {"run_seconds": 1200.0}, "horizon": shape,
            "strategies": ["none", "agentic", "fact_list"],
            "forget_compliance": {"agentic": {"mean": 0.95}, "fact_list": {"mean": None}}}


def _verdicts(result: dict) -> dict[str, bool | None]:
    return {c["name"]: c["passed"] for c in bench.checks(result)}


def test_checks_pass_fail_and_not_measured():
    verdicts = _verdicts(_result())
    shape_checks = {"updated_share_min", "forgotten_share_min", "questions_per_user", "checkpoints_per_user_min",
                    "updated_question_share", "forget_question_share", "others_reveal_share", "scenarios"}
    assert verdicts == {"wall_seconds": True, "reveal_rate": True, "distinct_replies": True, "top_reply_share": True,
                        "within_history_target": True, "forget_compliance[agentic]": True,
                        "forget_compliance[fact_list]": None, **{name: True for name in shape_checks}}
    off_shape = _result(updates={"updated_share_min": 0.4, "forgotten_share_min": 0.1},
                        questions={"per_user_mean": 12.0, "checkpoints_per_user_min": 2,
                                   "type_shares": {"updated_preference": 0.05}},
                        reveals={"others_share": 0.6})
    off_shape["horizon"]["scenarios"] = 120
    assert {n for n, v in _verdicts(off_shape).items() if v is False} == shape_checks
    overridden = _result()
    overridden["preset_scale"] = False  # --sessions or --history-tokens: the shape is not the preset's
    assert all(_verdicts(overridden)[name] is None for name in shape_checks)
    small = _result()
    small["users"] = 50
    assert _verdicts(small)["scenarios"] is None and _verdicts(small)["updated_share_min"] is True
    failing = _result(reveals={"reveal_rate": 0.25}, history={"within_target_share": 0.99},
                      replies={"distinct_share": 0.9, "top_reply_share": 0.01})
    failing["wall"]["run_seconds"] = 1900.0
    failing["forget_compliance"]["agentic"]["mean"] = 0.5
    assert {n for n, v in _verdicts(failing).items() if v is False} == {
        "wall_seconds", "reveal_rate", "distinct_replies", "top_reply_share", "within_history_target",
        "forget_compliance[agentic]"}


def test_checks_wall_target_names_its_preset_and_size_and_a_unique_reply_passes():
    other = _result()
    other["preset"] = "pmv2-128k"
    other["wall"]["run_seconds"] = 5000.0
    assert _verdicts(other)["wall_seconds"] is None
    larger = _result()
    larger["users"] = 1000
    larger["wall"]["run_seconds"] = 5000.0
    assert _verdicts(larger)["wall_seconds"] is None
    tiny = _result(replies={"top_reply_count": 1, "top_reply_share": 1 / 40})  # every reply distinct
    assert _verdicts(tiny)["top_reply_share"] is True


def test_deep_size_counts_each_object_once_and_skips_shared_ones():
    text = "x" * 1000
    inner = [text]
    roots = [[inner, inner, text]]
    expected = sys.getsizeof(roots[0]) + sys.getsizeof(inner) + sys.getsizeof(text)
    assert bench.deep_size(roots, set()) == expected
    assert bench.deep_size(roots, {id(text)}) == expected - sys.getsizeof(text)
    assert bench.deep_size(roots, {id(inner)}) == sys.getsizeof(roots[0]) + sys.getsizeof(text)
    assert bench.deep_size([math.sqrt], set()) == 0  # code is not a user's data
