"""Typed readers and views over a store: what analysis and rl read, in one place.

Readers return the shapes the writers wrote (pydantic rows, a persona's timeline, snapshots) or
DataFrames/Arrow for bulk work, so a reader never decodes a column by position twice. Analysis
whose job *is* a query stays SQL, over the views defined here (``define_views``): they name the
joins every analysis repeats (an answer with its question, a revealing turn with its preference).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, TypeVar

import duckdb
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel

from personasim.personas.models import DriftEvent, ForgetRequest, Polarity, Preference
from personasim.personas.timeline import PersonaTimeline
from personasim.sim.rows import TABLES, QuestionRow
from personasim.sim.snapshots import STORED_TABLE as STORED_SNAPSHOTS
from personasim.sim.snapshots import VIEW as SNAPSHOTS
from personasim.sim.snapshots import joined

Row = TypeVar("Row", bound=BaseModel)

VIEWS = {
    # every answer beside the question it answers
    "answered_questions": (
        "SELECT a.*, q.question_type, q.asked_at, q.topic, q.reveal_mode AS question_reveal_mode,"
        " q.sessions_since_reveal, q.tokens_since_reveal, q.who, q.source"
        " FROM answers a JOIN questions q ON q.run_id = a.run_id AND q.question_id = a.question_id"
    ),
    # every user turn that revealed a preference, with the preference it revealed
    "revealing_turns": (
        "SELECT t.run_id, t.turn_id, t.session_id, t.persona_id, t.session_index, t.time, t.text, t.reveal_mode,"
        " t.hint_kind, p.preference_id, p.topic, p.option, p.polarity, p.owner"
        " FROM turns t JOIN preferences p ON p.run_id = t.run_id AND p.preference_id = t.revealed_preference_id"
        " WHERE t.role = 'user'"
    ),
}


def define_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create the views as temporary ones: they work on read-only connections and never change the file."""
    for name, sql in VIEWS.items():
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")


def read_rows(con: duckdb.DuckDBPyConnection, table: str, run_id: str, model: type[Row] | None = None,
              order_by: str | None = None) -> list[Row]:
    """A table's rows of one run as its pydantic row model, in key order (or ``order_by``)."""
    row_model, key = TABLES[table]
    model = model or row_model  # type: ignore[assignment]
    fields = list(model.model_fields)  # type: ignore[union-attr]
    cursor = con.execute(
        f"SELECT {', '.join(fields)} FROM {table} WHERE run_id = ? ORDER BY {order_by or ', '.join(key)}", [run_id])
    return [model.model_validate(dict(zip(fields, r, strict=True))) for r in cursor.fetchall()]  # type: ignore[union-attr]


def read_frame(con: duckdb.DuckDBPyConnection, table: str, run_id: str, columns: Sequence[str] | None = None
               ) -> pd.DataFrame:
    """A table's rows of one run as a DataFrame (``columns``, default all)."""
    if table not in TABLES and table not in VIEWS and table != SNAPSHOTS:
        raise ValueError(f"unknown table or view {table!r}")
    select = ", ".join(columns) if columns else "*"
    return con.execute(f"SELECT {select} FROM {table} WHERE run_id = ?", [run_id]).df()


def read_arrow(con: duckdb.DuckDBPyConnection, table: str, run_id: str) -> pa.Table:
    if table not in TABLES and table != SNAPSHOTS:
        raise ValueError(f"unknown table {table!r}")
    relation = con.sql(f"SELECT * FROM {table} WHERE run_id = $run_id", params={"run_id": run_id})
    # DuckDB 2 names it to_arrow_table; 1.x (still admitted by pyproject) arrow
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    return fetch()


def count_rows(con: duckdb.DuckDBPyConnection, table: str, run_id: str) -> int:
    if table == SNAPSHOTS:  # the view's rows are the stored rows: count them without joining chains
        table = STORED_SNAPSHOTS
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
    return con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]).fetchall()[0][0]


# -- questions, snapshots, the timeline -----------------------------------------------------------

def read_questions(
    con: duckdb.DuckDBPyConnection, run_id: str, persona_ids: list[str] | None = None, types: list[str] | None = None
) -> list[QuestionRow]:
    """The run's stored questions, in id order, as the rows they were written from; only
    ``persona_ids``' and of ``types`` when given (9.5 KB per question as objects: a 10,000-user
    run's 400,000 would take 4 GB at once)."""
    sql, params = "SELECT * FROM questions WHERE run_id = $run", {"run": run_id}
    if persona_ids is not None:
        sql, params["users"] = sql + " AND persona_id IN (SELECT unnest($users::VARCHAR[]))", persona_ids
    if types:
        sql, params["types"] = sql + " AND question_type IN (SELECT unnest($types::VARCHAR[]))", types
    cursor = con.execute(sql + " ORDER BY question_id", params)
    names = [d[0] for d in cursor.description]
    return [QuestionRow.model_validate(dict(zip(names, r, strict=True))) for r in cursor.fetchall()]


