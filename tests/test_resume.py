"""Resume and faults: a run killed (driver or actor) and continued equals an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from personasim.api import resume, run
from personasim.sim.config import EngineConfig, RunConfig
from tests.test_run import _dump

BASE = {"seed": 5, "population": {"users": 6}, "schedule": {"sessions": 4},
        "memory": {"strategies": ["none", "full_history", "agentic"]}}


def _without_run_row(dump: dict) -> dict:
    return {name: rows for name, rows in dump.items() if name != "runs"}


def _status(db) -> str:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT status FROM runs").fetchall()[0][0]
    finally:
        con.close()


@pytest.mark.parametrize("store_mode", ["driver", "parquet"])
def test_driver_killed_with_sigkill_resumes_to_the_uninterrupted_store(ray_session, tmp_path, store_mode):
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
    if store_mode == "parquet":  # the shards' own files hold what was written
        assert written == 0 and any(Path(str(killed) + ".parts").rglob("*.parquet"))
    else:
        assert 0 < written < 6 * 4
    assert _status(killed) == "running"
    summary = resume(killed, engine=EngineConfig(num_actors=2))  # `run --resume`, in either mode
    assert summary.sessions == 6 * 4 and _status(killed) == "completed"
    clean = tmp_path / "clean.duckdb"
    run(RunConfig.model_validate(BASE), clean)
    assert _without_run_row(_dump(killed)) == _without_run_row(_dump(clean))


def test_actor_killed_mid_run_is_restarted_and_its_shard_resumes(ray_session, tmp_path):
    faulty = RunConfig.model_validate({**BASE, "engine": {"num_actors": 2, "faults": {"kill_actor_at_round": 2}}})
    summary = run(faulty, tmp_path / "faulty.duckdb")
    assert summary.actor_restarts >= 1  # a busy scheduler may need more than one try to bring it back
    assert (tmp_path / f".personasim-fault-{faulty.run_id}-actor0-round2").exists()
    clean = RunConfig.model_validate({**BASE, "engine": {"num_actors": 2}})
    run(clean, tmp_path / "clean.duckdb")
    assert _dump(tmp_path / "faulty.duckdb") == _dump(tmp_path / "clean.duckdb")


def test_resume_refuses_when_nothing_is_unfinished_and_cli_rejects_config_flags(ray_session, tmp_path):
    import pytest
    from typer.testing import CliRunner

    from personasim.cli import app
    from personasim.sim.store import StoreError

    db = tmp_path / "done.duckdb"
    run(RunConfig.model_validate({**BASE, "population": {"users": 2}, "schedule": {"sessions": 1}}), db)
    with pytest.raises(StoreError, match="nothing to resume"):
        resume(db)
    result = CliRunner().invoke(app, ["run", "--resume", "--db", str(db), "--users", "3"])
    assert result.exit_code == 2 and "drop --users" in result.output


def test_sessions_whose_backend_keeps_failing_are_recorded_as_failed_and_the_run_goes_on(ray_session, tmp_path):
    import hashlib

    from tests.openai_server import FakeOpenAIServer

    def unservable(body: dict) -> bool:  # the same request fails every time, so retries cannot save it
        return hashlib.md5(json.dumps(body.get("messages"), sort_keys=True).encode()).digest()[0] % 3 == 0

    with FakeOpenAIServer(fail_if=unservable, fail_status=500) as server:
        config = RunConfig.model_validate({
            **BASE, "memory": {"strategies": ["none", "full_history"], "chatbot": "full_history"},
            "chatbot_backend": {"kind": "openai", "model": "flaky", "base_url": server.base_url, "max_retries": 1},
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
    assert sum(statuses.values()) == 6 * 4, "no session dropped"
    assert summary.failed_sessions == statuses["failed"] and _status(tmp_path / "flaky.duckdb") == "completed"
    assert all("Error code: 500" in error for error, _ in errors)
    assert all(n == 0 for _, n in errors) and orphans == 0


def test_parquet_store_mode_writes_the_same_rows_as_the_driver(ray_session, tmp_path):
    parquet = RunConfig.model_validate({**BASE, "engine": {"num_actors": 2, "store_mode": "parquet"}})
    run(parquet, tmp_path / "parts.duckdb")
    assert not list(Path(str(tmp_path / "parts.duckdb") + ".parts").rglob("*.parquet")), "parts loaded, then removed"
    run(RunConfig.model_validate(BASE), tmp_path / "driver.duckdb")
    assert _dump(tmp_path / "parts.duckdb") == _dump(tmp_path / "driver.duckdb")
