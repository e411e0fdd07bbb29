"""Resume and faults: a run killed (driver or actor) and continued equals an uninterrupted run."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from personasim.api import resume, run
from personasim.sim.config import EngineConfig, RunConfig
from personasim.sim.store import open_store
from personasim.sim.store_runs import read_runs
from tests.test_run import _dump, _same_scores, _scores

# Asked once, at the end of each timeline: resume regenerates questions and answers either way, and
# fewer questions keep these end-to-end tests short. 4 users x 4 sessions on 2 actors: 8 batches (one
# per shard and round), so a driver killed after 3 of them has written some sessions and not all, and
# an actor killed at round 2 has rounds before and after it.
USERS, SESSIONS = 4, 4
BASE = {"seed": 5, "population": {"users": USERS}, "schedule": {"sessions": SESSIONS},
        "memory": {"strategies": ["none", "full_history", "agentic"]}, "questions": {"checkpoints": [1.0]}}


@pytest.fixture(scope="module")
def clean_db(ray_session, tmp_path_factory):
    """BASE run uninterrupted, in the driver's store mode with the default actors: what every
    interrupted, restarted or parquet-mode run of BASE must end up as."""
    db = tmp_path_factory.mktemp("clean") / "clean.duckdb"
    run(RunConfig.model_validate(BASE), db)
    return db


@pytest.fixture(scope="module")
def clean_dump(clean_db):
    return _dump(clean_db)


@pytest.fixture(scope="module")
def clean_scores(clean_db):
    """The clean run's answer scores (compared within a tolerance: tests/test_run.py ``_scores``)."""
    return _scores(clean_db)


def _without_run_row(dump: dict) -> dict:
    return {name: rows for name, rows in dump.items() if name != "runs"}


def _status(db) -> str:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT status FROM runs").fetchall()[0][0]
    finally:
        con.close()


