"""The store layer: opening, transactions, replacing rows, the run lifecycle and typed run configs."""

from __future__ import annotations

import json
from datetime import datetime

import duckdb
import pytest

from personasim.sim.config import RunConfig
from personasim.sim.rows import QuestionRow, SessionRow
from personasim.sim.store import StoreError, TrajectoryStore, open_store
from personasim.sim.store_read import count_rows, define_views, read_arrow, read_frame, read_questions, read_rows
from personasim.sim.store_runs import (
    LoadedPersonaMemConfig,
    LoadedRun,
    OnlineRun,
    RunExistsError,
    SimulatedRun,
    finish_run,
    interrupt_run,
    read_run,
    resolve_run,
    run_kind,
    start_run,
)

T0 = datetime(2025, 1, 1)


def _session(run_id: str, k: int) -> SessionRow:
    return SessionRow(run_id=run_id, session_id=f"p/s{k}", persona_id="p", session_index=k, scenario_id="x",
                      started_at=T0, ended_at=T0, n_turns=0, status="completed")


def _question(run_id: str, qid: str) -> QuestionRow:
    return QuestionRow(run_id=run_id, question_id=qid, persona_id="p", question_type="explicit_recall", asked_at=T0,
                       topic="t", scenario_id="x", query="q?", options=["a", "b"], option_sources=["x", "y"],
                       correct_index=0, preference_id="p/t/a#0", stale_preference_id=None, reveal_mode="explicit",
                       reveals=1, sessions_since_reveal=0)


LOADED = LoadedPersonaMemConfig(source="personamem_v2", folder="data", window="128k", files=["a.csv"],
                                strategies=["none"])


def test_open_store_checks_existence_once_with_one_message(tmp_path):
    missing = tmp_path / "nope.duckdb"
    for kwargs in ({}, {"write": True}):
        with pytest.raises(StoreError, match=r"does not exist; run `personasim run --db .*nope.duckdb` first"):
            open_store(missing, **kwargs)
    assert not missing.exists(), "a failed open leaves no file behind"
    with pytest.raises(StoreError, match="is a directory"):
        open_store(tmp_path, create=True)
    with open_store(tmp_path / "new.duckdb", create=True) as store:
        assert store.has_run("run-x") is False
    with open_store(tmp_path / "new.duckdb") as store, pytest.raises(duckdb.Error):
        store.con.execute("CREATE TABLE t (a INT)")  # read-only by default


def test_replace_rows_is_one_transaction(tmp_path):
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        start_run(store, "run-a", RunConfig())
        store.write("questions", [_question("run-a", "q1"), _question("run-a", "q2")])
        store.replace_rows({"questions": {"run_id": "run-a", "question_id": ["q1"]}},
                           [("questions", [_question("run-a", "q3")])])
        assert [q.question_id for q in read_questions(store.con, "run-a")] == ["q2", "q3"]
        with pytest.raises(duckdb.ConstraintException):  # q2 is still there: a duplicate key aborts the whole batch
            store.replace_rows({"questions": {"run_id": "run-a", "question_id": ["q3"]}},
                               [("questions", [_question("run-a", "q2")])])
        assert [q.question_id for q in read_questions(store.con, "run-a")] == ["q2", "q3"], "nothing was deleted"
        with pytest.raises(StoreError, match="no column"):
            store.replace_rows({"questions": {"nonsense": 1}})


def test_delete_run_rolls_back_when_it_fails(tmp_path, monkeypatch):
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        start_run(store, "run-a", RunConfig())
        store.write("sessions", [_session("run-a", 0)])
        original = store._delete

        def failing(table, where):
            if table == "sessions":
                raise duckdb.IOException("disk full")
            original(table, where)

        monkeypatch.setattr(store, "_delete", failing)
        with pytest.raises(duckdb.IOException, match="disk full"):
            store.delete_run("run-a")
        monkeypatch.undo()
        assert store.has_run("run-a") and count_rows(store.con, "sessions", "run-a") == 1


