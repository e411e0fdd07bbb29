"""The DuckDB trajectory store: one file, one writing process, every table keyed deterministically.

Rows arrive as pydantic models and are written as Arrow batches inside a transaction, so a batch
is either all in or not at all. Primary keys on (run_id, row id) make a duplicate write an error
instead of silent corruption.
"""

from __future__ import annotations

import contextlib
import types
import typing
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from personasim.sim.rows import TABLES

SCHEMA_VERSION = 8

# Each step brings a store from version N-1 to N. Tables new in a version are created by
# ``create_schema`` itself; steps only alter what already existed.
MIGRATIONS: dict[int, list[str]] = {
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


def arrow_schema(name: str) -> pa.Schema:
    model, _ = TABLES[name]
    return pa.schema([pa.field(c, t, nullable=n) for c, _, t, n in _column_types(model)])


class TrajectoryStore:
    """A DuckDB file holding runs. Open it once per process; only one process may write."""

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise StoreError(f"store {self.path} does not exist; run `personasim run --db {self.path}` first")
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

    def create_schema(self) -> None:
        """Create missing tables; migrate an older store in place (one transaction)."""
        self.con.execute("BEGIN TRANSACTION")
        try:
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
                for sql in MIGRATIONS.get(step, []):
                    self.con.execute(sql)
            for name in TABLES:
                self.con.execute(table_ddl(name))
            self.con.execute(
                "INSERT OR REPLACE INTO schema_info VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
            )
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise

    def write(self, table: str, rows: Sequence[BaseModel]) -> int:
        if not rows:
            return 0
        batch = pa.Table.from_pylist([r.model_dump() for r in rows], schema=arrow_schema(table))
        self.con.register("_personasim_batch", batch)
        try:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _personasim_batch")
        finally:
            with contextlib.suppress(duckdb.Error):  # an aborted transaction refuses; the next register replaces it
                self.con.unregister("_personasim_batch")
        return len(rows)

    def write_many(self, batches: Iterable[tuple[str, Sequence[BaseModel]]]) -> None:
        """Write several tables in one transaction: all rows land, or none do."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            for table, rows in batches:
                self.write(table, rows)
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise

    def has_run(self, run_id: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchall()[0][0])

    def delete_run(self, run_id: str) -> None:
        self.con.execute("BEGIN TRANSACTION")
        for name in TABLES:
            self.con.execute(f"DELETE FROM {name} WHERE run_id = ?", [run_id])
        self.con.execute("COMMIT")

    def set_status(self, run_id: str, status: str) -> None:
        self.con.execute("UPDATE runs SET status = ? WHERE run_id = ?", [status, run_id])

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
        self.con.execute("BEGIN TRANSACTION")
        try:
            for name, files in parts.items():
                listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
                (n,) = self.con.execute(f"SELECT count(*) FROM read_parquet([{listed}])").fetchall()[0]
                self.con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM read_parquet([{listed}])")
                loaded += n
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
        for files in parts.values():
            for f in files:
                f.unlink()
        return loaded

    def export_parquet(self, out_dir: str | Path) -> list[Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in TABLES:
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
