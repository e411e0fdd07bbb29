"""Memory snapshots as stored: each entry once per chain of sessions, not once per session.

A snapshot row is written whole or as a continuation of the previous row of its (run, persona,
strategy): ``MemorySnapshotItemsRow.carried``. ``SnapshotChains`` decides which, and the
``memory_snapshots`` view (``SNAPSHOTS_VIEW``) puts the rows back together, so every reader sees
whole snapshots and a run's snapshots take a raw history's bytes about once instead of once per
session. A continuation is only written where it is exact: the writer keeps a 64-bit digest of
each entry of the last row it wrote per chain (a few bytes per entry, not the entries), and
continues it only when the new entries begin with a suffix of those.

The one rule a writer must keep: a continuation extends the row before it in the store. The
session runner writes each user's sessions in order, a resumed or restarted shard replays what
is stored before it writes more, and every deletion removes whole chains (a run, or a strategy of
a run); rows written in one batch without chains (``stored_rows``) start whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from personasim.sim.rows import MemorySnapshotItemsRow, MemorySnapshotRow

STORED_TABLE = "memory_snapshot_items"
VIEW = "memory_snapshots"

#: The ``memory_snapshots`` view: each row's entries are the entries of its chain (since the last
#: whole row) laid end to end, less what was dropped along the way. Filters on run, persona or
#: strategy reach the table's scan (they are the window's partition), so reading a few users of a
#: large run reads only theirs.
SNAPSHOTS_VIEW = f"""
SELECT run_id, snapshot_id, persona_id, session_index, strategy, time,
       array_to_string(items, chr(10)) AS text, items, tokens
FROM (
  SELECT run_id, snapshot_id, persona_id, session_index, strategy, time, tokens,
         flatten(list(items) OVER chain)[sum(coalesce(carried, 0)) OVER chain + 1:] AS items
  FROM (
    SELECT *, count(*) FILTER (WHERE carried IS NULL) OVER (
        PARTITION BY run_id, persona_id, strategy ORDER BY session_index ROWS UNBOUNDED PRECEDING) AS chain_no
    FROM {STORED_TABLE})
  WINDOW chain AS (PARTITION BY run_id, persona_id, strategy, chain_no ORDER BY session_index
                   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
"""

_DIGEST = 8  # bytes per entry


def _digests(items: list[str]) -> bytes:
    return b"".join(hashlib.blake2b(item.encode(), digest_size=_DIGEST).digest() for item in items)


class SnapshotChains:
    """The writer's side: per (persona, strategy), the digests of the entries last written."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], bytes] = {}

    def stored(self, row: MemorySnapshotRow) -> MemorySnapshotItemsRow:
        """``row`` as it is written: whole, or continuing the last row written for its chain."""
        if row.text != "\n".join(row.items):
            raise ValueError(f"snapshot {row.snapshot_id}: text must be its items joined by newlines "
                             "(the store keeps the items and gives text back joined)")
        key = (row.persona_id, row.strategy)
        now = _digests(row.items)
        carried, new = _continuation(self._last.get(key, b""), now)
        self._last[key] = now
        return MemorySnapshotItemsRow(
            run_id=row.run_id, snapshot_id=row.snapshot_id, persona_id=row.persona_id,
            session_index=row.session_index, strategy=row.strategy, time=row.time, carried=carried,
            items=row.items[new:], tokens=row.tokens)


def _continuation(before: bytes, now: bytes) -> tuple[int | None, int]:
    """(entries of the previous row dropped, first new entry) when ``now`` continues ``before``
    (it begins with a non-empty suffix of it); (None, 0) when it is written whole."""
    n = len(before) // _DIGEST
    if not n or not now:
        return None, 0
    first = now[:_DIGEST]
    start = before.find(first)
    while start != -1:
        if start % _DIGEST == 0:
            kept = before[start:]
            if now.startswith(kept):
                return start // _DIGEST, len(kept) // _DIGEST
        start = before.find(first, start + 1)
    return None, 0


def stored_rows(rows: Iterable[MemorySnapshotRow]) -> list[MemorySnapshotItemsRow]:
    """Whole snapshots as written in one batch: each chain starts whole here, and a persona's
    later sessions continue it (rows are taken in session order per persona and strategy)."""
    chains = SnapshotChains()
    return [chains.stored(r) for r in sorted(rows, key=lambda r: (r.run_id, r.persona_id, r.strategy, r.session_index))]


def joined(previous: list[str] | None, carried: int | None, items: list[str], snapshot_id: str) -> list[str]:
    """A stored row's whole entries, given its chain's previous whole entries (None: no row before)."""
    if carried is None:
        return list(items)
    if previous is None:
        raise ValueError(f"snapshot {snapshot_id} continues a row that is not there")
    return previous[carried:] + list(items)


def whole_rows(stored: Iterable[MemorySnapshotItemsRow]) -> list[MemorySnapshotRow]:
    """The view's work in Python: stored rows (every chain from its whole row on) made whole."""
    out: list[MemorySnapshotRow] = []
    last: dict[tuple[str, str, str], list[str]] = {}
    for row in sorted(stored, key=lambda r: (r.run_id, r.persona_id, r.strategy, r.session_index)):
        key = (row.run_id, row.persona_id, row.strategy)
        items = last[key] = joined(last.get(key), row.carried, row.items, row.snapshot_id)
        out.append(MemorySnapshotRow(
            run_id=row.run_id, snapshot_id=row.snapshot_id, persona_id=row.persona_id,
            session_index=row.session_index, strategy=row.strategy, time=row.time, text="\n".join(items),
            items=items, tokens=row.tokens))
    return out
