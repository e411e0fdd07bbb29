"""Benchmark metrics: accuracy tables with bootstrap intervals, on small hand-built stores whose
right answers are known."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from personasim.analysis import metrics
from personasim.analysis.metrics import (
    ALLOWED_DIMENSIONS,
    accuracy_table,
    bootstrap_ci,
    cluster_bootstrap_ci,
    session_bucket,
    summary_tables,
    token_bucket,
)
from personasim.sim.rows import AnswerRow, QuestionRow, RunRow
from personasim.sim.store import TrajectoryStore

SCRIPTED = {"chatbot_backend": {"kind": "scripted"}}


def _run(run_id: str, config: dict) -> RunRow:
    return RunRow(run_id=run_id, seed=0, config_json=json.dumps(config), personasim_version="0", world_data_hash="h",
                  package_versions_json="{}", users=1, sessions_per_user=1, status="completed")


def _question(run_id: str, qid: str, persona: str, **fields: object) -> QuestionRow:
    base: dict[str, object] = dict(
        run_id=run_id, question_id=qid, persona_id=persona, question_type="explicit_recall",
        asked_at=datetime(2025, 1, 1), topic="coffee", scenario_id="s", query="q?", options=["a", "b", "c", "d"],
        option_sources=["correct", "stale", "other_user", "disliked"], correct_index=0, preference_id="p",
        stale_preference_id=None, reveal_mode="implicit", reveals=1, sessions_since_reveal=0,
        tokens_since_reveal=100,
    )
    return QuestionRow(**(base | fields))


def _answer(run_id: str, qid: str, persona: str, strategy: str, correct: bool, **fields: object) -> AnswerRow:
    base: dict[str, object] = dict(
        run_id=run_id, answer_id=f"{qid}/{strategy}", question_id=qid, persona_id=persona, strategy=strategy,
        reader="embedding", snapshot_id=None, chosen_index=0 if correct else 1, correct=correct,
        scores=[0.0] * 4, context_tokens=10,
    )
    return AnswerRow(**(base | fields))


def _store(tmp_path, items: list[dict], runs: dict[str, dict] | None = None):
    """A store with one question per item and one answer to it. Item keys: ``correct`` and
    optionally run_id, persona, strategy, context_tokens, reader, reader_model, or question fields."""
    answer_keys = {"reader", "reader_model", "context_tokens"}
    runs = runs or {"r1": SCRIPTED}
    questions, answers = [], []
    for i, item in enumerate(items):
        item = dict(item)
        run_id, persona = item.pop("run_id", "r1"), item.pop("persona", "u0")
        strategy, correct = item.pop("strategy", "A"), item.pop("correct")
        answer_fields = {k: item.pop(k) for k in list(item) if k in answer_keys}
        questions.append(_question(run_id, f"q{i}", persona, **item))
        answers.append(_answer(run_id, f"q{i}", persona, strategy, correct, **answer_fields))
    store = TrajectoryStore(tmp_path / "s.duckdb")
    store.write_many([("runs", [_run(r, c) for r, c in runs.items()]), ("questions", questions),
                      ("answers", answers)])
    return store


def _outcomes(hits: int, total: int, **fields: object) -> list[dict]:
    return [{"correct": i < hits, **fields} for i in range(total)]


def test_accuracy_by_strategy(tmp_path):
    items = _outcomes(3, 4, strategy="A", context_tokens=10) + _outcomes(1, 4, strategy="B", context_tokens=30)
    with _store(tmp_path, items) as store:
        table = accuracy_table(store.con, "r1")
    assert list(table.columns) == ["strategy", "answers", "accuracy", "ci_low", "ci_high", "mean_context_tokens"]
    assert table["strategy"].tolist() == ["A", "B"]
    assert table["answers"].tolist() == [4, 4]
    assert table["accuracy"].tolist() == [0.75, 0.25]
    assert table["mean_context_tokens"].tolist() == [10.0, 30.0]


def test_grouping_by_question_type_and_filtering(tmp_path):
    items = (_outcomes(2, 2, strategy="A", question_type="explicit_recall")
             + _outcomes(0, 3, strategy="A", question_type="implicit_inference")
             + _outcomes(1, 2, strategy="B", question_type="implicit_inference")
             + _outcomes(1, 1, strategy="C", question_type="explicit_recall"))
    with _store(tmp_path, items) as store:
        table = accuracy_table(store.con, "r1", by=["strategy", "question_type"])
        filtered = accuracy_table(store.con, "r1", by=["question_type"], where={"strategy": ["A", "B"]})
        single = accuracy_table(store.con, "r1", by=["strategy"], where={"question_type": "explicit_recall"})
    got = [(s, t, n, a) for s, t, n, a in table[["strategy", "question_type", "answers", "accuracy"]].itertuples(
        index=False)]
    assert got == [("A", "explicit_recall", 2, 1.0), ("A", "implicit_inference", 3, 0.0),
                   ("B", "implicit_inference", 2, 0.5), ("C", "explicit_recall", 1, 1.0)]
    assert filtered[["question_type", "answers"]].values.tolist() == [["explicit_recall", 2], ["implicit_inference", 5]]
    assert filtered["accuracy"].tolist() == [1.0, 0.2]
    assert single["strategy"].tolist() == ["A", "C"]


def test_distance_buckets():
    sessions = [0, 1, 2, 3, 4, 5, 7, 8, 30, -1]
    assert list(session_bucket(sessions)) == ["0", "1", "2-3", "2-3", "4-7", "4-7", "4-7", "8+", "8+", "n/a"]
    tokens = [0, 500, 999, 1_000, 3_999, 4_000, 7_999, 8_000, 16_000, 20_000, 32_000, 64_000, 127_999, 128_000,
              10**6, -1]
    assert list(token_bucket(tokens)) == ["<1k", "<1k", "<1k", "1k-4k", "1k-4k", "4k-8k", "4k-8k", "8k-16k",
                                          "16k-32k", "16k-32k", "32k-64k", "64k-128k", "64k-128k", "128k+",
                                          "128k+", "n/a"]
    assert len(metrics.SESSION_BUCKET_EDGES) == len(metrics.SESSION_BUCKET_LABELS)
    assert len(metrics.TOKEN_BUCKET_EDGES) == len(metrics.TOKEN_BUCKET_LABELS)


def test_bucket_dimensions_in_a_table_sort_by_distance(tmp_path):
    items = [{"correct": True, "sessions_since_reveal": s, "tokens_since_reveal": t}
             for s, t in [(-1, -1), (9, 70_000), (5, 20_000), (0, 500), (0, 900), (1, 2_000)]]
    with _store(tmp_path, items) as store:
        by_session = accuracy_table(store.con, "r1", by=["sessions_since_reveal_bucket"])
        by_tokens = accuracy_table(store.con, "r1", by=["tokens_since_reveal_bucket"])
        near = accuracy_table(store.con, "r1", where={"tokens_since_reveal_bucket": "<1k"})
    assert by_session["sessions_since_reveal_bucket"].astype(str).tolist() == ["0", "1", "4-7", "8+", "n/a"]
    assert by_session["answers"].tolist() == [2, 1, 1, 1, 1]
    assert by_tokens["tokens_since_reveal_bucket"].astype(str).tolist() == [
        "<1k", "1k-4k", "16k-32k", "64k-128k", "n/a"]
    assert near["answers"].tolist() == [2]


def test_intervals_contain_the_accuracy_and_stay_in_range(tmp_path):
    items = (_outcomes(7, 10, strategy="A") + _outcomes(10, 10, strategy="B") + _outcomes(0, 5, strategy="C")
             + _outcomes(1, 1, strategy="D") + _outcomes(0, 1, strategy="E"))
    with _store(tmp_path, items) as store:
        table = accuracy_table(store.con, "r1", n_boot=500).set_index("strategy")
    assert ((table["ci_low"] <= table["accuracy"]) & (table["accuracy"] <= table["ci_high"])).all()
    assert ((table["ci_low"] >= 0) & (table["ci_high"] <= 1)).all()
    assert table.loc["A", "ci_low"] < 0.7 < table.loc["A", "ci_high"]
    assert (table.loc["B", "ci_low"], table.loc["B", "ci_high"]) == (1.0, 1.0)
    assert (table.loc["C", "ci_low"], table.loc["C", "ci_high"]) == (0.0, 0.0)
    for single in ("D", "E"):
        assert table.loc[single, "ci_low"] == table.loc[single, "ci_high"] == table.loc[single, "accuracy"]


def test_intervals_shrink_as_answers_grow(tmp_path):
    items = _outcomes(12, 20, strategy="few") + _outcomes(1200, 2000, strategy="many")
    with _store(tmp_path, items) as store:
        table = accuracy_table(store.con, "r1").set_index("strategy")
    width = table["ci_high"] - table["ci_low"]
    assert table["accuracy"].tolist() == [0.6, 0.6]
    assert (table["ci_low"] <= 0.6).all() and (table["ci_high"] >= 0.6).all()
    assert width["many"] < width["few"] / 5  # width scales as 1/sqrt(n): 100x the answers, 10x narrower


def test_half_width_at_fifty_percent_with_400_answers(tmp_path):
    with _store(tmp_path, _outcomes(200, 400)) as store:
        row = accuracy_table(store.con, "r1").iloc[0]
    assert row["accuracy"] == 0.5
    half_width = (row["ci_high"] - row["ci_low"]) / 2
    assert 0.03 <= half_width <= 0.07  # normal theory: 1.96 * sqrt(0.25 / 400) = 0.049


def test_seed_makes_tables_reproducible(tmp_path):
    items = _outcomes(13, 31, strategy="A") + _outcomes(20, 47, strategy="B")
    with _store(tmp_path, items) as store:
        first = accuracy_table(store.con, "r1", seed=3)
        again = accuracy_table(store.con, "r1", seed=3)
        other = accuracy_table(store.con, "r1", seed=4)
        only_b = accuracy_table(store.con, "r1", seed=3, where={"strategy": "B"})
    pd.testing.assert_frame_equal(first, again)
    assert not first[["ci_low", "ci_high"]].equals(other[["ci_low", "ci_high"]])
    assert first["accuracy"].equals(other["accuracy"])
    # a group's interval does not depend on which other groups are in the table
    pd.testing.assert_frame_equal(only_b, first[first["strategy"] == "B"].reset_index(drop=True))


def test_bootstrap_ci_primitive():
    draws = np.array([1, 0, 1, 1, 0, 1, 0, 1])
    a = bootstrap_ci(draws, 200, 0.9, np.random.default_rng(1))
    b = bootstrap_ci(draws, 200, 0.9, np.random.default_rng(1))
    assert a == b and 0 <= a[0] <= 5 / 8 <= a[1] <= 1
    assert bootstrap_ci(np.ones(50), 100, 0.95, np.random.default_rng(0)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci(np.array([]), 100, 0.95, np.random.default_rng(0))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(draws, 100, 1.5, np.random.default_rng(0))


def test_bootstrap_hit_counts_are_drawn_as_index_resampling_would_draw_them():
    """A resample's hit count is drawn as Binomial(n, k/n), the exact distribution of n draws with
    replacement: its interval matches the index-matrix bootstrap's, whatever the outcomes' order."""
    draws = np.random.default_rng(9).integers(0, 2, size=400)
    fast = bootstrap_ci(draws, 20_000, 0.95, np.random.default_rng(5))
    idx = np.random.default_rng(6).integers(0, 400, size=(20_000, 400))
    by_index = np.quantile(draws[idx].mean(axis=1), [0.025, 0.975])
    assert np.allclose(fast, by_index, atol=3 / 400)  # within three steps of 1/n
    assert bootstrap_ci(draws[::-1], 20_000, 0.95, np.random.default_rng(5)) == fast
    assert bootstrap_ci(np.sort(draws), 20_000, 0.95, np.random.default_rng(5)) == fast


def test_cluster_draws_in_blocks_equal_one_index_matrix(monkeypatch):
    """Large cluster bootstraps are drawn in blocks to bound memory; the indices are those of one matrix."""
    rng = np.random.default_rng(9)
    correct, clusters = rng.integers(0, 2, size=120), rng.integers(0, 37, size=120)
    whole = cluster_bootstrap_ci(correct, clusters, 300, 0.95, np.random.default_rng(5))
    monkeypatch.setattr(metrics, "_MAX_DRAWS_PER_BLOCK", 37 * 7)
    assert cluster_bootstrap_ci(correct, clusters, 300, 0.95, np.random.default_rng(5)) == whole


def test_cluster_bootstrap_is_wider_for_clustered_answers(tmp_path):
    # ten users, each either always right or always wrong: 200 answers but only 10 independent units
    items = []
    for user in range(10):
        items += _outcomes(20 if user % 2 else 0, 20, persona=f"u{user}")
    with _store(tmp_path, items) as store:
        plain = accuracy_table(store.con, "r1").iloc[0]
        clustered = accuracy_table(store.con, "r1", cluster="persona").iloc[0]
        with pytest.raises(ValueError, match="cluster"):
            accuracy_table(store.con, "r1", cluster="question")  # type: ignore[arg-type]
    assert plain["accuracy"] == clustered["accuracy"] == 0.5
    assert clustered["ci_low"] <= 0.5 <= clustered["ci_high"]
    assert clustered["ci_high"] - clustered["ci_low"] >= plain["ci_high"] - plain["ci_low"]
    assert clustered["ci_high"] - clustered["ci_low"] > 0.3  # about 2 * 1.96 * sqrt(0.25 / 10) = 0.62


def test_cluster_bootstrap_primitive_single_cluster_is_a_point():
    correct = np.array([1, 0, 1, 1])
    assert cluster_bootstrap_ci(correct, np.array(["u"] * 4), 100, 0.95, np.random.default_rng(0)) == (0.75, 0.75)


def test_backend_from_run_config(tmp_path):
    runs = {  # configs are validated on read, by the run id's kind
        "run-1": {"chatbot_backend": {"kind": "openai", "model": "gpt-4o-mini"}},
        "run-2": {"chatbot_backend": {"kind": "scripted"}},
        "pmv2-3": {"source": "personamem_v2", "folder": "data", "window": "32k", "files": [], "strategies": []},
    }
    items = _outcomes(1, 2, run_id="run-1") + _outcomes(2, 2, run_id="run-2") + _outcomes(0, 3, run_id="pmv2-3")
    with _store(tmp_path, items, runs=runs) as store:
        table = accuracy_table(store.con, by=["backend"])
        only = accuracy_table(store.con, by=["strategy"], where={"backend": "scripted:scripted-v1"})
    assert table[["backend", "answers", "accuracy"]].values.tolist() == [
        ["external", 3, 0.0], ["openai:gpt-4o-mini", 2, 0.5], ["scripted:scripted-v1", 2, 1.0]]
    assert only["answers"].tolist() == [2]


def test_unknown_dimension_names_the_allowed_ones(tmp_path):
    with _store(tmp_path, _outcomes(1, 1)) as store:
        with pytest.raises(ValueError, match="colour") as err:
            accuracy_table(store.con, "r1", by=["strategy", "colour"])
        with pytest.raises(ValueError, match="allowed"):
            accuracy_table(store.con, "r1", where={"colour": "red"})
    for name in ALLOWED_DIMENSIONS:
        assert name in str(err.value)
    assert {"backend", "sessions_since_reveal_bucket", "tokens_since_reveal_bucket"} <= set(ALLOWED_DIMENSIONS)


def test_all_runs_are_pooled_when_run_id_is_none(tmp_path):
    runs = {"r1": SCRIPTED, "r2": SCRIPTED}
    items = _outcomes(3, 4, run_id="r1") + _outcomes(1, 4, run_id="r2")
    with _store(tmp_path, items, runs=runs) as store:
        pooled = accuracy_table(store.con)
        one = accuracy_table(store.con, "r2")
        per_run = accuracy_table(store.con, by=["run_id", "strategy"])
    assert pooled[["answers", "accuracy"]].values.tolist() == [[8, 0.5]]
    assert one[["answers", "accuracy"]].values.tolist() == [[4, 0.25]]
    assert per_run["run_id"].tolist() == ["r1", "r2"]


def test_missing_reader_model_is_its_own_group(tmp_path):
    items = _outcomes(1, 2, reader="llm", reader_model="m") + _outcomes(0, 1, reader="embedding")
    with _store(tmp_path, items) as store:
        table = accuracy_table(store.con, "r1", by=["reader_model"])
    assert table["reader_model"].iloc[0] == "m" and pd.isna(table["reader_model"].iloc[1])
    assert table["answers"].tolist() == [2, 1]


def test_summary_tables(tmp_path):
    items = _outcomes(3, 4, strategy="A", question_type="implicit_inference", sessions_since_reveal=5,
                      tokens_since_reveal=20_000) + _outcomes(1, 2, strategy="B", reveal_mode="explicit")
    with _store(tmp_path, items) as store:
        tables = summary_tables(store.con, "r1", n_boot=100)
        empty = accuracy_table(store.con, "missing-run")
    assert set(tables) == {"by_strategy", "by_type", "by_reveal_mode", "by_session_distance", "by_token_distance",
                           "by_backend"}
    assert list(tables["by_strategy"].columns[:2]) == ["strategy", "reader"]
    assert list(tables["by_backend"].columns[:2]) == ["backend", "strategy"]
    assert tables["by_session_distance"]["sessions_since_reveal_bucket"].astype(str).tolist() == ["4-7", "0"]
    assert tables["by_token_distance"]["tokens_since_reveal_bucket"].astype(str).tolist() == ["16k-32k", "<1k"]
    assert all(t["answers"].sum() == 6 for t in tables.values())
    assert empty.empty and list(empty.columns)[0] == "strategy"
