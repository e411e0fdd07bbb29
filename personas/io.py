"""Personas to and from Parquet: one row per persona, preferences and events as nested lists.

Nested columns keep a persona whole (it loads back identical) while DuckDB can still query it:
``SELECT id, demographics.age, len(preferences) FROM 'personas.parquet'``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from personasim.personas.models import Persona


def write_personas(personas: Iterable[Persona], path: str | Path, batch_size: int = 2000) -> int:
    """Stream personas into one Parquet file; returns how many were written."""
    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist; create it first")
    writer: pq.ParquetWriter | None = None
    count = 0
    batch: list[dict] = []
    try:
        for persona in personas:
            batch.append(persona.model_dump())
            if len(batch) >= batch_size:
                writer = _flush(batch, path, writer)
                count += len(batch)
                batch = []
        if batch or writer is None:
            writer = _flush(batch, path, writer)
            count += len(batch)
    finally:
        if writer is not None:
            writer.close()
    return count


def _flush(rows: list[dict], path: Path, writer: pq.ParquetWriter | None) -> pq.ParquetWriter:
    schema = writer.schema if writer is not None else _schema()
    table = pa.Table.from_pylist(rows, schema=schema)
    if writer is None:
        writer = pq.ParquetWriter(str(path), schema)
    writer.write_table(table)
    return writer


def _schema() -> pa.Schema:
    ts = pa.timestamp("us")
    pref = pa.struct([
        ("id", pa.string()), ("persona_id", pa.string()), ("domain", pa.string()), ("topic", pa.string()),
        ("option", pa.string()), ("statement", pa.string()), ("polarity", pa.string()), ("strength", pa.float64()),
        ("sensitive", pa.bool_()), ("sensitivity", pa.string()), ("stereotype", pa.string()),
        ("valid_from", ts), ("valid_to", ts), ("owner", pa.string()),
    ])
    person = pa.struct([("relation", pa.string()), ("name", pa.string()), ("gender", pa.string())])
    event = pa.struct([
        ("id", pa.string()), ("persona_id", pa.string()), ("time", ts), ("kind", pa.string()), ("cause", pa.string()),
        ("topic", pa.string()), ("old", pref), ("new", pref),
    ])
    forget = pa.struct([
        ("id", pa.string()), ("persona_id", pa.string()), ("time", ts), ("preference_id", pa.string()),
        ("topic", pa.string()),
    ])
    demographics = pa.struct([
        ("locale", pa.string()), ("name", pa.string()), ("age", pa.int64()), ("gender", pa.string()),
        ("occupation", pa.string()), ("city", pa.string()), ("country", pa.string()),
    ])
    facts = pa.struct([
        (name, pa.string()) for name in
        ("address", "phone", "email", "national_id", "passport_number", "credit_card", "bank_account", "api_key")
    ] + [("health_facts", pa.list_(pa.string()))])
    return pa.schema([
        ("id", pa.string()), ("index", pa.int64()), ("demographics", demographics),
        ("preferences", pa.list_(pref)), ("drift_events", pa.list_(event)),
        ("forget_requests", pa.list_(forget)), ("sensitive_facts", facts),
        ("people", pa.list_(person)), ("others_preferences", pa.list_(pref)),
    ])


def read_personas(path: str | Path) -> list[Persona]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"persona file {path} does not exist; create it with `personasim personas generate`")
    try:
        rows = pq.read_table(str(path)).to_pylist()
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{path} is not a persona Parquet file: {exc}") from exc
    return [Persona.model_validate(r) for r in rows]
