"""Fork: a run that branches off another at simulated time T shares its history up to T."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pytest
from typer.testing import CliRunner

from personasim.api import fork_config, run
from personasim.cli import app
from personasim.sim.config import RunConfig
from tests.openai_server import FakeOpenAIServer

# Asked once, at the end: forks are about the shared history, and fewer questions keep the runs short.
# 3 users (on 2 actors) x 4 sessions: sessions on both sides of the middle one for every check here.
SOURCE = {"seed": 9, "population": {"users": 3}, "schedule": {"sessions": 4},
          "memory": {"strategies": ["none", "agentic"], "chatbot": "agentic"}, "questions": {"checkpoints": [1.0]}}


def _turns(db, before: datetime | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        sql = ("SELECT t.turn_id, t.role, t.text FROM turns t JOIN sessions s USING (run_id, session_id)"
               + (" WHERE s.started_at < ?" if before else "") + " ORDER BY t.turn_id")
        return con.execute(sql, [before] if before else []).fetchall()
    finally:
        con.close()


def _middle(db) -> datetime:
    con = duckdb.connect(str(db), read_only=True)
    starts = sorted(t for (t,) in con.execute("SELECT started_at FROM sessions").fetchall())
    con.close()
    return starts[len(starts) // 2]


@pytest.fixture(scope="module")
def source_db(ray_session, tmp_path_factory):
    """SOURCE, run once: the source of the scripted forks here (forks only read it)."""
    db = tmp_path_factory.mktemp("source") / "source.duckdb"
    run(RunConfig.model_validate(SOURCE), db)
    return db


def test_fork_shares_the_history_before_t_and_runs_its_own_config_after(ray_session, tmp_path, source_db):
    at = _middle(source_db)
    config = fork_config(source_db, at, memory="none,temporal", chatbot_memory="temporal")
    assert config.fork is not None and config.run_id != RunConfig.model_validate(SOURCE).run_id
    fork_db = tmp_path / "fork.duckdb"
    summary = run(config, fork_db)
    assert summary.sessions == 3 * 4
    assert _turns(fork_db, before=at) == _turns(source_db, before=at), "identical history up to T"
    assert len(_turns(fork_db, before=at)) < len(_turns(fork_db))
    con = duckdb.connect(str(fork_db), read_only=True)
    strategies = {s for (s,) in con.execute("SELECT DISTINCT strategy FROM memory_snapshots").fetchall()}
    con.close()
    assert strategies == {"none", "temporal"}, "the fork's own memories observed the shared history too"


def test_fork_replays_the_shared_prefix_from_the_llm_cache(ray_session, tmp_path):
    source_db = tmp_path / "llm.duckdb"
    with FakeOpenAIServer() as server:
        llm = {**SOURCE, "chatbot_backend": {"kind": "openai", "model": "echo", "base_url": server.base_url}}
        run(RunConfig.model_validate(llm), source_db)
        source_calls = server.calls
        never = fork_config(source_db, datetime(2100, 1, 1), memory="none,sliding_window")
        run(never, tmp_path / "whole.duckdb")
        assert server.calls == source_calls, "the shared history costs no LLM call (this memory needs none)"
        assert _turns(tmp_path / "whole.duckdb") == _turns(source_db)
        # a live memory that needs no LLM of its own: every new call is a chatbot reply after T
        middle = fork_config(source_db, _middle(source_db) + timedelta(seconds=1), chatbot_memory="sliding_window",
                             memory="none,sliding_window")
        run(middle, tmp_path / "middle.duckdb")
        fork_calls = server.calls - source_calls
    assert 0 < fork_calls < source_calls, "only the sessions after T call the model"


def test_fork_cli_and_its_errors(ray_session, tmp_path, source_db):
    runner = CliRunner()
    ok = runner.invoke(app, ["run", "--fork-from", str(source_db), "--at", "2025-01-20T00:00", "--chatbot-memory",
                             "temporal", "--db", str(tmp_path / "fork.duckdb"), "--quiet"])
    assert ok.exit_code == 0, ok.output
    users = runner.invoke(app, ["run", "--fork-from", str(source_db), "--at", "2025-01-20", "--users", "4",
                                "--db", str(tmp_path / "bad.duckdb")])
    assert users.exit_code == 2 and "population must equal the source" in users.output
    no_at = runner.invoke(app, ["run", "--fork-from", str(source_db), "--db", str(tmp_path / "bad.duckdb")])
    assert no_at.exit_code == 2 and "--fork-from needs --at" in no_at.output
    bad_at = runner.invoke(app, ["run", "--fork-from", str(source_db), "--at", "soon", "--db", str(tmp_path / "b")])
    assert bad_at.exit_code == 2 and "is not a date-time" in bad_at.output
    with pytest.raises(Exception, match="does not exist"):
        fork_config(tmp_path / "missing.duckdb", datetime(2025, 1, 1))
