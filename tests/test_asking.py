"""A run's evaluation user by user (analysis/asking.py): in the driver or in a pool of actors, the
same questions and answers as generating every question and answering them afterwards."""

from __future__ import annotations

import shutil

import duckdb
import pyarrow as pa
import pytest

from personasim.agents.embedding import default_embedder
from personasim.analysis import answer_pool
from personasim.analysis.asking import Asked, AskingSpec, UsersEvaluator, _tasks, ask_and_answer
from personasim.analysis.evaluate import answer_questions
from personasim.analysis.questions import generate_questions_by_user, load_run_facts
from personasim.analysis.reader import EmbeddingReader
from personasim.sim.rows import AnswerRow
from personasim.sim.store import StoreError, arrow_schema, open_store
from personasim.sim.store_runs import read_run


@pytest.fixture()
def fresh(small_run, tmp_path):
    """A copy of the small run's store without its questions and answers, and what it asks with."""
    _, db = small_run
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    with open_store(copy, write=True) as store:
        run_id = store.con.execute("SELECT run_id FROM runs").fetchall()[0][0]
        config = read_run(store, run_id).spec.config
        store.replace_rows({"answers": {"run_id": run_id}, "questions": {"run_id": run_id}})
    reader = EmbeddingReader(default_embedder())
    spec = AskingSpec.for_reader(reader, run_id, config.seed, config.questions, config.memory.strategies,
                                 config.memory.settings)
    return db, copy, spec, reader


def _asked(copy, spec, reader, workers: int) -> tuple[list[tuple], list[tuple]]:
    tasks: list[Asked] = []
    with open_store(copy, write=True) as store:
        ask_and_answer(store.con, spec, reader, workers, tasks.append)
        for asked in tasks:
            store.write_many([("questions", asked.questions), ("answers", asked.answers)])
        return _rows(store.con, spec.run_id)


def _rows(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[list[tuple], list[tuple]]:
    return (con.execute("SELECT * FROM questions WHERE run_id = ? ORDER BY question_id", [run_id]).fetchall(),
            con.execute("SELECT * FROM answers WHERE run_id = ? ORDER BY answer_id", [run_id]).fetchall())


def test_a_pool_asks_and_answers_what_the_run_stored(fresh, ray_session, monkeypatch):
    db, copy, spec, reader = fresh
    monkeypatch.setattr(answer_pool, "MIN_PARALLEL_ANSWERS", 1)  # the first task here, the rest in the pool
    monkeypatch.setattr(answer_pool, "USERS_PER_TASK", 2)
    questions, answers = _asked(copy, spec, reader, workers=2)
    with duckdb.connect(str(db), read_only=True) as con:
        stored_questions, stored_answers = _rows(con, spec.run_id)
    assert len(questions) > 100 and len(answers) == len(questions) * len(spec.strategies)
    assert questions == stored_questions
    assert answers == stored_answers


def test_asking_user_by_user_gives_the_questions_and_answers_of_the_two_steps(fresh):
    """The other way to the same rows: every user's questions generated, then answered from the
    store's snapshots by ``answer_questions`` (what ``personasim eval`` does)."""
    _, copy, spec, reader = fresh
    with open_store(copy) as store:
        by_user = list(generate_questions_by_user(store.con, spec.run_id, spec.seed, spec.questions))
        rows = answer_questions(store.con, spec.run_id, by_user, spec.strategies, reader, spec.memory)
    questions, answers = _asked(copy, spec, reader, workers=1)
    flat = sorted((q for user in by_user for q in user), key=lambda q: q.question_id)
    as_table = pa.Table.from_pylist([q.model_dump() for q in flat], schema=arrow_schema("questions"))
    assert [tuple(r.values()) for r in as_table.to_pylist()] == questions
    columns = [c for c in AnswerRow.model_fields]
    assert [tuple(getattr(a, c) for c in columns) for a in sorted(rows, key=lambda a: a.answer_id)] \
        == [tuple(row) for row in answers]


def test_a_task_carries_only_the_snapshots_its_checkpoints_read(fresh):
    _, copy, spec, _ = fresh
    with open_store(copy) as store:
        facts = load_run_facts(store.con, spec.run_id, spec.questions)
        task = next(_tasks(store.con, spec.run_id, facts, spec.strategies))
        every = store.con.execute("SELECT count(*) FROM memory_snapshots WHERE run_id = ? AND persona_id IN "
                                  "(SELECT unnest(?::VARCHAR[]))", [spec.run_id, list(task.facts.timelines)]
                                  ).fetchall()[0][0]
    carried = sum(map(len, task.snapshots.values()))
    assert 0 < carried < every
    for (persona_id, _), refs in task.snapshots.items():
        assert len(refs) <= len(task.facts.checkpoints[persona_id])
        assert [r.time for r in refs] == sorted(r.time for r in refs)


def test_a_question_off_its_users_checkpoints_is_refused(fresh):
    """A task's snapshots are exact only for questions asked at a checkpoint: anything else must
    fail loudly rather than be answered from the wrong snapshot."""
    _, copy, spec, reader = fresh
    with open_store(copy) as store:
        facts = load_run_facts(store.con, spec.run_id, spec.questions)
        task = next(_tasks(store.con, spec.run_id, facts, spec.strategies))
    evaluator = UsersEvaluator(spec, reader)
    evaluator.asker.ask = lambda facts: iter([_moved(q) for q in user] for user in _original(evaluator, facts))
    with pytest.raises(RuntimeError, match="not asked at a checkpoint"):
        evaluator.ask_and_answer(task)


def _original(evaluator, facts):  # type: ignore[no-untyped-def]
    from personasim.analysis.questions import UsersAsker

    return UsersAsker(evaluator.spec.run_id, evaluator.spec.seed, evaluator.spec.questions).ask(facts)


def _moved(question):  # type: ignore[no-untyped-def]
    from datetime import timedelta

    return question.model_copy(update={"asked_at": question.asked_at + timedelta(minutes=7)})


def test_an_arrow_table_of_another_shape_is_refused_before_anything_is_written(fresh):
    _, copy, spec, _ = fresh
    with open_store(copy, write=True) as store:
        wrong = pa.table({"run_id": [spec.run_id], "question_id": ["q"]})
        with pytest.raises(StoreError, match="arrow_schema"):
            store.write("questions", wrong)
        assert store.con.execute("SELECT count(*) FROM questions").fetchall()[0][0] == 0


def test_a_task_that_fails_in_the_pool_raises_its_error_and_stops_the_pool(ray_session):
    """The first failure reaches the caller with its message; no later task is handed out."""

    class Halves:
        def half(self, n: int) -> int:
            if n % 2:
                raise ValueError(f"{n} is odd")
            return n // 2

    done: list[int] = []
    handed: list[int] = []

    def tasks():  # type: ignore[no-untyped-def]
        for n in (2, 4, 7, *range(8, 2000, 2)):
            handed.append(n)
            yield n, n

    with pytest.raises(Exception, match="7 is odd"):
        answer_pool.in_pool(Halves, (), "half", tasks(), 2, lambda key, result: done.append(result))
    assert 7 in handed and len(handed) < 999  # the rest was never built
    assert all(r * 2 in handed for r in done)
