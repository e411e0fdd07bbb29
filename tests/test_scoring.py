"""Scoring a stored run (analysis/scoring.py, what ``personasim eval`` does with the embedding
reader): answers and audit from whichever process answered, the same as answering every question
and auditing them afterwards; and the store's keyed replace that writes them."""

from __future__ import annotations

import shutil

import duckdb
import pyarrow as pa
import pytest

from personasim.agents.embedding import default_embedder
from personasim.analysis import answer_pool, scoring, stored_questions
from personasim.analysis.asking import AnsweringSpec
from personasim.analysis.audit import audit_questions
from personasim.analysis.evaluate import answer_questions, evaluate
from personasim.analysis.profiles import load_profiles
from personasim.analysis.reader import EmbeddingReader
from personasim.analysis.scoring import Scored, score_stored, stored_tasks
from personasim.analysis.stored_questions import StoredQuestions
from personasim.sim.rows import AnswerRow
from personasim.sim.store import StoreError, arrow_schema, open_store, row_dicts
from personasim.sim.store_read import read_questions
from personasim.sim.store_runs import read_run


@pytest.fixture(scope="module")
def stored(small_run):
    _, db = small_run
    with open_store(db) as store:
        run_id = store.con.execute("SELECT run_id FROM runs").fetchall()[0][0]
        settings = read_run(store, run_id).memory_settings
    reader = EmbeddingReader(default_embedder())
    strategies = ["agentic", "full_history", "none"]
    spec = AnsweringSpec(run_id=run_id, strategies=strategies, memory=settings, **AnsweringSpec.reader_settings(reader))
    return db, spec, reader


def _two_steps(con: duckdb.DuckDBPyConnection, spec: AnsweringSpec, reader: EmbeddingReader, questions):  # type: ignore[no-untyped-def]
    rows = answer_questions(con, spec.run_id, questions, spec.strategies, reader, spec.memory)
    table = pa.Table.from_pylist(row_dicts(rows), schema=arrow_schema("answers"))
    return table.sort_by("answer_id"), audit_questions(questions, load_profiles(con, spec.run_id), reader.embedder)


def _scored(db, spec, reader, questions, workers: int):  # type: ignore[no-untyped-def]
    results: list[Scored] = []
    with duckdb.connect(str(db), read_only=True) as con:
        score_stored(con, spec, questions, load_profiles(con, spec.run_id), reader, workers, results.append)
    answers = pa.concat_tables([r.answers for r in results]).sort_by("answer_id")
    audits = {a.question_id: a for r in results for a in r.audits}
    return answers, [audits[q.question_id] for q in questions], results


@pytest.mark.parametrize("workers", [1, 2])
def test_scoring_gives_the_answers_and_audit_of_answering_then_auditing(stored, workers, request, monkeypatch):
    db, spec, reader = stored
    if workers > 1:
        request.getfixturevalue("ray_session")
        monkeypatch.setattr(answer_pool, "MIN_PARALLEL_ANSWERS", 1)  # the first task here, the rest in the pool
    monkeypatch.setattr(answer_pool, "USERS_PER_TASK", 2)
    with duckdb.connect(str(db), read_only=True) as con:
        questions = read_questions(con, spec.run_id)
        expected_answers, expected_audit = _two_steps(con, spec, reader, questions)
    answers, audits, results = _scored(db, spec, reader, questions, workers)
    assert len(results) > 2 and answers.num_rows == len(questions) * len(spec.strategies) > 300
    assert answers.equals(expected_answers)
    assert audits == expected_audit


def test_a_subset_of_questions_is_scored_alone_with_snapshots_at_its_own_times(stored):
    """``--types`` scores a subset: only those questions are answered and audited, and a task
    carries, per user and strategy, the latest snapshot at or before each of its questions only."""
    db, spec, reader = stored
    with duckdb.connect(str(db), read_only=True) as con:
        questions = [q for q in read_questions(con, spec.run_id) if q.question_type == "updated_preference"]
        assert questions
        expected_answers, expected_audit = _two_steps(con, spec, reader, questions)
        for task in stored_tasks(con, spec.run_id, questions, load_profiles(con, spec.run_id), spec.strategies):
            for user in task.questions:
                persona = user[0].persona_id
                times = sorted({q.asked_at for q in user})
                for strategy in spec.strategies:
                    carried = task.snapshots.get((persona, strategy), [])
                    assert [s.time for s in carried] == sorted(s.time for s in carried)
                    assert len(carried) <= len(times)
            assert set(task.profiles) == {user[0].persona_id for user in task.questions}
    answers, audits, _ = _scored(db, spec, reader, questions, 1)
    assert answers.equals(expected_answers)
    assert audits == expected_audit