def question_users(con: duckdb.DuckDBPyConnection, run_id: str, types: list[str] | None = None) -> list[str]:
    """The users the run's questions (of ``types`` when given) are about, in the order the
    questions first name them by id: the order ``read_questions`` meets them."""
    sql, params = "SELECT persona_id FROM questions WHERE run_id = $run", {"run": run_id}
    if types:
        sql, params["types"] = sql + " AND question_type IN (SELECT unnest($types::VARCHAR[]))", types
    return [r[0] for r in con.execute(sql + " GROUP BY persona_id ORDER BY min(question_id)", params).fetchall()]


class SnapshotRef(BaseModel):
    """A memory's state at one session end: what an answer at a later time may use."""

    snapshot_id: str
    time: datetime
    items: list[str]
    tokens: int


def read_snapshots(
    con: duckdb.DuckDBPyConnection, run_id: str, persona_ids: list[str] | None = None
) -> dict[tuple[str, str], list[SnapshotRef]]:
    """Each (persona, strategy)'s snapshots in time order; only ``persona_ids``' when given (a
    large run's snapshots do not fit in memory at once as whole lists: 170 MB of Python objects
    per 200 users of 10 sessions).

    Chains are joined here, not by the ``memory_snapshots`` view: a filter on a list of users
    is a join, which DuckDB does not push below the view's window, so each batch of users would
    have joined every chain of the run (a 10,000-user evaluation spent 90 s more so). A
    continuation's entries are the same string objects as the row before's."""
    if not _has_table(con, STORED_SNAPSHOTS):  # a store older than schema 11, opened read-only
        return _read_whole_snapshots(con, run_id, persona_ids)
    which = "" if persona_ids is None else " AND persona_id IN (SELECT unnest(?::VARCHAR[]))"
    chains: dict[tuple[str, str], list[tuple[str, datetime, list[str], int]]] = defaultdict(list)
    for sid, persona, strategy, time, carried, items, tokens in con.execute(
        "SELECT snapshot_id, persona_id, strategy, time, carried, items, tokens FROM "
        f"{STORED_SNAPSHOTS} WHERE run_id = ?{which} ORDER BY persona_id, strategy, session_index",
        [run_id] if persona_ids is None else [run_id, persona_ids],
    ).fetchall():
        chain = chains[(persona, strategy)]
        chain.append((sid, time, joined(chain[-1][2] if chain else None, carried, items, sid), tokens))
    out: dict[tuple[str, str], list[SnapshotRef]] = defaultdict(list)
    for key, chain in chains.items():
        out[key] = [SnapshotRef(snapshot_id=sid, time=time, items=items, tokens=tokens)
                    for sid, time, items, tokens in sorted(chain, key=lambda c: (c[1], c[0]))]
    return out


class SnapshotRow(NamedTuple):
    """One whole snapshot, as the ``memory_snapshots`` view gives it (its text is the items joined
    by newlines)."""

    persona_id: str
    strategy: str
    session_index: int
    time: datetime
    items: list[str]
    tokens: int


def snapshot_users(con: duckdb.DuckDBPyConnection, run_id: str, strategies: list[str] | None = None) -> list[str]:
    """The users with snapshots (of ``strategies`` when given), sorted."""
    table = STORED_SNAPSHOTS if _has_table(con, STORED_SNAPSHOTS) else SNAPSHOTS
    sql, params = f"SELECT DISTINCT persona_id FROM {table} WHERE run_id = $run", {"run": run_id}
    if strategies is not None:
        sql, params["strategies"] = sql + " AND strategy IN (SELECT unnest($strategies::VARCHAR[]))", strategies
    return [r[0] for r in con.execute(sql + " ORDER BY 1", params).fetchall()]


