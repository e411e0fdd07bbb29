"""Paired comparisons: McNemar and the paired bootstrap on hand-built answer tables with known counts."""

from __future__ import annotations

import json
import math
from datetime import datetime

import duckdb
import numpy as np
import pytest

from personasim.analysis.compare import compare, mcnemar_exact, paired_bootstrap_ci
from personasim.sim.rows import AnswerRow, QuestionRow, RunRow
from personasim.sim.store import TrajectoryStore


def _run(run_id: str, kind: str = "scripted", model: str | None = None) -> RunRow:
    backend = {"kind": kind} | ({"model": model} if model else {})
    return RunRow(run_id=run_id, seed=0, config_json=json.dumps({"chatbot_backend": backend}), personasim_version="0",
                  world_data_hash="h", package_versions_json="{}", users=1, sessions_per_user=1, status="completed")


def _question(run_id: str, qid: str, qtype: str) -> QuestionRow:
    return QuestionRow(run_id=run_id, question_id=qid, persona_id="u0", question_type=qtype,
                       asked_at=datetime(2025, 1, 1), topic="t", scenario_id="s", query="q?",
                       options=["a", "b", "c", "d"], option_sources=["correct", "stale", "other_user", "disliked"],
                       correct_index=0, preference_id="p", stale_preference_id=None, reveal_mode="explicit",
                       reveals=1, sessions_since_reveal=0)


def _answer(run_id: str, qid: str, strategy: str, correct: bool, reader: str = "embedding") -> AnswerRow:
    return AnswerRow(run_id=run_id, answer_id=f"{qid}/{strategy}/{reader}", question_id=qid, persona_id="u0",
                     strategy=strategy, reader=reader, snapshot_id=None, chosen_index=0 if correct else 1,
                     correct=correct, scores=[0.0] * 4, context_tokens=1)


# (A right, B right) -> count: 10 both right, 12 A only, 2 B only, 6 both wrong
CELLS = {(True, True): 10, (True, False): 12, (False, True): 2, (False, False): 6}


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    questions, answers = [], []
    i = 0
    for (a_right, b_right), count in CELLS.items():
        for _ in range(count):
            qid = f"q{i:02d}"
            questions.append(_question("r1", qid, "explicit_recall" if i % 2 else "implicit_inference"))
            answers += [_answer("r1", qid, "A", a_right), _answer("r1", qid, "B", b_right)]
            i += 1
    # C answered only questions of its own; D answered twice per question (two readers)
    questions.append(_question("r1", "qc", "explicit_recall"))
    answers.append(_answer("r1", "qc", "C", True))
    answers += [_answer("r1", "q00", "D", True, reader="embedding"), _answer("r1", "q00", "D", False, reader="llm")]
    # a second run with another backend, same question ids, all right
    questions += [_question("r2", q.question_id, q.question_type) for q in questions[:30]]
    answers += [_answer("r2", q.question_id, "A", True) for q in questions[:30]]
    path = tmp_path_factory.mktemp("compare") / "s.duckdb"
    store = TrajectoryStore(path)
    store.write_many([("runs", [_run("r1"), _run("r2", "openai", "qwen")]), ("questions", questions),
                      ("answers", answers)])
    store.close()
    connection = duckdb.connect(str(path), read_only=True)
    yield connection
    connection.close()


def test_mcnemar_exact_known_values():
    # 12 vs 2 discordant: p = 2 * (C(14,0) + C(14,1) + C(14,2)) / 2^14
    assert mcnemar_exact(12, 2) == pytest.approx(2 * (1 + 14 + 91) / 2**14)
    assert mcnemar_exact(2, 12) == mcnemar_exact(12, 2)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 1) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_paired_bootstrap_primitive():
    rng = np.random.default_rng(0)
    assert paired_bootstrap_ci(np.ones(10), np.ones(10), 200, 0.05, rng) == (0.0, 0.0)
    assert paired_bootstrap_ci(np.array([1]), np.array([0]), 200, 0.05, rng) == (1.0, 1.0)
    low, high = paired_bootstrap_ci(np.r_[np.ones(50), np.zeros(50)], np.zeros(100), 500, 0.05, rng)
    assert low < 0.5 < high


def test_compare_reports_a_significant_difference(con):
    row = compare(con, "r1", "A", "B").iloc[0]
    assert (row["n_pairs"], row["a_only"], row["b_only"]) == (30, 12, 2)
    assert row["acc_a"] == pytest.approx(22 / 30) and row["acc_b"] == pytest.approx(12 / 30)
    assert row["diff"] == pytest.approx(10 / 30)
    assert row["ci_low"] < row["diff"] < row["ci_high"] and row["ci_low"] > 0
    assert row["p_value"] == pytest.approx(212 / 2**14)
    assert row["significant"]
    assert row["verdict"].startswith("A beats B by 33.3 points (95% CI ")
    assert "McNemar p=0.013" in row["verdict"]
    swapped = compare(con, "r1", "B", "A").iloc[0]
    assert swapped["diff"] == pytest.approx(-10 / 30) and swapped["verdict"].startswith("A beats B by 33.3")
    assert compare(con, "r1", "A", "B", seed=0).equals(compare(con, "r1", "A", "B", seed=0))


def test_not_significant_at_a_strict_alpha(con):
    row = compare(con, "r1", "A", "B", alpha=0.001).iloc[0]
    assert not row["significant"]
    assert row["verdict"].startswith("no significant difference between A and B")


def test_per_question_type(con):
    table = compare(con, "r1", "A", "B", per_type=True)
    assert table["question_type"].tolist() == ["all", "explicit_recall", "implicit_inference"]
    assert table["n_pairs"].tolist() == [30, 15, 15]
    assert table.iloc[1:]["a_only"].sum() == 12 and table.iloc[1:]["b_only"].sum() == 2


def test_compare_backends_across_runs(con):
    row = compare(con, None, "openai:qwen", "scripted:scripted-v1", by="backend", where={"strategy": "A"}).iloc[0]
    assert row["n_pairs"] == 30 and row["acc_a"] == 1 and row["acc_b"] == pytest.approx(22 / 30)
    assert row["b_only"] == 0 and row["a_only"] == 8


def test_compare_errors_are_clear(con):
    with pytest.raises(ValueError, match="no answers with strategy == 'Z'.*available: A, B, C, D"):
        compare(con, "r1", "A", "Z")
    with pytest.raises(ValueError, match="share no questions"):
        compare(con, "r1", "A", "C")
    with pytest.raises(ValueError, match="several answers per question.*reader"):
        compare(con, "r1", "A", "D")
    assert compare(con, "r1", "A", "D", reader="embedding").iloc[0]["n_pairs"] == 1
    with pytest.raises(ValueError, match="by must be one of"):
        compare(con, "r1", "A", "B", by="persona_id")
    with pytest.raises(ValueError, match="both 'A'"):
        compare(con, "r1", "A", "A")


def test_compare_on_a_real_run(small_run):
    summary, db = small_run
    with duckdb.connect(str(db), read_only=True) as real:
        strategies = sorted(s.strategy for s in summary.scores)
        row = compare(real, summary.run_id, strategies[0], strategies[-1], n_boot=300).iloc[0]
        assert row["n_pairs"] == summary.questions
        assert 0 <= row["p_value"] <= 1 and row["ci_low"] <= row["diff"] <= row["ci_high"]
        assert isinstance(row["verdict"], str) and not math.isnan(row["acc_a"])