@pytest.mark.parametrize("types", [None, ["updated_preference", "abstention"]])
def test_questions_read_from_the_store_a_chunk_of_users_at_a_time_make_the_tasks_of_the_whole_list(
    stored, types, monkeypatch
):
    """``personasim eval`` never holds a run's questions at once: read per chunk of users from the
    store, they make the same tasks, in the same order, as grouping the whole list."""
    db, spec, _ = stored
    monkeypatch.setattr(stored_questions, "USERS_PER_CHUNK", 3)  # several chunks of this 12-user run
    monkeypatch.setattr(scoring, "USERS_PER_CHUNK", 3)  # and the whole list's, the same
    monkeypatch.setattr(answer_pool, "USERS_PER_TASK", 2)
    with duckdb.connect(str(db), read_only=True) as con:
        whole = [q for q in read_questions(con, spec.run_id) if types is None or q.question_type in types]
        assert read_questions(con, spec.run_id, types=types) == whole
        profiles = load_profiles(con, spec.run_id)
        from_list = list(stored_tasks(con, spec.run_id, whole, profiles, spec.strategies))
        from_store = list(stored_tasks(con, spec.run_id, StoredQuestions(con, spec.run_id, types), profiles,
                                       spec.strategies))
        chunks = list(StoredQuestions(con, spec.run_id, types).by_user())
    assert len(chunks) > 2 and all(len(chunk) <= 3 for chunk in chunks)
    assert sorted(q.question_id for chunk in chunks for user in chunk for q in user) == [q.question_id for q in whole]
    assert from_store == from_list and len(from_store) > 4


def test_eval_writes_the_scored_answers_over_the_old_ones(small_run, tmp_path):
    """``evaluate`` twice on one store: the second run replaces each answer in place (one row per
    answer id, none lost), and both give the same answers and audit."""
    _, db = small_run
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    first = evaluate(copy, workers=1, n_boot=50)
    with duckdb.connect(str(copy), read_only=True) as con:
        before = con.execute("SELECT * FROM answers ORDER BY answer_id").fetchall()
    second = evaluate(copy, workers=1, n_boot=50)
    with duckdb.connect(str(copy), read_only=True) as con:
        after = con.execute("SELECT * FROM answers ORDER BY answer_id").fetchall()
        stored_count = con.execute("SELECT count(*) FROM answers").fetchall()[0][0]
    assert first.answers == second.answers == len(after) == stored_count > 0
    assert before == after
    assert first.audit == second.audit and first.tables == second.tables


def _answers_table(rows: list[AnswerRow]) -> pa.Table:
    return pa.Table.from_pylist(row_dicts(rows), schema=arrow_schema("answers"))


def test_replace_writes_over_rows_with_the_same_key_and_keeps_the_rest(small_run, tmp_path):
    _, db = small_run
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    with open_store(copy, write=True) as store:
        con = store.con
        total = con.execute("SELECT count(*) FROM answers").fetchall()[0][0]
        some = con.sql("SELECT * FROM answers ORDER BY answer_id LIMIT 5").to_arrow_table()
        flipped = some.set_column(some.schema.get_field_index("correct"), "correct",
                                  pa.array([not c for c in some.column("correct").to_pylist()]))
        flipped = flipped.cast(arrow_schema("answers"))
        assert store.replace("answers", flipped) == 5
        assert con.execute("SELECT count(*) FROM answers").fetchall()[0][0] == total
        ids = some.column("answer_id").to_pylist()
        now = dict(con.execute("SELECT answer_id, correct FROM answers WHERE list_contains(?, answer_id)",
                               [ids]).fetchall())
        assert now == dict(zip(ids, flipped.column("correct").to_pylist(), strict=True))

        # a batch that cannot be written (the same key twice) leaves the stored rows as they were
        twice = pa.concat_tables([some.cast(arrow_schema("answers"))] * 2)
        with pytest.raises(duckdb.ConstraintException):
            store.replace("answers", twice)
        assert dict(con.execute("SELECT answer_id, correct FROM answers WHERE list_contains(?, answer_id)",
                                [ids]).fetchall()) == now
        assert con.execute("SELECT count(*) FROM answers").fetchall()[0][0] == total

        with pytest.raises(StoreError, match="arrow_schema"):
            store.replace("answers", some.drop_columns(["scores"]))
        with pytest.raises(StoreError, match="replace writes over rows by key"):
            store.replace("memory_snapshot_items", some)