@pytest.mark.parametrize("store_mode", ["driver", "parquet"])
def test_driver_killed_with_sigkill_resumes_to_the_uninterrupted_store(ray_session, tmp_path, store_mode,
                                                                          clean_dump, clean_scores):
    config = {**BASE, "engine": {"num_actors": 2, "store_mode": store_mode,
                                 "faults": {"kill_driver_after_batches": 3}}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    killed = tmp_path / "killed.duckdb"
    out = subprocess.run(
        [sys.executable, "-m", "personasim.cli", "run", "--config", str(tmp_path / "run.json"), "--db", str(killed),
         "--quiet"], capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == -9, out.stderr[-2000:]  # really killed, mid-run
    con = duckdb.connect(str(killed), read_only=True)
    written = con.execute("SELECT count(*) FROM sessions").fetchall()[0][0]
    con.close()
    if store_mode == "parquet":  # the shards' own files hold what was written, readable meanwhile (docs/store.md)
        assert written == 0 and any(Path(str(killed) + ".parts").rglob("*.parquet"))
        parts = f"{killed}.parts/*/turns/*.parquet"
        assert duckdb.sql(f"SELECT count(DISTINCT persona_id) FROM read_parquet('{parts}')").fetchall()[0][0] > 0
    else:
        assert 0 < written < USERS * SESSIONS
    assert _status(killed) == "running"
    summary = resume(killed, engine=EngineConfig(num_actors=2))  # `run --resume`, in either mode
    assert summary.sessions == USERS * SESSIONS and _status(killed) == "completed"
    assert _without_run_row(_dump(killed)) == _without_run_row(clean_dump)
    assert _same_scores(_scores(killed), clean_scores)


@contextlib.contextmanager
def _machine_loaded():
    """A busy thread beside the run (a core's worth of load here, and the driver's GIL): Ray
    brings a killed actor back slowly, and rounds sent meanwhile fail too; they must not count as
    more restarts."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(10_000))

    busy = threading.Thread(target=spin, daemon=True)
    busy.start()
    try:
        yield
    finally:
        stop.set()
        busy.join()


@pytest.mark.parametrize("wave_users", [None, 1])
def test_actor_killed_mid_run_is_restarted_and_its_shard_resumes(ray_session, tmp_path, clean_dump, clean_scores,
                                                                 wave_users):
    """With waves (``engine.wave_users=1``: each actor's 2 users run a round one at a time), the
    restarted actor replays each wave's missed rounds when that wave comes."""
    engine = {"num_actors": 2, "faults": {"kill_actor_at_round": 2}}
    if wave_users is not None:
        engine["wave_users"] = wave_users
    faulty = RunConfig.model_validate({**BASE, "engine": engine})
    with _machine_loaded():
        summary = run(faulty, tmp_path / "faulty.duckdb")
    assert summary.actor_restarts == 1  # one death, however long Ray took to bring the actor back
    assert (tmp_path / f".personasim-fault-{faulty.run_id}-actor0-round2").exists()
    assert _dump(tmp_path / "faulty.duckdb") == clean_dump  # engine settings are not part of the run id
    assert _same_scores(_scores(tmp_path / "faulty.duckdb"), clean_scores)


def test_resume_refuses_when_nothing_is_unfinished_and_cli_rejects_config_flags(ray_session, tmp_path):
    import pytest
    from typer.testing import CliRunner

    from personasim.cli import app
    from personasim.sim.store import StoreError

    db = tmp_path / "done.duckdb"
    run(RunConfig.model_validate({**BASE, "population": {"users": 2}, "schedule": {"sessions": 1}}), db)
    with pytest.raises(StoreError, match="no unfinished run to resume"):
        resume(db)
    result = CliRunner().invoke(app, ["run", "--resume", "--db", str(db), "--users", "3"])
    assert result.exit_code == 2 and "no unfinished run" in result.output and "completed" in result.output
    run_id = RunConfig.model_validate({**BASE, "population": {"users": 2}, "schedule": {"sessions": 1}}).run_id
    result = CliRunner().invoke(app, ["run", "--resume", "--db", str(db), "--run", run_id])
    assert result.exit_code == 2 and f"run {run_id} in" in result.output and "is completed" in result.output


def test_resume_accepts_the_flags_the_run_was_started_with_and_names_those_that_differ(ray_session, tmp_path):
    """`run --resume` with the original command line continues the run; a changed flag is refused by name."""
    from typer.testing import CliRunner

    from personasim.cli import app
    from personasim.sim.store_runs import set_run_status

    db = tmp_path / "run.duckdb"
    started = ["--users", "2", "--sessions", "2", "--seed", "4", "--memory", "none,agentic", "--quiet", "--db", str(db)]
    assert CliRunner().invoke(app, ["run", *started]).exit_code == 0
    with open_store(db, write=True) as store:  # as if killed: the run is left unfinished
        set_run_status(store, read_runs(store)[0].run_id, "interrupted")
    before = _dump(db)
    changed = CliRunner().invoke(app, ["run", "--resume", *started[:4], "--seed", "5", "--memory", "none,agentic",
                                       "--db", str(db)])
    assert changed.exit_code == 2, changed.output
    assert "--seed 5" in changed.output and "--users" not in changed.output and "--memory" not in changed.output
    assert _dump(db) == before, "a refused resume writes nothing"
    both = CliRunner().invoke(app, ["run", "--resume", "--overwrite", "--db", str(db)])
    assert both.exit_code == 2 and "use one of them" in both.output
    same = CliRunner().invoke(app, ["run", "--resume", *started])
    assert same.exit_code == 0, same.output
    assert _status(db) == "completed"


def test_sessions_whose_backend_keeps_failing_are_recorded_as_failed_and_the_run_goes_on(ray_session, tmp_path):
    import hashlib

    from tests.openai_server import FakeOpenAIServer

    def unservable(body: dict) -> bool:  # the same request fails every time, so retries cannot save it
        return hashlib.md5(json.dumps(body.get("messages"), sort_keys=True).encode()).digest()[0] % 3 == 0

    with FakeOpenAIServer(fail_if=unservable, fail_status=500) as server:
        config = RunConfig.model_validate({
            **BASE, "memory": {"strategies": ["none", "full_history"], "chatbot": "full_history"},
            "chatbot_backend": {"kind": "openai", "model": "flaky", "base_url": server.base_url, "max_retries": 1},
            # about half the sessions fail here: above the default share a run ends 'failed' (test_failures.py)
            "engine": {"max_failed_share": 0.9},
        })
        summary = run(config, tmp_path / "flaky.duckdb")
    con = duckdb.connect(str(tmp_path / "flaky.duckdb"), read_only=True)
    statuses = dict(con.execute("SELECT status, count(*) FROM sessions GROUP BY ALL").fetchall())
    errors = con.execute("SELECT error, n_turns FROM sessions WHERE status = 'failed'").fetchall()
    orphans = con.execute(
        "SELECT count(*) FROM turns t JOIN sessions s USING (run_id, session_id) WHERE s.status = 'failed'"
    ).fetchall()[0][0]
    con.close()
    assert statuses.get("failed", 0) > 0 and statuses.get("completed", 0) > 0, statuses
    assert sum(statuses.values()) == USERS * SESSIONS, "no session dropped"
    assert summary.failed_sessions == statuses["failed"] and _status(tmp_path / "flaky.duckdb") == "completed"
    assert all("Error code: 500" in error for error, _ in errors)
    assert all(n == 0 for _, n in errors) and orphans == 0


def test_parquet_store_mode_writes_the_same_rows_as_the_driver(ray_session, tmp_path, clean_dump):
    parquet = RunConfig.model_validate({**BASE, "engine": {"num_actors": 2, "store_mode": "parquet"}})
    run(parquet, tmp_path / "parts.duckdb")
    assert not list(Path(str(tmp_path / "parts.duckdb") + ".parts").rglob("*.parquet")), "parts loaded, then removed"
    assert _dump(tmp_path / "parts.duckdb") == clean_dump
