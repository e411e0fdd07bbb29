"""`personasim eval`: readers, stored answers and the summary tables, on a real run's store."""

from __future__ import annotations

import json
import math
import shutil

import duckdb
import pytest
from typer.testing import CliRunner

from personasim.cli import app
from personasim.sim.rows import AnswerRow
from tests.openai_server import FakeOpenAIServer


@pytest.fixture()
def run_copy(small_run, tmp_path):
    """A writable copy of the session's run (eval writes answers)."""
    _, db = small_run
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    return copy


def _answers(db, reader: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT a.strategy, q.question_type, a.correct, a.chosen_index, q.correct_index, a.raw_output "
            "FROM answers a JOIN questions q USING (run_id, question_id) WHERE a.reader = ? ORDER BY a.answer_id",
            [reader],
        ).fetchall()
    finally:
        con.close()


def test_eval_cli_prints_tables_stores_answers_and_writes_json(run_copy, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", "--db", str(run_copy), "--quiet", "--bootstrap", "200",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "accuracy by question type" in result.output and "95% CI" in result.output
    summary = json.loads(out.read_text())
    answers = _answers(run_copy, "embedding")
    assert summary["answers"] == len(answers) == summary["questions"] * len(summary["strategies"])
    for row in summary["tables"]["by_strategy"]:
        mine = [a for a in answers if a[0] == row["strategy"]]
        assert row["answers"] == len(mine)
        assert math.isclose(row["accuracy"], sum(a[2] for a in mine) / len(mine))
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    by_type = {(r["strategy"], r["question_type"]): r["answers"] for r in summary["tables"]["by_type"]}
    assert sum(by_type.values()) == len(answers)
    assert {"explicit_recall", "implicit_inference", "generalisation", "abstention"} <= {t for _, t in by_type}


def test_eval_restricts_to_the_requested_types_and_rejects_unknown_ones(run_copy, tmp_path):
    result = CliRunner().invoke(app, ["eval", "--db", str(run_copy), "--quiet", "--types", "abstention",
                                      "--strategies", "none", "--bootstrap", "50", "--json", str(tmp_path / "a.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "a.json").read_text())
    assert summary["types"] == ["abstention"] and summary["strategies"] == ["none"]
    bad = CliRunner().invoke(app, ["eval", "--db", str(run_copy), "--quiet", "--types", "recall"])
    assert bad.exit_code == 2 and "unknown question type 'recall'" in bad.output and "explicit_recall" in bad.output
    missing = CliRunner().invoke(app, ["eval", "--db", str(run_copy), "--quiet", "--strategies", "rag"])
    assert missing.exit_code == 2 and "no memory snapshots for rag" in missing.output


def test_llm_reader_answers_through_a_server_and_unparseable_replies_score_wrong(run_copy):
    from personasim.agents.backends import BackendConfig
    from personasim.analysis.evaluate import ReaderSpec, evaluate

    with FakeOpenAIServer(reply=lambda prompt: "Final answer: \\boxed{b}") as server:
        spec = ReaderSpec(kind="llm", backend=BackendConfig(kind="openai", model="fake-b", base_url=server.base_url,
                                                             temperature=0.0))
        summary = evaluate(run_copy, strategies=["agentic"], reader=spec, types=["explicit_recall"], n_boot=50)
        assert server.calls == summary.questions
    rows = _answers(run_copy, "llm")
    assert len(rows) == summary.questions and all(r[3] == 1 and r[5].endswith("\\boxed{b}") for r in rows)
    assert [r[2] for r in rows] == [r[4] == 1 for r in rows], "correct exactly where (b) is the right option"
    assert summary.reader_model == "fake-b"
    with FakeOpenAIServer(reply=lambda prompt: "I would rather not say.") as server:
        spec = ReaderSpec(kind="llm", backend=BackendConfig(kind="openai", model="fake-garbage",
                                                             base_url=server.base_url))
        evaluate(run_copy, strategies=["agentic"], reader=spec, types=["explicit_recall"], n_boot=50)
    con = duckdb.connect(str(run_copy), read_only=True)
    garbage = con.execute("SELECT chosen_index, correct FROM answers WHERE reader_model = 'fake-garbage'").fetchall()
    con.close()
    assert garbage and all(c == -1 and not ok for c, ok in garbage)


def test_readers_answering_in_this_process_read_the_questions_by_chunks_of_users(run_copy, monkeypatch):
    """An LLM reader's evaluation (and ``personasim audit``) reads the stored questions a few users
    at a time, never all of them, and stores the answers and audit of the whole list."""
    from personasim.agents.backends import BackendConfig
    from personasim.analysis import stored_questions
    from personasim.analysis.audit import audit, audit_questions, summarise
    from personasim.analysis.evaluate import ReaderSpec, answer_questions, build_reader, evaluate
    from personasim.analysis.profiles import load_profiles
    from personasim.sim.store_read import read_questions

    reads: list[int] = []

    def counted(con, run_id, persona_ids=None, types=None):  # type: ignore[no-untyped-def]
        assert persona_ids is not None, "a chunk of users, not the whole run"
        reads.append(len(persona_ids))
        return read_questions(con, run_id, persona_ids, types)

    monkeypatch.setattr(stored_questions, "USERS_PER_CHUNK", 3)
    monkeypatch.setattr(stored_questions, "read_questions", counted)
    types = ["explicit_recall", "abstention"]

    def letter(prompt: str) -> str:  # a reply that depends on the question and its context
        return "Final answer: \\boxed{" + "ab"[len(prompt) % 2] + "}"

    with FakeOpenAIServer(reply=letter) as server:
        spec = ReaderSpec(kind="llm", backend=BackendConfig(kind="openai", model="fake-ab", base_url=server.base_url,
                                                             temperature=0.0))
        summary = evaluate(run_copy, strategies=["none", "agentic"], reader=spec, types=types, n_boot=50)
        assert len(reads) > 2 and max(reads) <= 3
        con = duckdb.connect(str(run_copy), read_only=True)
        try:
            whole = read_questions(con, summary.run_id, types=types)
            expected = answer_questions(con, summary.run_id, whole, ["none", "agentic"], build_reader(spec))
            stored = con.execute("SELECT * FROM answers WHERE reader_model = 'fake-ab' ORDER BY answer_id").fetchall()
            profiles = load_profiles(con, summary.run_id)
            reads.clear()
            chunked_audit = audit(con, summary.run_id)
            everything = read_questions(con, summary.run_id)
        finally:
            con.close()
    names = list(AnswerRow.model_fields)
    assert [tuple(getattr(r, n) for n in names) for r in sorted(expected, key=lambda r: r.answer_id)] == [
        tuple(r) for r in stored] and len(stored) == 2 * summary.questions > 0
    assert {r[names.index("chosen_index")] for r in stored} == {0, 1}
    missing = sum(1 for q in whole if not profiles.get(q.persona_id))
    from personasim.agents.embedding import default_embedder

    assert summary.audit == summarise(summary.run_id, audit_questions(whole, profiles, default_embedder()),
                                      missing).model_dump()
    assert len(reads) > 2 and max(reads) <= 3
    assert chunked_audit == summarise(summary.run_id, audit_questions(everything, profiles, default_embedder()),
                                      sum(1 for q in everything if not profiles.get(q.persona_id)))


def test_loglik_reader_scores_each_option_by_its_mean_token_log_probability(tmp_path):
    import torch

    from personasim.analysis.loglik_reader import LogLikelihoodReader
    from tests.tiny_models import build_tiny_causal_lm

    path = build_tiny_causal_lm(tmp_path / "tiny")
    reader = LogLikelihoodReader(path, device="cpu")
    options = ["i like music", "try a new book and cook", "good idea", "plan my week of travel"]
    answer = reader.answer(["i like to cook"], "what can i try", options)
    assert len(answer.scores) == 4 and all(math.isfinite(s) and s < 0 for s in answer.scores)
    assert answer.chosen_index == max(range(4), key=answer.scores.__getitem__)
    assert reader.answer(["i like to cook"], "what can i try", options) == answer  # deterministic
    # the batched, padded scoring equals scoring each option on its own
    text = reader.prompt(["i like to cook"], "what can i try")
    prompt = reader.tokenizer(text, add_special_tokens=False)["input_ids"]
    for option, score in zip(options, answer.scores, strict=True):
        ids = reader.tokenizer(" " + option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = reader.model(input_ids=torch.tensor([prompt + ids])).logits[0].float()
        lp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1).gather(1, torch.tensor(ids)[:, None]).mean()
        assert math.isclose(float(lp), score, abs_tol=1e-4)


def test_loglik_reader_evaluates_a_run(run_copy, tmp_path):
    from personasim.analysis.evaluate import ReaderSpec, evaluate
    from tests.tiny_models import build_tiny_causal_lm

    path = build_tiny_causal_lm(tmp_path / "tiny")
    summary = evaluate(run_copy, strategies=["none", "agentic"], reader=ReaderSpec(kind="loglik", model_path=str(path)),
                       types=["updated_preference", "explicit_recall"], n_boot=50)
    rows = _answers(run_copy, "loglik")
    assert len(rows) == summary.answers == 2 * summary.questions > 0
    assert all(0 <= r[3] < 4 for r in rows)


def test_export_reads_users_by_chunks_and_writes_the_same_files(run_copy, tmp_path, monkeypatch):
    """A large run is exported a chunk of users at a time (questions and turns one query per chunk,
    the CSV written as rows come): the files are the same bytes whatever the chunk size."""
    from personasim.interop.personamem_v2 import export
    from personasim.interop.personamem_v2.api import export_benchmark

    whole = export_benchmark(run_copy, tmp_path / "whole")
    monkeypatch.setattr(export, "USERS_PER_CHUNK", 5)  # three chunks of the 12 users
    chunked = export_benchmark(run_copy, tmp_path / "chunked")
    assert len(whole) == 13  # the CSV and one chat history per user
    assert [p.relative_to(tmp_path / "whole") for p in whole] == [p.relative_to(tmp_path / "chunked") for p in chunked]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(whole, chunked, strict=True))


def test_export_writes_personamem_v2_files_that_load_back_with_the_same_questions(run_copy, tmp_path):
    from personasim.interop.personamem_v2.api import evaluate_personamem_v2
    from personasim.sim.store import TrajectoryStore
    from personasim.sim.store_read import read_questions

    out = tmp_path / "pmv2"
    result = CliRunner().invoke(app, ["export", "--db", str(run_copy), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "benchmark" / "text" / "benchmark.csv").exists()
    with TrajectoryStore(run_copy, read_only=True) as store:
        ours = read_questions(store.con, store.con.execute("SELECT run_id FROM runs").fetchall()[0][0])
    summary = evaluate_personamem_v2(out, tmp_path / "back.duckdb", strategies=["none"], n_boot=20)
    assert summary.questions == len(ours)
    with TrajectoryStore(tmp_path / "back.duckdb", read_only=True) as store:
        theirs = read_questions(store.con, summary.run_id)
    assert sorted(q.options[q.correct_index] for q in theirs) == sorted(q.options[q.correct_index] for q in ours)
    assert sorted(q.query for q in theirs) == sorted(q.query for q in ours)
    assert sorted(q.question_type for q in theirs) == sorted(q.question_type for q in ours)
    bad = CliRunner().invoke(app, ["export", "--db", str(run_copy), "--out", str(out), "--format", "ppo"])
    assert bad.exit_code == 2 and "unknown --format 'ppo'" in bad.output
    trl = CliRunner().invoke(app, ["export", "--db", str(run_copy), "--out", str(tmp_path / "dpo"), "--format", "dpo"])
    assert trl.exit_code == 0 and (tmp_path / "dpo" / "train.parquet").exists(), trl.output
