"""The DuckDB trajectory store: one file, one writing process, every table keyed deterministically.

Rows arrive as pydantic models and are written as Arrow batches inside a transaction, so a batch
is either all in or not at all. Primary keys on (run_id, row id) make a duplicate write an error
instead of silent corruption.

This module is the store layer's core: opening a store (the one existence check), transactions,
replacing rows in one transaction and deleting a run. The run lifecycle lives in
``sim/store_runs.py`` and the typed readers and views in ``sim/store_read.py``; nothing outside
``sim/store*`` opens a transaction or writes ``runs``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from personasim.sim.rows import TABLES, MemorySnapshotRow
from personasim.sim.snapshots import SNAPSHOTS_VIEW, STORED_TABLE, VIEW, stored_rows
from personasim.sim.store_migrations import rename_deleting_full_history, snapshots_stored_as_chains

SCHEMA_VERSION = 11

#: What a reader sees by name: every table, with ``memory_snapshots`` (a view over
#: ``memory_snapshot_items``, sim/snapshots.py) in place of the table that stores it.
LOGICAL_TABLES: tuple[str, ...] = tuple(sorted(VIEW if name == STORED_TABLE else name for name in TABLES))

# Each step brings a store from version N-1 to N. Tables new in a version are created by
# ``create_schema`` itself; steps only alter what already existed (SQL, or a function for a step
# that changes what rows mean).
MIGRATIONS: dict[int, list[str | Callable[[duckdb.DuckDBPyConnection], None]]] = {
    2: [
        "ALTER TABLE preferences ADD COLUMN IF NOT EXISTS sensitivity VARCHAR",
        "ALTER TABLE preferences ADD COLUMN IF NOT EXISTS stereotype VARCHAR DEFAULT 'neutral'",
        "ALTER TABLE drift_events ALTER COLUMN new_preference_id DROP NOT NULL",
        "ALTER TABLE drift_events ALTER COLUMN old_preference_id DROP NOT NULL",
        "ALTER TABLE drift_events ADD COLUMN IF NOT EXISTS kind VARCHAR DEFAULT 'topic_swap'",
        "ALTER TABLE turns ADD COLUMN IF NOT EXISTS forget_preference_id VARCHAR",
    ],
    3: [
        "ALTER TABLE turns ADD COLUMN IF NOT EXISTS leak_similarity DOUBLE",
        "ALTER TABLE turns ADD COLUMN IF NOT EXISTS leaked BOOLEAN",
    ],
    4: [],  # new table consistency_probes only
    5: [
        "ALTER TABLE turns ADD COLUMN IF NOT EXISTS content_json VARCHAR",
        "ALTER TABLE questions ADD COLUMN IF NOT EXISTS tokens_since_reveal BIGINT DEFAULT -1",
        "ALTER TABLE questions ADD COLUMN IF NOT EXISTS preference_statement VARCHAR DEFAULT ''",
        "ALTER TABLE questions ADD COLUMN IF NOT EXISTS stale_statement VARCHAR",
        "ALTER TABLE questions ADD COLUMN IF NOT EXISTS pref_type VARCHAR DEFAULT ''",
        "ALTER TABLE questions ADD COLUMN IF NOT EXISTS who VARCHAR DEFAULT 'self'",
        "ALTER TABLE questions ADD COLUMN IF NOT EXISTS source VARCHAR DEFAULT 'generated'",
        "ALTER TABLE questions ADD COLUMN IF NOT EXISTS source_json VARCHAR",
        "ALTER TABLE answers ADD COLUMN IF NOT EXISTS reader_model VARCHAR",
        "ALTER TABLE answers ADD COLUMN IF NOT EXISTS raw_output VARCHAR",
    ],  # and the new table source_files
    6: ["ALTER TABLE sessions ADD COLUMN IF NOT EXISTS error VARCHAR"],
    7: [],  # new tables env_steps, rewards, training_runs, training_metrics only
    8: ["ALTER TABLE preferences ADD COLUMN IF NOT EXISTS owner VARCHAR DEFAULT 'self'"],
    9: ["ALTER TABLE turns ADD COLUMN IF NOT EXISTS filler BOOLEAN DEFAULT false"],
    10: [rename_deleting_full_history],  # full_history became the raw history (sim/store_migrations.py)
    # memory_snapshots became a view over memory_snapshot_items
    11: [lambda con: snapshots_stored_as_chains(con, table_ddl(STORED_TABLE))],
}

_SQL = {str: "VARCHAR", int: "BIGINT", float: "DOUBLE", bool: "BOOLEAN", datetime: "TIMESTAMP"}
_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), datetime: pa.timestamp("us")}


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message says how to fix it."""


