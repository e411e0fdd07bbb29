"""Store migrations that change what rows mean, not only the schema, so they need Python.

``sim/store.py`` runs them inside the transaction that migrates an older store: a store is
migrated entirely, or left as it was.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

OLD_NAME, DELETING_NAME = "full_history", "full_history_forgetting"
_SETTING = "full_history_deletes_on_request"  # the switch schema 9 stores may hold


def rename_deleting_full_history(con: duckdb.DuckDBPyConnection) -> None:
    """Schema 10: ``full_history`` became the raw history; the deleting one is ``full_history_forgetting``.

    A simulated or online run of an older store built its full_history by deleting on request (unless
    its config set ``full_history_deletes_on_request`` false), so its config, memory snapshots and
    answers are renamed to what they were: the rows stay those of the behaviour that made them, and
    the run id stays (``sim/config.py`` RUN_ID_SPELLING). A loaded PersonaMem-v2 run's full_history
    may predate the raw history its name now promises; its snapshots and answers are removed and the
    next ``personasim eval`` rebuilds them from the stored turns."""
    for run_id, config_json in con.execute("SELECT run_id, config_json FROM runs").fetchall():
        if run_id.startswith("pmv2-"):
            for table in ("memory_snapshots", "answers"):
                con.execute(f"DELETE FROM {table} WHERE run_id = ? AND strategy = ?", [run_id, OLD_NAME])
            continue
        config = json.loads(config_json)
        if not isinstance(config, dict):
            continue
        changed, renamed = _rename_in_config(config)
        if changed:
            con.execute("UPDATE runs SET config_json = ? WHERE run_id = ?",
                        [json.dumps(config, separators=(",", ":"), ensure_ascii=False), run_id])
        if renamed:
            _rename_rows(con, run_id)


def _rename_rows(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Strategy names are part of row ids: ``.../mem/<strategy>`` (sim/ids.py) and
    ``<question_id>/<strategy>/<reader>`` (analysis/evaluate.py)."""
    old_snapshot, new_snapshot = f"/mem/{OLD_NAME}", f"/mem/{DELETING_NAME}"
    con.execute(
        "UPDATE memory_snapshots SET strategy = ?, snapshot_id = left(snapshot_id, -length(?)) || ?"
        " WHERE run_id = ? AND strategy = ? AND ends_with(snapshot_id, ?)",
        [DELETING_NAME, old_snapshot, new_snapshot, run_id, OLD_NAME, old_snapshot],
    )
    old_answer, new_answer = f"/{OLD_NAME}/", f"/{DELETING_NAME}/"
    con.execute(
        "UPDATE answers SET strategy = ?,"
        " answer_id = question_id || ? || substr(answer_id, length(question_id) + length(?) + 1),"
        " snapshot_id = CASE WHEN ends_with(snapshot_id, ?) THEN left(snapshot_id, -length(?)) || ?"
        " ELSE snapshot_id END"
        " WHERE run_id = ? AND strategy = ? AND starts_with(answer_id, question_id || ?)",
        [DELETING_NAME, new_answer, old_answer, old_snapshot, old_snapshot, new_snapshot, run_id, OLD_NAME,
         old_answer],
    )


def _rename_in_config(config: dict[str, Any]) -> tuple[bool, bool]:
    """Rename in place, a fork's source config included: (anything changed, this run's strategies renamed)."""
    changed = renamed = False
    memory = config.get("memory")
    if isinstance(memory, dict):
        settings = memory.get("settings")
        had_setting = isinstance(settings, dict) and _SETTING in settings
        deleting = (settings.pop(_SETTING) if had_setting else True) is not False  # type: ignore[union-attr]
        changed = had_setting
        strategies = memory.get("strategies", [])
        if deleting and OLD_NAME in strategies:
            memory["strategies"] = [DELETING_NAME if s == OLD_NAME else s for s in strategies]
            changed = renamed = True
        if deleting and memory.get("chatbot") == OLD_NAME:
            memory["chatbot"] = DELETING_NAME
            changed = True
    fork = config.get("fork")
    if isinstance(fork, dict) and isinstance(fork.get("source"), dict):
        changed = _rename_in_config(fork["source"])[0] or changed
    return changed, renamed


def snapshots_stored_as_chains(con: duckdb.DuckDBPyConnection, stored_table_ddl: str) -> None:
    """Schema 11: ``memory_snapshots`` became a view over ``memory_snapshot_items`` (sim/snapshots.py).

    Every stored row moves over whole (``carried`` NULL), so the view gives back exactly what the
    table held; only later writes continue chains. ``text`` is the view's join of ``items``, which
    is what every writer stored: a row whose text is something else stops the migration (nothing
    changes) rather than lose it. ``stored_table_ddl`` creates ``memory_snapshot_items`` (sim/store.py
    generates it from its row model)."""
    from personasim.sim.snapshots import STORED_TABLE, VIEW

    exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
                         "AND table_type = 'BASE TABLE'", [VIEW]).fetchall()[0][0]
    if not exists:
        return
    (odd,) = con.execute(f"SELECT count(*) FROM {VIEW} WHERE text <> array_to_string(items, chr(10))").fetchall()[0]
    if odd:
        raise ValueError(f"{odd} memory snapshots hold a text other than their items joined by newlines; "
                         "this store cannot move to schema 11 as it is: export it with the personasim that wrote it")
    con.execute(stored_table_ddl)
    con.execute(f"INSERT INTO {STORED_TABLE} SELECT run_id, snapshot_id, persona_id, session_index, strategy, time, "
                f"NULL, items, tokens FROM {VIEW}")
    con.execute(f"DROP TABLE {VIEW}")
