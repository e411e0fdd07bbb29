"""Schema 10: ``full_history`` became the raw history; stores written before keep what their rows were.

A schema-9 simulated run built ``full_history`` by deleting on request: opened now, its config,
snapshots and answers are renamed to ``full_history_forgetting`` and its run id stays, so it
still resumes, forks and reports. (Checked once by hand as well: a schema-9 store of 6 users x 4
sessions, migrated, equals a fresh ``full_history_forgetting`` run of the same config in all 18
tables.)
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import duckdb
import pytest

from personasim.config import build_config
from personasim.sim.config import RunConfig
from personasim.sim.rows import MemorySnapshotRow
from personasim.sim.store import TrajectoryStore, open_store
from personasim.sim.store_migrations import _rename_in_config
from personasim.sim.store_runs import LoadedPersonaMemConfig, read_run, start_run


def _as_schema_9(path, config_edit=None, deleting: bool = False) -> None:
    """Mark a store as schema 9; ``deleting``: give its run the id schema 9 gave a full_history
    that deleted on request (the id ``full_history_forgetting`` has now), in every table."""
    con = duckdb.connect(str(path))
    _snapshots_as_a_table(con)
    con.execute("UPDATE schema_info SET value = '9' WHERE key = 'schema_version'")
    if deleting:
        (run_id, config_json), = con.execute("SELECT run_id, config_json FROM runs").fetchall()
        config = RunConfig.model_validate_json(config_json)
        names = ["full_history_forgetting" if n == "full_history" else n for n in config.memory.strategies]
        legacy_id = config.model_copy(update={"memory": config.memory.model_copy(update={"strategies": names})}).run_id
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        for table in tables:
            if table != "schema_info":
                con.execute(f"UPDATE {table} SET run_id = ? WHERE run_id = ?", [legacy_id, run_id])
    if config_edit is not None:
        (run_id, config_json), = con.execute("SELECT run_id, config_json FROM runs").fetchall()
        config = json.loads(config_json)
        config_edit(config)
        con.execute("UPDATE runs SET config_json = ? WHERE run_id = ?", [json.dumps(config), run_id])
    con.close()


def _snapshots_as_a_table(con: duckdb.DuckDBPyConnection) -> None:
    """Back to the layout before schema 11: ``memory_snapshots`` a table of whole rows."""
    con.execute("CREATE TABLE whole_snapshots AS SELECT * FROM memory_snapshots")
    con.execute("DROP VIEW memory_snapshots")
    con.execute("DROP TABLE memory_snapshot_items")
    con.execute("ALTER TABLE whole_snapshots RENAME TO memory_snapshots")


def _by_strategy(path, table: str) -> dict[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return dict(con.execute(f"SELECT strategy, count(*) FROM {table} GROUP BY 1").fetchall())
    finally:
        con.close()


def test_a_schema_9_run_keeps_its_deleting_full_history_under_the_new_name(small_run, tmp_path):
    _, source = small_run
    path = tmp_path / "v9.duckdb"
    shutil.copy(source, path)
    _as_schema_9(path, deleting=True)  # schema 9 built small_run's full_history by deleting on request
    before = {t: _by_strategy(path, t) for t in ("memory_snapshots", "answers")}
    assert before["memory_snapshots"]["full_history"] > 0

    with open_store(path, write=True) as store:
        (run_id,) = [r[0] for r in store.con.execute("SELECT run_id FROM runs").fetchall()]
        config = read_run(store, run_id).spec.config
        assert "full_history" not in config.memory.strategies and "full_history_forgetting" in config.memory.strategies
        assert config.run_id == run_id, "the renamed config gives the stored id: the run still resumes and forks"
        bad_ids = store.con.execute(
            "SELECT count(*) FROM memory_snapshots WHERE strategy = 'full_history_forgetting'"
            " AND NOT ends_with(snapshot_id, '/mem/full_history_forgetting')").fetchall()[0][0]
        orphans = store.con.execute(
            "SELECT count(*) FROM answers a LEFT JOIN memory_snapshots m USING (run_id, snapshot_id)"
            " WHERE a.snapshot_id IS NOT NULL AND m.snapshot_id IS NULL").fetchall()[0][0]
        misnamed = store.con.execute(
            "SELECT count(*) FROM answers WHERE answer_id <> question_id || '/' || strategy || '/' || reader"
        ).fetchall()[0][0]
    assert (bad_ids, orphans, misnamed) == (0, 0, 0)
    for table, counts in before.items():
        after = _by_strategy(path, table)
        assert after.pop("full_history_forgetting") == counts.pop("full_history")
        assert after == counts, f"{table}: only full_history rows are renamed"


def test_a_schema_9_run_that_kept_the_raw_history_is_left_as_it_is(small_run, tmp_path):
    _, source = small_run
    path = tmp_path / "raw.duckdb"
    shutil.copy(source, path)
    _as_schema_9(path, lambda c: c["memory"]["settings"].update(full_history_deletes_on_request=False))
    before = _by_strategy(path, "answers")
    with open_store(path, write=True) as store:
        (run_id,) = [r[0] for r in store.con.execute("SELECT run_id FROM runs").fetchall()]
        config = read_run(store, run_id).spec.config  # the dropped setting is gone from the stored config
    assert "full_history" in config.memory.strategies and config.run_id == run_id
    assert _by_strategy(path, "answers") == before


def test_a_loaded_run_of_schema_9_rebuilds_its_full_history(tmp_path):
    """A loaded run's full_history may predate the raw history: its rows go, and eval rebuilds them."""
    path = tmp_path / "loaded.duckdb"
    loaded = LoadedPersonaMemConfig(source="personamem_v2", folder="data", window="32k", files=["a.csv"],
                                    strategies=["none", "full_history", "agentic"])
    rows = [MemorySnapshotRow(run_id="pmv2-1", snapshot_id=f"u/s0000/mem/{s}", persona_id="u", session_index=0,
                              strategy=s, time=datetime(2025, 1, 1), text="t", items=["t"], tokens=1)
            for s in ("none", "full_history", "agentic")]
    with TrajectoryStore(path) as store:
        start_run(store, "pmv2-1", loaded, status="completed", rows=[("memory_snapshots", rows)])
    _as_schema_9(path)
    with open_store(path, write=True):
        pass
    assert _by_strategy(path, "memory_snapshots") == {"none": 1, "agentic": 1}