def _unwrap(annotation: object) -> tuple[object, bool]:
    """(inner type, nullable) for ``X | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def _column_types(model: type[BaseModel]) -> list[tuple[str, str, pa.DataType, bool]]:
    cols = []
    for name, field in model.model_fields.items():
        inner, nullable = _unwrap(field.annotation)
        if typing.get_origin(inner) is list:
            (item,) = typing.get_args(inner)
            cols.append((name, _SQL[item] + "[]", pa.list_(_ARROW[item]), nullable))
        else:
            cols.append((name, _SQL[inner], _ARROW[inner], nullable))  # type: ignore[index]
    return cols


def table_ddl(name: str) -> str:
    model, key = TABLES[name]
    cols = [f"{c} {sql}{'' if nullable else ' NOT NULL'}" for c, sql, _, nullable in _column_types(model)]
    cols.append(f"PRIMARY KEY ({', '.join(key)})")
    return f"CREATE TABLE IF NOT EXISTS {name} (\n  " + ",\n  ".join(cols) + "\n)"


def row_dicts(rows: Sequence[BaseModel]) -> list[dict[str, object]]:
    """Rows as Arrow takes them: each model's own field dict. Store rows are flat (the DDL allows
    scalars and lists of scalars only), so it holds what ``model_dump`` would copy out, and a
    million answer rows spent 6% of an evaluation's driver time in ``model_dump``."""
    return [r.__dict__ for r in rows]


def arrow_schema(name: str) -> pa.Schema:
    model, _ = TABLES[name]
    return pa.schema([pa.field(c, t, nullable=n) for c, _, t, n in _column_types(model)])


def _check_arrow_schema(table: str, rows: pa.Table) -> None:
    if not rows.schema.equals(arrow_schema(table)):
        raise StoreError(f"an Arrow table written to {table} must have arrow_schema({table!r}); it has {rows.schema}")


def missing_store_error(path: str | Path) -> StoreError:
    """The one message for a store that is not there, naming the command that creates it."""
    return StoreError(f"store {path} does not exist; run `personasim run --db {path}` first")


