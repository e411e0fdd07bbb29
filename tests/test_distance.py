"""Reveal-to-question distance as a result: the stored distances recomputed from the turns, their
distribution beside PersonaMem-v2's, accuracy against distance, and where they are shown (eval, report)."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from personasim.analysis.distance import (
    ALL_TYPES,
    DISTANCE_QUANTILES,
    PERSONAMEM_V2_DISTANCES,
    accuracy_by_distance,
    distance_distribution,
    distance_vs_personamem_v2,
)
from personasim.analysis.metrics import TOKEN_BUCKET_LABELS, token_bucket
from personasim.cli import app


@pytest.fixture(scope="module")
def stored(small_run):
    """A read-only connection to the session's run and its id."""
    _, db = small_run
    con = duckdb.connect(str(db), read_only=True)
    (run_id,) = con.execute("SELECT run_id FROM runs").fetchall()[0]
    yield con, run_id, Path(db)
    con.close()


def _expected_distance(question: pd.Series, turns: pd.DataFrame, prefs: pd.DataFrame) -> int:
    """Tokens of the persona's turns strictly after the last reveal of the question's preference and
    strictly before the question; a reveal of the user's own preference is any revealing turn of one
    of their own preferences with the same (topic, option, polarity), another person's only its own id."""
    if not question.preference_id:
        return -1
    mine = turns[turns["persona_id"] == question.persona_id]
    pref = prefs.loc[question.preference_id]
    if pref.owner == "self":
        same = prefs[(prefs["owner"] == "self") & (prefs["topic"] == pref.topic) & (prefs["option"] == pref.option)
                     & (prefs["polarity"] == pref.polarity)].index
    else:
        same = pd.Index([question.preference_id])
    reveals = mine[mine["revealed_preference_id"].isin(same) & (mine["time"] < question.asked_at)]
    if reveals.empty:
        return -1
    last = reveals["time"].max()
    between = mine[(mine["time"] > last) & (mine["time"] < question.asked_at)]
    return int(between["tokens"].sum())


def test_stored_distance_is_the_tokens_between_the_last_reveal_and_the_question(stored):
    con, run_id, _ = stored
    questions = con.execute("SELECT question_id, persona_id, asked_at, preference_id, tokens_since_reveal"
                            " FROM questions WHERE run_id = ?", [run_id]).df()
    turns = con.execute("SELECT persona_id, time, tokens, revealed_preference_id FROM turns WHERE run_id = ?",
                        [run_id]).df()
    prefs = con.execute("SELECT preference_id, topic, option, polarity, owner FROM preferences WHERE run_id = ?",
                        [run_id]).df().set_index("preference_id")
    assert len(questions) > 0
    expected = [_expected_distance(q, turns, prefs) for q in questions.itertuples(index=False)]
    mismatches = [(q, e, s) for q, e, s in zip(questions["question_id"], expected,
                                              questions["tokens_since_reveal"], strict=True) if e != s]
    assert not mismatches, mismatches[:5]
    assert sum(d > 0 for d in expected) > 0, "the run has questions far enough from their reveals to measure"
    assert -1 in expected, "abstention questions are never revealed"


def test_distribution_quantiles_are_numpys_on_the_stored_column(stored):
    con, run_id, _ = stored
    stored_rows = con.execute("SELECT question_type, tokens_since_reveal FROM questions WHERE run_id = ?",
                              [run_id]).df()
    table = distance_distribution(con, run_id)
    types = sorted(stored_rows["question_type"].unique())
    assert table["question_type"].tolist() == [*types, ALL_TYPES]
    assert list(table.columns) == ["question_type", "n", "not_revealed", *DISTANCE_QUANTILES]
    groups = {t: stored_rows[stored_rows["question_type"] == t] for t in types} | {ALL_TYPES: stored_rows}
    for row in table.itertuples(index=False):
        values = groups[row.question_type]["tokens_since_reveal"].to_numpy()
        revealed = values[values >= 0]
        assert (row.n, row.not_revealed) == (revealed.size, (values < 0).sum())
        for name, q in DISTANCE_QUANTILES.items():
            if revealed.size:
                assert getattr(row, name) == pytest.approx(float(np.quantile(revealed, q)))
            else:
                assert np.isnan(getattr(row, name))
    overall = table.iloc[-1]
    assert overall["n"] > 0 and overall["not_revealed"] + overall["n"] == len(stored_rows)

    only = distance_distribution(con, run_id, question_types=[types[0]])
    assert only["question_type"].tolist() == [types[0], ALL_TYPES]
    assert only.iloc[0].drop("question_type").equals(only.iloc[1].drop("question_type"))


def test_distribution_beside_personamem_v2(stored):
    con, run_id, _ = stored
    distribution = distance_distribution(con, run_id)
    side = distance_vs_personamem_v2(distribution)
    assert side["statistic"].tolist() == list(DISTANCE_QUANTILES)
    overall = distribution.iloc[-1]
    assert side["run"].tolist() == pytest.approx([overall[name] for name in DISTANCE_QUANTILES])
    assert side.set_index("statistic").loc["median", "personamem_v2_32k"] == 18_900
    assert side.set_index("statistic").loc["p75", "personamem_v2_128k"] == 89_400
    assert np.isnan(side.set_index("statistic").loc["p95", "personamem_v2_32k"])
    with pytest.raises(ValueError, match="all"):
        distance_vs_personamem_v2(distribution.iloc[:-1])


