"""`personasim audit`: hand-built benchmarks with known artifacts, and the audit reporting them exactly."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from personasim.analysis.audit import (
    AuditReport,
    audit,
    audit_table,
    length_facts,
    tie_credit,
)
from personasim.analysis.profiles import profile_text
from personasim.cli import app
from personasim.sim.rows import PersonaRow, QuestionRow, RunRow
from personasim.sim.store import TrajectoryStore

FIXTURE = Path(__file__).parent / "fixtures" / "personamem_v2" / "mini"
RUN = "run-audit"
WIDE = {"COLUMNS": "200"}  # the whole table, whatever the test runner's terminal


@pytest.fixture(scope="module")
def embedder():
    from personasim.agents.embedding import default_embedder

    return default_embedder()


def _run() -> RunRow:
    return RunRow(run_id=RUN, seed=0, config_json="{}", personasim_version="test", world_data_hash="x",
                  package_versions_json="{}", users=2, sessions_per_user=1, status="completed")


def _persona(pid: str, occupation: str = "nurse", age: int = 34, gender: str = "female", city: str = "Leeds",
             country: str = "United Kingdom") -> PersonaRow:
    return PersonaRow(run_id=RUN, persona_id=pid, user_index=int(pid[-1]), locale="en_GB", name="Ann Smith",
                      age=age, gender=gender, occupation=occupation, city=city, country=country)


def _question(i: int, options: list[str], correct: int, qtype: str = "explicit_recall", persona: str = "p0",
              query: str = "Can you suggest something for this weekend?") -> QuestionRow:
    return QuestionRow(
        run_id=RUN, question_id=f"q{i:03d}", persona_id=persona, question_type=qtype,
        asked_at=datetime(2025, 1, 1), topic="t", scenario_id="s", query=query, options=options,
        option_sources=["correct" if k == correct else "alternative" for k in range(len(options))],
        correct_index=correct, preference_id="pref", stale_preference_id=None, reveal_mode="explicit", reveals=1,
        sessions_since_reveal=0,
    )


def _store(path: Path, questions: list[QuestionRow], personas: list[PersonaRow] | None = None) -> Path:
    with TrajectoryStore(path) as store:
        store.write("runs", [_run()])
        store.write("personas", personas if personas is not None else [_persona("p0"), _persona("p1")])
        if questions:
            store.write("questions", questions)
    return path


def _audit(path: Path, embedder) -> AuditReport:
    with TrajectoryStore(path, read_only=True) as store:
        return audit(store.con, RUN, embedder)


def _longest_correct(n: int, qtype: str = "explicit_recall", start: int = 0) -> list[QuestionRow]:
    """The correct option is strictly the longest, at every position in turn."""
    out = []
    for i in range(n):
        correct = i % 4
        options = [f"Try the {w} plan." for w in ("red", "blue", "green", "gold")]
        options[correct] = f"Try the long plan with extra detail number {i}, which is much longer than the rest."
        out.append(_question(start + i, options, correct, qtype))
    return out


def _shortest_correct(n: int, qtype: str = "implicit_inference", start: int = 0) -> list[QuestionRow]:
    out = []
    for i in range(n):
        correct = (i + 1) % 4
        options = [f"A long and detailed reply about option {w}, with plenty of words." for w in "abcd"]
        options[correct] = f"Short {i}."
        out.append(_question(start + i, options, correct, qtype))
    return out


# -- definitions ---------------------------------------------------------------------------------

def test_length_facts_count_ties_as_neither_longest_nor_shortest():
    assert length_facts(["aaaa", "bb", "cc", "dd"], 0) == (True, False, 2.0)
    assert length_facts(["a", "bb", "cc", "dd"], 0) == (False, True, 0.5)
    assert length_facts(["aaaa", "bbbb", "c", "d"], 0)[:2] == (False, False)  # tied longest
    assert length_facts(["a", "b", "cc", "dd"], 0)[:2] == (False, False)  # tied shortest
    assert length_facts(["aa", "bb", "cc", "dd"], 2) == (False, False, 1.0)
    assert length_facts(["x", "", ""], 0)[2] is None  # undefined ratio


def test_tie_credit_is_the_expected_accuracy_of_a_random_tie_break():
    assert tie_credit([3, 1, 2], 0) == 1.0
    assert tie_credit([3, 1, 2], 1) == 0.0
    assert tie_credit([3, 3, 1, 1], 1) == 0.5
    assert tie_credit([0.0, 0.0, 0.0, 0.0], 2) == 0.25
    assert tie_credit([0.5000001, 0.5, 0.1], 1) == 0.5  # equal to 6 decimals


def test_profile_text_reads_as_one_sentence_and_is_none_without_demographics():
    assert profile_text(34, "female", "nurse", "Leeds", "United Kingdom") == (
        "A 34-year-old nurse from Leeds, United Kingdom, female.")
    assert profile_text(80, "", "engineer", "", "") == "An 80-year-old engineer."
    assert profile_text(-1, "", "engineer", "", "Peru") == "An engineer from Peru."
    assert profile_text(-1, "", "", "", "") is None


# -- hand-built benchmarks -----------------------------------------------------------------------

def test_correct_always_longest_is_reported_exactly_and_flagged(tmp_path, embedder):
    report = _audit(_store(tmp_path / "s.duckdb", _longest_correct(8)), embedder)
    assert report.questions == 8 and report.chance == 0.25
    assert report.correct_longest_share == 1.0 and report.correct_shortest_share == 0.0
    assert report.blind_accuracy.longest == 1.0
    assert report.length_ratio is not None and report.length_ratio > 3
    assert any("explicit_recall" in f and "longest in 100.0%" in f for f in report.flags)
    assert any("all questions" in f and "blind reader longest scores 100.0%" in f for f in report.flags)


def test_correct_always_shortest_is_reported_exactly(tmp_path, embedder):
    report = _audit(_store(tmp_path / "s.duckdb", _shortest_correct(8)), embedder)
    assert report.correct_shortest_share == 1.0 and report.correct_longest_share == 0.0
    assert report.blind_accuracy.longest == 0.0
    assert report.length_ratio is not None and report.length_ratio < 0.5
    assert any("strictly the shortest in 100.0%" in f for f in report.flags)


def test_equal_lengths_give_no_length_artifact_and_longest_reader_at_chance(tmp_path, embedder):
    options = ["Plan AAA.", "Plan BBB.", "Plan CCC.", "Plan DDD."]
    questions = [_question(i, options, i % 4) for i in range(8)]
    report = _audit(_store(tmp_path / "s.duckdb", questions), embedder)
    assert report.correct_longest_share == 0.0 and report.correct_shortest_share == 0.0
    assert report.length_ratio == 1.0
    assert report.blind_accuracy.longest == 0.25  # a 4-way tie: 1/4 credit each, whatever the position
    assert not any("longest" in f for f in report.flags)


def test_two_way_tie_for_longest_counts_half_for_the_reader_and_not_for_the_share(tmp_path, embedder):
    questions = [_question(0, ["Plan long one.", "Plan long two.", "Plan A.", "Plan B."], 0)]
    report = _audit(_store(tmp_path / "s.duckdb", questions), embedder)
    assert report.correct_longest_share == 0.0
    assert report.blind_accuracy.longest == 0.5


def test_query_only_picks_the_option_that_repeats_the_query(tmp_path, embedder):
    topics = [("a vegetarian lasagna recipe", "Here is a vegetarian lasagna recipe with spinach and ricotta."),
              ("a marathon training schedule", "Here is a marathon training schedule building to 20-mile runs."),
              ("learning the violin as an adult", "Learning the violin as an adult works best with daily practice."),
              ("repotting a cactus", "When repotting a cactus, wear gloves and use a gritty soil mix.")]
    questions = []
    for i, (topic, answer) in enumerate(topics):
        others = [a for t, a in topics if t != topic]
        options = others[:i] + [answer] + others[i:]
        questions.append(_question(i, options, i, query=f"Can you help me with {topic}?"))
    report = _audit(_store(tmp_path / "s.duckdb", questions), embedder)
    assert report.blind_accuracy.query_only == 1.0


def test_persona_prior_picks_the_option_matching_the_profile(tmp_path, embedder):
    options = ["As a nurse on hospital night shifts, you could prep meals before your ward rounds.",
               "As a software engineer, you could batch your meals around sprint planning.",
               "As a professional footballer, you could plan meals around training at the stadium.",
               "As a farmer, you could cook with the vegetables from your fields."]
    questions = [_question(0, options, 0, persona="p0"), _question(1, options, 2, persona="p1")]
    personas = [_persona("p0", occupation="nurse"), _persona("p1", occupation="professional footballer", age=23,
                                                             gender="male")]
    report = _audit(_store(tmp_path / "s.duckdb", questions, personas), embedder)
    assert report.blind_accuracy.persona_prior == 1.0
    assert report.questions_without_profile == 0


def test_persona_prior_without_a_profile_answers_at_chance(tmp_path, embedder):
    options = ["As a nurse, rest after night shifts.", "As a pilot, rest between flights.", "As a chef, rest."]
    empty = _persona("p0", occupation="", age=-1, gender="", city="", country="")
    report = _audit(_store(tmp_path / "s.duckdb", [_question(0, options, 0)], [empty]), embedder)
    assert report.questions_without_profile == 1
    assert math.isclose(report.blind_accuracy.persona_prior, 1 / 3)
    assert math.isclose(report.chance, 1 / 3)


def test_per_type_split_is_exact_and_json_has_the_documented_keys(tmp_path, embedder):
    questions = _longest_correct(6, "explicit_recall") + _shortest_correct(2, "abstention", start=100)
    report = _audit(_store(tmp_path / "s.duckdb", questions), embedder)
    assert report.correct_longest_share == 6 / 8 and report.correct_shortest_share == 2 / 8
    assert list(report.by_type) == ["explicit_recall", "abstention"]  # the documented type order
    assert report.by_type["explicit_recall"].correct_longest_share == 1.0
    assert report.by_type["explicit_recall"].questions == 6
    assert report.by_type["abstention"].correct_shortest_share == 1.0
    assert report.by_type["abstention"].blind_accuracy.longest == 0.0
    dumped = json.loads(report.model_dump_json())
    keys = {"questions", "correct_longest_share", "correct_shortest_share", "blind_accuracy", "chance",
            "length_ratio"}
    assert keys <= set(dumped) and {"by_type", "flags"} <= set(dumped)
    assert set(dumped["blind_accuracy"]) == {"longest", "query_only", "persona_prior"}
    for figures in dumped["by_type"].values():
        assert keys <= set(figures)
    table = audit_table(report)
    assert list(table["question_type"]) == ["explicit_recall", "abstention", "all"]
    assert table.set_index("question_type").loc["all", "longest"] == 0.75
    assert {"chance", "length_ratio", "query_only", "persona_prior"} <= set(table.columns)


# -- command line --------------------------------------------------------------------------------

def test_cli_prints_the_table_and_flags_and_writes_json(tmp_path):
    db = _store(tmp_path / "s.duckdb", _longest_correct(8))
    out = tmp_path / "audit.json"
    result = CliRunner().invoke(app, ["audit", "--db", str(db), "--json", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "explicit_recall" in result.output and "chance" in result.output and "100.0%" in result.output
    assert "findings" in result.output and "strictly the longest" in result.output
    data = json.loads(out.read_text())
    assert data["questions"] == 8 and data["correct_longest_share"] == 1.0
    assert data["blind_accuracy"]["longest"] == 1.0 and "explicit_recall" in data["by_type"]


def test_cli_audits_personamem_v2_files(tmp_path):
    out = tmp_path / "pmv2.json"
    db = tmp_path / "pmv2.duckdb"
    args = ["audit", "--personamem-v2", str(FIXTURE), "--db", str(db), "--json", str(out)]
    for _ in range(2):  # the second call reuses the loaded run
        result = CliRunner().invoke(app, args, env=WIDE)
        assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["run_id"].startswith("pmv2-") and data["questions"] >= 1
    assert sum(f["questions"] for f in data["by_type"].values()) == data["questions"]
    assert data["questions_without_profile"] == 0  # the raw persona gives demographics
    result = CliRunner().invoke(app, ["audit", "--personamem-v2", str(FIXTURE)], env=WIDE)  # temporary store
    assert result.exit_code == 0, result.output
    assert "artifact audit" in result.output


@pytest.mark.parametrize("case", ["no_store", "unknown_run", "no_questions", "not_a_folder"])
def test_cli_errors_name_the_fix(tmp_path, case):
    db = tmp_path / "s.duckdb"
    args = ["audit", "--db", str(db)]
    if case != "no_store":
        _store(db, [] if case == "no_questions" else _longest_correct(2))
    if case == "unknown_run":
        args += ["--run", "nope"]
    if case == "not_a_folder":
        args = ["audit", "--personamem-v2", str(tmp_path / "missing")]
    result = CliRunner().invoke(app, args, env=WIDE)
    assert result.exit_code == 2
    expected = {"no_store": "personasim run --db", "unknown_run": "has no run 'nope'",
                "no_questions": "personasim eval --run run-audit", "not_a_folder": "not a folder"}[case]
    assert expected in " ".join(result.output.split())


# -- a real run ----------------------------------------------------------------------------------

def test_audit_of_a_simulated_run_has_figures_in_range(small_run, embedder):
    _, db = small_run
    with TrajectoryStore(db, read_only=True) as store:
        (run_id,) = store.con.execute("SELECT run_id FROM runs").fetchone()
        (n,) = store.con.execute("SELECT count(*) FROM questions WHERE run_id = ?", [run_id]).fetchone()
        report = audit(store.con, run_id, embedder)
    assert report.questions == n > 0
    assert report.questions_without_profile == 0
    assert sum(f.questions for f in report.by_type.values()) == n
    for f in [report, *report.by_type.values()]:
        assert 0 < f.chance <= 1
        assert 0 <= f.correct_longest_share + f.correct_shortest_share <= 1
        assert f.length_ratio is None or f.length_ratio > 0
        for value in f.blind_accuracy.model_dump().values():
            assert 0 <= value <= 1
    assert len(audit_table(report)) == len(report.by_type) + 1


def test_a_tally_summarises_as_the_sorted_list_whatever_the_order_and_counts_a_retried_question_once():
    """The evaluation gathers audits in a tally (columns, not objects) as shards return them, in any
    order and a retried task's twice: its report is the list's, sorted by question id, each once."""
    import random

    from personasim.analysis.audit import AuditTally, QuestionAudit, summarise

    rng = random.Random(7)
    types = ["explicit_recall", "abstention", "others_preference"]

    def audit_of(i: int) -> QuestionAudit:
        n = rng.choice([2, 3, 4])
        ratio = None if i % 5 == 0 else rng.uniform(0.5, 2.0)
        return QuestionAudit(question_id=f"q{i:03d}", question_type=types[i % 3], n_options=n,
                             correct_longest=rng.random() < 0.4, correct_shortest=rng.random() < 0.2,
                             length_ratio=ratio,
                             credit={r: rng.choice([0.0, 1.0, 1 / n, 0.5]) for r in ("longest", "query_only",
                                                                                        "persona_prior")})

    items = [audit_of(i) for i in range(60)]
    expected = summarise("run", items)
    shuffled = items[:]
    rng.shuffle(shuffled)
    tally = AuditTally(shuffled[:30])
    stale = audit_of(3).model_copy(update={"credit": {"longest": 1.0, "query_only": 1.0, "persona_prior": 1.0}})
    tally.add([stale])  # an earlier attempt of question 3, superseded by the one below
    tally.add(shuffled[30:])
    if items[3] not in shuffled[30:]:
        tally.add([items[3]])
    assert len(tally) == 60
    assert summarise("run", tally) == expected
    assert list(expected.by_type) == ["explicit_recall", "abstention", "others_preference"]
    assert expected.by_type["abstention"].questions == 20
    assert expected.length_ratio == pytest.approx(
        sum(i.length_ratio for i in items if i.length_ratio is not None) / 48)
    with pytest.raises(ValueError, match="no questions"):
        summarise("run", AuditTally())