def check_db_path(path: str | Path) -> None:
    """Fail before anything is written if a store cannot be created at ``path``."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"--db {path} is a directory; give a file path such as {path / 'run.duckdb'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise StoreError(f"cannot write --db {path}: directory {parent} does not exist; create it first")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".personasim-write-check-"):
            pass
    except OSError as exc:
        raise StoreError(f"cannot write --db {path}: {exc.strerror or exc}; choose a writable location") from exc


def remove_store(path: str | Path) -> None:
    """Delete a store file and its write-ahead log (a store this process created and must not leave behind)."""
    for p in (Path(path), Path(str(path) + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)


def open_store(path: str | Path, *, write: bool = False, create: bool = False) -> TrajectoryStore:
    """Open a store: read-only by default; ``write`` for an existing store that gains rows; ``create``
    for one that may not exist yet (the path is checked first, so a bad ``--db`` writes nothing).

    Every command that reads a store goes through here, so a missing store always gets the same
    message naming the command that creates it."""
    path = Path(path)
    if create:
        check_db_path(path)
        return TrajectoryStore(path)
    if not path.exists():
        raise missing_store_error(path)
    return TrajectoryStore(path, read_only=not write)


class TrajectoryStore:
    """A DuckDB file holding runs. Open it once per process; only one process may write."""

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise missing_store_error(self.path)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            msg = str(exc)
            if "lock" in msg.lower():
                raise StoreError(
                    f"store {self.path} is open for writing in another process; wait for it to finish "
                    "or use another --db path"
                ) from exc
            raise StoreError(f"cannot open store {self.path}: {msg.splitlines()[0]}") from exc
        except duckdb.Error as exc:
            raise StoreError(
                f"{self.path} is not a DuckDB store ({str(exc).splitlines()[0]}); choose another --db path"
            ) from exc
        if not read_only:
            self.create_schema()

    def limit_memory(self, megabytes: int) -> None:
        """Bound what DuckDB holds for this connection (cached pages above all): past it, it evicts
        or spills to disk. Its default, 80% of RAM, is an analytics database's; a run's writer
        shares the machine with Ray's actors and object store, and its page cache grew with the
        store (a 3,000-user store copied in chunks left 1.2 GB of pages held, 0.8 GB under 1 GB)."""
        self.con.execute(f"SET memory_limit = '{int(megabytes)}MB'")

    def checkpoint_every(self, megabytes: int) -> None:
        """Let the write-ahead log grow to ``megabytes`` before DuckDB checkpoints it into the file.

        Each checkpoint compresses what was appended and rewrites the tables' open row groups, so
        with DuckDB's 16 MB a run's writer spent more time checkpointing than inserting, and more
        as the store grew (a run's raw-history snapshots are most of its bytes). A larger log costs
        disk beside the file until the next checkpoint, and replay time if the process dies: a
        reopened store replays it, so nothing committed is lost."""
        self.con.execute(f"SET checkpoint_threshold = '{int(megabytes)}MB'")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All of the block's writes land, or none do.

        When COMMIT itself fails (a full disk, a write-protected file) DuckDB has already ended the
        transaction, and a ROLLBACK would fail with "no transaction is active", hiding the cause:
        the rollback's own error is dropped so the real one reaches the user."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
            self.con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                self.con.execute("ROLLBACK")
            raise

    def create_schema(self) -> None:
        """Create missing tables; migrate an older store in place (one transaction)."""
        with self.transaction():
            self.con.execute("CREATE TABLE IF NOT EXISTS schema_info (key VARCHAR PRIMARY KEY, value VARCHAR)")
            found = self.con.execute("SELECT value FROM schema_info WHERE key = 'schema_version'").fetchall()
            existing = {r[0] for r in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            version = int(found[0][0]) if found else (1 if "runs" in existing else SCHEMA_VERSION)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path} has schema version {version}, newer than this personasim "
                    f"({SCHEMA_VERSION}); upgrade personasim"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for migration in MIGRATIONS.get(step, []):
                    if callable(migration):
                        migration(self.con)
                    else:
                        self.con.execute(migration)
            for name in TABLES:
                self.con.execute(table_ddl(name))
            self.con.execute(f"CREATE OR REPLACE VIEW {VIEW} AS {SNAPSHOTS_VIEW}")
            self.con.execute(
                "INSERT OR REPLACE INTO schema_info VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
            )

    def write(self, table: str, rows: Sequence[BaseModel] | pa.Table) -> int:
        """Rows of ``table``: row models, or an Arrow table with ``arrow_schema(table)`` (what a
        process that built the rows sends back, so the writer converts nothing). Whole snapshots
        (``MemorySnapshotRow``) may be written to ``memory_snapshots``: they are stored as chains
        that start in this batch."""
        if isinstance(rows, pa.Table):
            if table == VIEW:
                raise StoreError(f"{VIEW} takes MemorySnapshotRow rows; write Arrow tables to {STORED_TABLE}")
            _check_arrow_schema(table, rows)
            return self._insert(table, rows)
        if not rows:
            return 0
        if table == VIEW:
            if not all(isinstance(r, MemorySnapshotRow) for r in rows):
                raise StoreError(f"{VIEW} takes MemorySnapshotRow rows (or write {STORED_TABLE} rows)")
            table, rows = STORED_TABLE, stored_rows(rows)  # type: ignore[arg-type]
        return self._insert(table, pa.Table.from_pylist(row_dicts(rows), schema=arrow_schema(table)))

    def _insert(self, table: str, batch: pa.Table) -> int:
        if not batch.num_rows:
            return 0
        self.con.register("_personasim_batch", batch)
        try:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _personasim_batch")
        finally:
            with contextlib.suppress(duckdb.Error):  # an aborted transaction refuses; the next register replaces it
                self.con.unregister("_personasim_batch")
        return batch.num_rows

    def write_many(self, batches: Iterable[tuple[str, Sequence[BaseModel] | pa.Table]]) -> None:
        """Write several tables in one transaction: all rows land, or none do."""
        with self.transaction():
            for table, rows in batches:
                self.write(table, rows)

    def replace_rows(
        self, delete: Mapping[str, Mapping[str, object]], write: Iterable[tuple[str, Sequence[BaseModel]]] = ()
    ) -> None:
        """Delete rows, then write rows, in one transaction: a re-evaluation, a regenerated question
        set or a rebuilt memory replaces what was there, or leaves it untouched.

        ``delete`` maps a table to column filters, ANDed: a scalar is an equality, a list means
        "any of these" (``{"answers": {"run_id": rid, "answer_id": ids}}``); ``{}`` deletes every row."""
        with self.transaction():
            for table, where in delete.items():
                self._delete(table, where)
            for table, rows in write:
                self.write(table, rows)

    def replace(self, table: str, rows: pa.Table) -> int:
        """Write an Arrow table of ``table`` (``arrow_schema(table)``) over the stored rows with the
        same primary key, in one transaction: a re-evaluation's answers replace the old ones batch
        by batch, and a kill leaves each answer old or new, never gone. The old rows are found by
        a join on the key (a list of a thousand ids as a filter took 10 ms per batch)."""
        if table not in TABLES or table == STORED_TABLE:
            choices = ", ".join(sorted(set(TABLES) - {STORED_TABLE}))
            raise StoreError(f"replace writes over rows by key in one of {choices}; not {table!r}")
        _check_arrow_schema(table, rows)
        key = TABLES[table][1]
        with self.transaction():
            self.con.register("_personasim_keys", rows.select(list(key)))
            try:
                on = " AND ".join(f"{table}.{c} = _personasim_keys.{c}" for c in key)
                self.con.execute(f"DELETE FROM {table} USING _personasim_keys WHERE {on}")
            finally:
                with contextlib.suppress(duckdb.Error):
                    self.con.unregister("_personasim_keys")
            return self._insert(table, rows)

    def _delete(self, table: str, where: Mapping[str, object]) -> None:
        """Deleting from ``memory_snapshots`` deletes its stored rows: filter by run, persona or
        strategy (whole chains), never by session, or a continuation would lose its start."""
        if table == VIEW:
            if any(column not in ("run_id", "persona_id", "strategy") for column in where):
                raise StoreError(f"{VIEW} rows are deleted by run_id, persona_id and strategy only (whole chains)")
            table = STORED_TABLE
        if table not in TABLES:
            raise StoreError(f"unknown table {table!r}")
        columns = TABLES[table][0].model_fields
        clauses, params = [], []
        for column, value in where.items():
            if column not in columns:
                raise StoreError(f"table {table} has no column {column!r}")
            if isinstance(value, list | tuple | set | frozenset):
                clauses.append(f"list_contains(?, {column})")
                params.append(list(value))
            else:
                clauses.append(f"{column} = ?")
                params.append(value)
        self.con.execute(f"DELETE FROM {table}" + (" WHERE " + " AND ".join(clauses) if clauses else ""), params)

    def update_rows(self, table: str, values: Mapping[str, object], where: Mapping[str, object]) -> None:
        """``UPDATE table SET values WHERE where`` (equalities), for status columns that change in place."""
        if table not in TABLES:
            raise StoreError(f"unknown table {table!r}")
        columns = TABLES[table][0].model_fields
        unknown = [c for c in (*values, *where) if c not in columns]
        if unknown:
            raise StoreError(f"table {table} has no column {unknown[0]!r}")
        sets = ", ".join(f"{c} = ?" for c in values)
        conds = " AND ".join(f"{c} = ?" for c in where) or "true"
        self.con.execute(f"UPDATE {table} SET {sets} WHERE {conds}", [*values.values(), *where.values()])

    def has_run(self, run_id: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchall()[0][0])

    def delete_run(self, run_id: str) -> None:
        """Every row of the run, in every table, in one transaction."""
        self.replace_rows({name: {"run_id": run_id} for name in TABLES})

    def set_status(self, run_id: str, status: str) -> None:
        self.update_rows("runs", {"status": status}, {"run_id": run_id})

    def ingest_parts(self, folder: str | Path) -> int:
        """Load the Parquet part files shards wrote (``<folder>/<table>/*.parquet``) in one
        transaction, then delete them; returns the rows loaded. Used by ``engine.store_mode =
        "parquet"``, where shards on a cluster write their own files instead of sending rows."""
        root = Path(folder)
        parts = {name: sorted((root / name).glob("*.parquet")) for name in TABLES if (root / name).is_dir()}
        parts = {name: files for name, files in parts.items() if files}
        if not parts:
            return 0
        loaded = 0
        with self.transaction():
            for name, files in parts.items():
                listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
                (n,) = self.con.execute(f"SELECT count(*) FROM read_parquet([{listed}])").fetchall()[0]
                self.con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM read_parquet([{listed}])")
                loaded += n
        for files in parts.values():
            for f in files:
                f.unlink()
        return loaded

    def export_parquet(self, out_dir: str | Path) -> list[Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in LOGICAL_TABLES:  # snapshots whole, as the view gives them
            target = out / f"{name}.parquet"
            self.con.execute(f"COPY {name} TO '{target}' (FORMAT PARQUET)")
            paths.append(target)
        return paths

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
