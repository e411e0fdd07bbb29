from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import duckdb
import pytest

from personasim.sim.rows import TABLES, SessionRow
from personasim.sim.store import StoreError, TrajectoryStore, table_ddl

#: memory_snapshots as a table, before schema 11 made it a view over memory_snapshot_items
V10_SNAPSHOTS_DDL = """CREATE TABLE IF NOT EXISTS memory_snapshots (
  run_id VARCHAR NOT NULL,
  snapshot_id VARCHAR NOT NULL,
  persona_id VARCHAR NOT NULL,
  session_index BIGINT NOT NULL,
  strategy VARCHAR NOT NULL,
  time TIMESTAMP NOT NULL,
  text VARCHAR NOT NULL,
  items VARCHAR[] NOT NULL,
  tokens BIGINT NOT NULL,
  PRIMARY KEY (run_id, snapshot_id)
)"""


def _session(i: int) -> SessionRow:
    return SessionRow(run_id="r", session_id=f"p/s{i}", persona_id="p", session_index=i, scenario_id="x",
                      started_at=datetime(2025, 1, 1), ended_at=datetime(2025, 1, 1, 1), n_turns=6,
                      status="completed")


def test_schema_has_the_required_tables(tmp_path):
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        names = {r[0] for r in store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    required = {"runs", "personas", "preferences", "drift_events", "forget_requests", "sensitive_facts",
                "consistency_probes", "sessions",
                "turns", "memory_snapshot_items", "questions", "answers", "source_files",
                "env_steps", "rewards", "training_runs", "training_metrics"}
    assert required | {"memory_snapshots"} <= names  # memory_snapshots: the view that gives snapshots whole
    assert "PRIMARY KEY (run_id, turn_id)" in table_ddl("turns")
    assert set(TABLES) == required


def test_batches_are_atomic_and_duplicates_rejected(tmp_path):
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        store.write_many([("sessions", [_session(0), _session(1)])])
        with pytest.raises(duckdb.ConstraintException):
            store.write_many([("sessions", [_session(2), _session(1)])])
        ids = [r[0] for r in store.con.execute("SELECT session_id FROM sessions ORDER BY 1").fetchall()]
    assert ids == ["p/s0", "p/s1"], "a failed batch must leave nothing behind"


def test_a_run_bounds_the_store_memory_and_writes_under_the_bound(tmp_path):
    """A run's store gets ``engine.store_memory_mb`` (DuckDB's default is 80% of RAM) and still takes
    batches larger than it caches."""
    from personasim.sim.config import EngineConfig

    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        default = store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        store.limit_memory(EngineConfig().store_memory_mb)  # type: ignore[arg-type]
        bounded = store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        store.limit_memory(64)
        store.write_many([("sessions", [_session(i) for i in range(20_000)])])
        written = store.con.execute("SELECT count(*) FROM sessions").fetchall()[0][0]
    assert default != bounded == "1.9 GiB"  # 2,048 MB, as DuckDB prints it
    assert written == 20_000


def test_a_store_killed_before_its_checkpoint_keeps_what_it_committed(tmp_path):
    """With ``engine.store_checkpoint_mb`` the committed rows sit in the write-ahead log until the
    next checkpoint; a writer killed before it (no close, no checkpoint) loses none of them: the
    next open replays the log."""
    from personasim.sim.config import EngineConfig

    path = tmp_path / "killed.duckdb"
    code = (
        "import os\nfrom datetime import datetime\n"
        "from personasim.sim.rows import SessionRow\nfrom personasim.sim.store import TrajectoryStore\n"
        f"store = TrajectoryStore({str(path)!r})\nstore.checkpoint_every({EngineConfig().store_checkpoint_mb})\n"
        "for b in range(3):\n"
        "    store.write_many([('sessions', [SessionRow(run_id='r', session_id=f'p{b}/s{i}', persona_id=f'p{b}',"
        " session_index=i, scenario_id='x', started_at=datetime(2025, 1, 1), ended_at=datetime(2025, 1, 1, 1),"
        " n_turns=6, status='completed') for i in range(1000)])])\n"
        "print(store.con.execute(\"SELECT current_setting('checkpoint_threshold')\").fetchall()[0][0], flush=True)\n"
        "os._exit(9)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 9, out.stderr
    assert out.stdout.strip() == "976.5 MiB"  # 1,024 MB, as DuckDB prints it
    assert (tmp_path / "killed.duckdb.wal").exists(), "the rows should still be in the log, not checkpointed"
    with TrajectoryStore(path, read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM sessions").fetchall()[0][0] == 3000


def test_second_writer_process_gets_a_clear_error(tmp_path):
    path = tmp_path / "locked.duckdb"
    store = TrajectoryStore(path)
    code = (
        "import sys\nfrom personasim.sim.store import TrajectoryStore, StoreError\n"
        f"try:\n    TrajectoryStore({str(path)!r})\nexcept StoreError as e:\n    print(e); sys.exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    store.close()
    assert out.returncode == 3, out.stderr
    assert "open for writing in another process" in out.stdout


def test_not_a_duckdb_file(tmp_path):
    bogus = tmp_path / "notes.duckdb"
    bogus.write_text("hello")
    with pytest.raises(StoreError, match="not a DuckDB store|cannot open store"):
        TrajectoryStore(bogus)


def test_a_version_1_store_is_migrated_in_place(tmp_path):
    """Stores written by schema version 1 open, migrate, and accept version-2 rows."""
    from personasim.sim.rows import DriftEventRow
    from personasim.sim.store import SCHEMA_VERSION

    added = {"sensitivity", "stereotype", "kind", "forget_preference_id", "leak_similarity", "leaked"}
    path = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_info (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO schema_info VALUES ('schema_version', '1')")
    for name in ["runs", "personas", "preferences", "drift_events", "sessions", "turns", "memory_snapshots",
                 "questions", "answers"]:
        ddl = V10_SNAPSHOTS_DDL if name == "memory_snapshots" else table_ddl(name)
        lines = [ln for ln in ddl.splitlines() if ln.strip().split(" ")[0] not in added]
        ddl = "\n".join(lines).replace(",\n)", "\n)")
        ddl = ddl.replace("old_preference_id VARCHAR,", "old_preference_id VARCHAR NOT NULL,")
        ddl = ddl.replace("new_preference_id VARCHAR,", "new_preference_id VARCHAR NOT NULL,")
        con.execute(ddl)
    con.execute("INSERT INTO drift_events VALUES ('r', 'e0', 'p', TIMESTAMP '2025-01-01', 'c', 't', 'a', 'b')")
    con.close()

    with TrajectoryStore(path) as store:
        version = store.con.execute("SELECT value FROM schema_info WHERE key = 'schema_version'").fetchall()
        assert version == [(str(SCHEMA_VERSION),)]
        store.write("drift_events", [DriftEventRow(
            run_id="r", event_id="e1", persona_id="p", time=datetime(2025, 1, 2), cause="faded", topic="t",
            old_preference_id="b", new_preference_id=None, kind="gradual")])
        rows = store.con.execute("SELECT event_id, kind, new_preference_id FROM drift_events ORDER BY 1").fetchall()
    assert rows == [("e0", "topic_swap", "b"), ("e1", "gradual", None)]


def test_a_newer_store_is_refused(tmp_path):
    path = tmp_path / "future.duckdb"
    TrajectoryStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE schema_info SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(StoreError, match="newer than this personasim"):
        TrajectoryStore(path)