def test_the_deleting_long_context_keeps_the_run_id_it_had_as_full_history():
    """Run ids hash ``full_history_forgetting`` as ``full_history`` (its name when ids were derived)
    and the raw history under a new spelling: same behaviour, same id; new behaviour, new id."""
    deleting = build_config(users=6, sessions=4, memory="none,full_history_forgetting,agentic")
    raw = build_config(users=6, sessions=4, memory="none,full_history,agentic")
    assert deleting.run_id == "run-e564d70a9df1"  # what schema-9 personasim gave none,full_history,agentic
    assert raw.run_id != deleting.run_id
    assert json.loads(raw.model_dump_json())["memory"]["strategies"] == ["none", "full_history", "agentic"]


def test_a_forks_source_config_is_renamed_too():
    config = build_config(users=2, sessions=2).model_dump(mode="json", exclude={"engine"})
    config["fork"] = {"source": json.loads(json.dumps(config)), "at": "2025-02-01T00:00:00"}
    changed, renamed = _rename_in_config(config)
    assert changed and renamed
    assert config["fork"]["source"]["memory"]["strategies"] == ["none", "full_history_forgetting", "agentic"]
    RunConfig.model_validate(config["fork"]["source"])


def _schema_10_copy(source, path) -> duckdb.DuckDBPyConnection:
    """A copy of ``source`` as schema 10 wrote it (snapshots whole, in a table), open for writing."""
    shutil.copy(source, path)
    con = duckdb.connect(str(path))
    _snapshots_as_a_table(con)
    con.execute("UPDATE schema_info SET value = '10' WHERE key = 'schema_version'")
    return con


def test_a_schema_10_store_keeps_every_snapshot_through_the_view(small_run, tmp_path):
    """Schema 11 stores snapshots as chains; an older store's rows move over whole, and the view
    gives back exactly the rows the table held."""
    path = tmp_path / "v10.duckdb"
    con = _schema_10_copy(small_run[1], path)
    before = con.execute("SELECT * FROM memory_snapshots ORDER BY snapshot_id").fetchall()
    con.close()
    with open_store(path, write=True) as store:
        after = store.con.execute("SELECT * FROM memory_snapshots ORDER BY snapshot_id").fetchall()
        carried = store.con.execute("SELECT count(carried) FROM memory_snapshot_items").fetchall()[0][0]
        kind = store.con.execute("SELECT table_type FROM information_schema.tables "
                                 "WHERE table_name = 'memory_snapshots'").fetchall()[0][0]
    assert len(before) == 216 and after == before
    assert carried == 0 and kind == "VIEW"


def test_snapshots_of_an_unmigrated_store_read_as_after_its_migration(small_run, tmp_path):
    """``read_snapshots`` on a schema-10 store opened read-only (no migration) reads its table."""
    from personasim.sim.store_read import read_snapshots

    path = tmp_path / "v10.duckdb"
    _schema_10_copy(small_run[1], path).close()
    con = duckdb.connect(str(path), read_only=True)
    (run_id,) = con.execute("SELECT run_id FROM runs").fetchall()[0]
    old = read_snapshots(con, run_id, ["p0000001"])
    con.close()
    with open_store(path, write=True) as store:
        new = read_snapshots(store.con, run_id, ["p0000001"])
    assert old and old == new


def test_a_snapshot_whose_text_is_not_its_items_stops_the_migration(small_run, tmp_path):
    path = tmp_path / "odd.duckdb"
    con = _schema_10_copy(small_run[1], path)
    con.execute("UPDATE memory_snapshots SET text = 'something else' WHERE strategy = 'agentic' AND session_index = 0")
    con.close()
    with pytest.raises(ValueError, match="other than their items joined"):
        open_store(path, write=True)
    con = duckdb.connect(str(path), read_only=True)
    version = con.execute("SELECT value FROM schema_info WHERE key = 'schema_version'").fetchall()[0][0]
    kept = con.execute("SELECT count(*) FROM memory_snapshots WHERE text = 'something else'").fetchall()[0][0]
    con.close()
    assert version == "10" and kept > 0, "a refused migration changes nothing"