def test_a_failed_commit_shows_its_own_cause(tmp_path):
    """COMMIT failing ends DuckDB's transaction; the error raised is the commit's, not 'no transaction is active'."""
    with TrajectoryStore(tmp_path / "s.duckdb") as store:

        class Failing:
            def __init__(self, con):
                self.con = con

            def __getattr__(self, name):
                return getattr(self.con, name)

            def execute(self, sql, *args):
                if sql == "COMMIT":
                    self.con.execute("ROLLBACK")  # what a failed commit leaves: no transaction
                    raise duckdb.IOException('Could not write file "s.duckdb.wal": No space left on device')
                return self.con.execute(sql, *args)

        real = store.con
        store.con = Failing(real)  # type: ignore[assignment]
        try:
            with pytest.raises(duckdb.IOException, match="No space left on device"):
                store.write_many([("sessions", [_session("run-a", 0)])])
        finally:
            store.con = real
        assert count_rows(store.con, "sessions", "run-a") == 0


def test_run_lifecycle_and_typed_configs(tmp_path):
    config = RunConfig(population={"users": 3}, schedule={"sessions": 2}, seed=5)
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        start_run(store, config.run_id, config)
        start_run(store, "env-1", config, described="same EnvConfig", replace_hint="pass overwrite=True")
        start_run(store, "pmv2-1", LOADED, users=1, sessions_per_user=4, world_hash="h", status="completed",
                  rows=[("sessions", [_session("pmv2-1", 0)])])
        sim, online, loaded = read_run(store, config.run_id), read_run(store, "env-1"), read_run(store, "pmv2-1")
        assert isinstance(sim.spec, SimulatedRun) and sim.run_config == config and sim.seed == 5
        assert sim.status == "running" and (sim.users, sim.sessions_per_user) == (3, 2)
        assert isinstance(online.spec, OnlineRun) and online.run_config == config
        assert isinstance(loaded.spec, LoadedRun) and loaded.run_config is None and loaded.spec.config == LOADED
        assert loaded.memory_settings.full_history_max_tokens == 128_000
        assert loaded.chatbot_label == "external" and sim.chatbot_label == "scripted:scripted-v1"
        assert count_rows(store.con, "sessions", "pmv2-1") == 1, "rows given to start_run land with the run"
        with pytest.raises(RunExistsError, match=r"same config and seed, running\); pass --overwrite .*--resume"):
            start_run(store, config.run_id, config)
        interrupt_run(store, config.run_id)
        assert read_run(store, config.run_id).status == "interrupted"
        finish_run(store, config.run_id)
        assert read_run(store, config.run_id).status == "completed"
        start_run(store, "pmv2-1", LOADED, overwrite=True, status="completed")
        assert count_rows(store.con, "sessions", "pmv2-1") == 0, "overwrite removes the old run's rows"
        assert (run_kind("run-1"), run_kind("env-1"), run_kind("pmv2-1")) == ("simulated", "online", "personamem_v2")


def test_a_stored_config_of_the_wrong_shape_is_refused_on_read(tmp_path):
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        start_run(store, "pmv2-2", LOADED)
        store.con.execute("UPDATE runs SET config_json = ? WHERE run_id = 'pmv2-2'", [json.dumps({"window": 3})])
        with pytest.raises(StoreError, match="pmv2-2's stored config is not a valid personamem_v2 config"):
            read_run(store, "pmv2-2")


def test_resolve_run_prefers_the_only_simulated_run(tmp_path):
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(StoreError, match="holds no runs"):
            resolve_run(store, None)
        start_run(store, "run-a", RunConfig())
        start_run(store, "env-a", RunConfig())
        assert resolve_run(store, None) == "run-a"
        assert resolve_run(store, "env-a") == "env-a"
        with pytest.raises(StoreError, match="has no run 'x'"):
            resolve_run(store, "x")
        start_run(store, "run-b", RunConfig(seed=1))
        with pytest.raises(StoreError, match="choose one with --run"):
            resolve_run(store, None)


def test_views_and_typed_readers(tmp_path):
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        start_run(store, "run-a", RunConfig())
        store.write("sessions", [_session("run-a", 1), _session("run-a", 0)])
        assert [s.session_index for s in read_rows(store.con, "sessions", "run-a")] == [0, 1]
        assert sorted(read_frame(store.con, "sessions", "run-a", ["session_index"])["session_index"]) == [0, 1]
        assert read_arrow(store.con, "sessions", "run-a").num_rows == 2
        with pytest.raises(ValueError, match="unknown table"):
            read_arrow(store.con, "nonsense", "run-a")
    with open_store(tmp_path / "s.duckdb") as store:
        define_views(store.con)  # temporary views: fine on a read-only connection
        assert store.con.execute("SELECT count(*) FROM answered_questions").fetchall() == [(0,)]
        assert store.con.execute("SELECT count(*) FROM revealing_turns").fetchall() == [(0,)]