def test_accuracy_by_distance_counts_the_answers_of_each_strategy_and_bucket(stored):
    con, run_id, _ = stored
    table = accuracy_by_distance(con, run_id, n_boot=50)
    answers = con.execute("SELECT a.strategy, a.correct, q.tokens_since_reveal FROM answers a JOIN questions q"
                          " USING (run_id, question_id) WHERE a.run_id = ?", [run_id]).df()
    answers["bucket"] = token_bucket(answers["tokens_since_reveal"]).astype(str)
    answers = answers[answers["tokens_since_reveal"] >= 0]
    expected: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for strategy, correct, bucket in answers[["strategy", "correct", "bucket"]].itertuples(index=False):
        expected[(strategy, bucket)].append(bool(correct))
    got = {(r.strategy, str(r.tokens_since_reveal_bucket)): r for r in table.itertuples(index=False)}
    assert set(got) == set(expected) and got
    for key, outcomes in expected.items():
        row = got[key]
        assert row.n == len(outcomes)
        assert row.accuracy == pytest.approx(np.mean(outcomes))
        assert row.ci_low <= row.accuracy <= row.ci_high
    assert set(table["tokens_since_reveal_bucket"].astype(str)) <= set(TOKEN_BUCKET_LABELS)
    with_na = accuracy_by_distance(con, run_id, n_boot=50, include_not_revealed=True)
    assert "n/a" in set(with_na["tokens_since_reveal_bucket"].astype(str))


def test_accuracy_vs_distance_plot_orders_buckets_near_to_far():
    from personasim.analysis.plots import accuracy_vs_distance

    buckets = token_bucket([70_000, 500, 20_000, 500])
    frame = pd.DataFrame({"strategy": ["a", "a", "a", "b"], "tokens_since_reveal_bucket": buckets,
                          "accuracy": [0.2, 0.9, 0.5, 0.4], "ci_low": [0.1, 0.8, 0.3, 0.2],
                          "ci_high": [0.3, 1.0, 0.7, 0.6]})
    fig = accuracy_vs_distance(frame, chance=0.25)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["<1k", "16k-32k", "64k-128k"]
    lines = {container.get_label(): container.lines[0] for container in ax.containers}
    assert list(lines["a"].get_xdata().round()) == [2, 0, 1] and list(lines["a"].get_ydata()) == [0.2, 0.9, 0.5]
    assert len(lines["b"].get_xdata()) == 1


def test_eval_cli_prints_the_distance_distribution_beside_personamem_v2(stored, tmp_path):
    _, _, db = stored
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    result = CliRunner().invoke(app, ["eval", "--db", str(copy), "--quiet", "--strategies", "none",
                                      "--bootstrap", "20"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(copy), read_only=True)
    try:
        (run_id,) = con.execute("SELECT run_id FROM runs").fetchall()[0]
        overall = distance_distribution(con, run_id).iloc[-1]
        distances = con.execute("SELECT tokens_since_reveal FROM questions WHERE run_id = ?", [run_id]).df()
    finally:
        con.close()
    lines = result.output.splitlines()
    title = next(i for i, line in enumerate(lines) if "from the last reveal to the question (distance)" in line)
    all_row = next(line for line in lines[title:] if line.strip("│ ").startswith(f"{ALL_TYPES} "))
    assert f"{overall['n']:,}" in all_row and f"{overall['median']:,.0f}" in all_row
    for window, ref in PERSONAMEM_V2_DISTANCES.items():
        row = next(line for line in lines if f"PersonaMem-v2 {window}" in line)
        assert all(f"{ref[k]:,}" in row for k in ("p25", "median", "p75")), row
    for label in set(token_bucket(distances["tokens_since_reveal"]).astype(str)):
        assert any(line.strip("│ ").startswith(label) for line in lines), label


def test_report_has_the_distance_section_and_figure(stored, tmp_path):
    from personasim.analysis.report import write_report

    con, run_id, _ = stored
    written = write_report(con, run_id, tmp_path, n_boot=20)
    figure = tmp_path / "figures" / "accuracy_vs_distance.png"
    assert figure in written and figure.read_bytes().startswith(b"\x89PNG")
    markdown = (tmp_path / "report.md").read_text()
    section = markdown.split("## Distance from the reveal to the question", 1)[1].split("\n## ", 1)[0]
    overall = distance_distribution(con, run_id).iloc[-1]
    assert f"median **{overall['median']:,.0f}**" in section
    assert "18,900" in section and "64,000" in section
    assert "![accuracy_vs_distance](figures/accuracy_vs_distance.png)" in section
    assert "Distance quantiles vs PersonaMem-v2" in section