def read_snapshot_rows(con: duckdb.DuckDBPyConnection, run_id: str, persona_ids: list[str],
                       strategies: list[str] | None = None) -> list[SnapshotRow]:
    """``persona_ids``' whole snapshots (of ``strategies`` when given), ordered by strategy, user and
    session, for a reader that goes through a run a chunk of users at a time; chains joined here,
    as in ``read_snapshots`` (the view's join is not pushed below its window)."""
    if not _has_table(con, STORED_SNAPSHOTS):  # a store older than schema 11, opened read-only
        table, columns = SNAPSHOTS, "NULL::INTEGER AS carried"
    else:
        table, columns = STORED_SNAPSHOTS, "carried"
    sql = (f"SELECT snapshot_id, persona_id, strategy, session_index, time, {columns}, items, tokens FROM {table}"
           " WHERE run_id = $run AND persona_id IN (SELECT unnest($users::VARCHAR[]))")
    params: dict[str, object] = {"run": run_id, "users": persona_ids}
    if strategies is not None:
        sql, params["strategies"] = sql + " AND strategy IN (SELECT unnest($strategies::VARCHAR[]))", strategies
    rows: list[SnapshotRow] = []
    previous: dict[tuple[str, str], list[str]] = {}
    for sid, persona, strategy, session, time, carried, items, tokens in con.execute(
            sql + " ORDER BY strategy, persona_id, session_index", params).fetchall():
        whole = previous[(persona, strategy)] = joined(previous.get((persona, strategy)), carried, items, sid)
        rows.append(SnapshotRow(persona, strategy, session, time, whole, tokens))
    return rows


def _read_whole_snapshots(con: duckdb.DuckDBPyConnection, run_id: str, persona_ids: list[str] | None
                          ) -> dict[tuple[str, str], list[SnapshotRef]]:
    out: dict[tuple[str, str], list[SnapshotRef]] = defaultdict(list)
    which = "" if persona_ids is None else " AND persona_id IN (SELECT unnest(?::VARCHAR[]))"
    for sid, persona, strategy, time, items, tokens in con.execute(
        "SELECT snapshot_id, persona_id, strategy, time, items, tokens FROM memory_snapshots"
        f" WHERE run_id = ?{which} ORDER BY time, snapshot_id",
        [run_id] if persona_ids is None else [run_id, persona_ids],
    ).fetchall():
        out[(persona, strategy)].append(SnapshotRef(snapshot_id=sid, time=time, items=items, tokens=tokens))
    return out


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [name]).fetchall()[0][0])


def snapshot_strategies(con: duckdb.DuckDBPyConnection, run_id: str) -> list[str]:
    table = STORED_SNAPSHOTS if _has_table(con, STORED_SNAPSHOTS) else SNAPSHOTS
    rows = con.execute(f"SELECT DISTINCT strategy FROM {table} WHERE run_id = ? ORDER BY strategy", [run_id]).fetchall()
    return [r[0] for r in rows]


def read_timelines(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, PersonaTimeline]:
    """Every persona's timeline (preferences with validity, drift, forget requests), from the store alone."""
    prefs: dict[str, Preference] = {}
    rows = con.execute(
        "SELECT preference_id, persona_id, domain, topic, option, statement, polarity, strength, sensitive,"
        " sensitivity, stereotype, valid_from, valid_to FROM preferences WHERE run_id = ? ORDER BY preference_id",
        [run_id],
    ).fetchall()
    for r in rows:
        prefs[r[0]] = Preference(
            id=r[0], persona_id=r[1], domain=r[2], topic=r[3], option=r[4], statement=r[5],
            polarity=Polarity(r[6]), strength=r[7], sensitive=r[8], sensitivity=r[9], stereotype=r[10],
            valid_from=r[11], valid_to=r[12],
        )
    events: dict[str, list[DriftEvent]] = defaultdict(list)
    for e in con.execute(
        "SELECT event_id, persona_id, time, kind, cause, topic, old_preference_id, new_preference_id"
        " FROM drift_events WHERE run_id = ? ORDER BY event_id",
        [run_id],
    ).fetchall():
        events[e[1]].append(DriftEvent(
            id=e[0], persona_id=e[1], time=e[2], kind=e[3], cause=e[4], topic=e[5],
            old=prefs[e[6]] if e[6] else None, new=prefs[e[7]] if e[7] else None,
        ))
    forgets: dict[str, list[ForgetRequest]] = defaultdict(list)
    for f in con.execute(
        "SELECT request_id, persona_id, time, preference_id, topic FROM forget_requests WHERE run_id = ?"
        " ORDER BY request_id",
        [run_id],
    ).fetchall():
        forgets[f[1]].append(ForgetRequest(id=f[0], persona_id=f[1], time=f[2], preference_id=f[3], topic=f[4]))
    by_persona: dict[str, list[Preference]] = defaultdict(list)
    for p in prefs.values():
        by_persona[p.persona_id].append(p)
    return {pid: PersonaTimeline(ps, events.get(pid, []), forgets.get(pid, [])) for pid, ps in by_persona.items()}
