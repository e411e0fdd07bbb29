from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import duckdb
import pytest

from personasim.sim.rows import TABLES, SessionRow
from personasim.sim.store import StoreError, TrajectoryStore, table_ddl


def _session(i: int) -> SessionRow:
    return SessionRow(run_id="r", session_id=f"p/s{i}", persona_id="p", session_index=i, scenario_id="x",
                      started_at=datetime(2025, 1, 1), ended_at=datetime(2025, 1, 1, 1), n_turns=6,
                      status="completed")


def test_schema_has_the_required_tables(tmp_path):
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        names = {r[0] for r in store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    required = {"runs", "personas", "preferences", "drift_events", "sessions", "turns", "memory_snapshots",
                "questions", "answers"}
    assert required <= names
    assert "PRIMARY KEY (run_id, turn_id)" in table_ddl("turns")
    assert set(TABLES) == required


def test_batches_are_atomic_and_duplicates_rejected(tmp_path):
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        store.write_many([("sessions", [_session(0), _session(1)])])
        with pytest.raises(duckdb.ConstraintException):
            store.write_many([("sessions", [_session(2), _session(1)])])
        ids = [r[0] for r in store.con.execute("SELECT session_id FROM sessions ORDER BY 1").fetchall()]
    assert ids == ["p/s0", "p/s1"], "a failed batch must leave nothing behind"


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
