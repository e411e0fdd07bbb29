"""Snapshots stored as chains (sim/snapshots.py): the view gives back every snapshot exactly."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from personasim.sim.rows import MemorySnapshotRow
from personasim.sim.snapshots import SnapshotChains, stored_rows, whole_rows
from personasim.sim.store import StoreError, TrajectoryStore
from personasim.sim.store_read import read_snapshots


def _row(persona: str, strategy: str, k: int, items: list[str], run_id: str = "r") -> MemorySnapshotRow:
    return MemorySnapshotRow(run_id=run_id, snapshot_id=f"{persona}/s{k:04d}/mem/{strategy}", persona_id=persona,
                             session_index=k, strategy=strategy, time=datetime(2025, 1, 1) + timedelta(days=k),
                             text="\n".join(items), items=items, tokens=len(items))


def _histories(seed: int = 0) -> list[MemorySnapshotRow]:
    """Snapshots of several kinds of memory over 12 sessions: a raw history that grows and is cut
    from its oldest end, one that also deletes lines (forgetting), a rewritten note list, an empty
    memory, and lines that repeat (the same message said twice)."""
    rng = random.Random(seed)
    rows: list[MemorySnapshotRow] = []
    for persona in ("p0", "p1"):
        raw: list[str] = []
        forgetting: list[str] = []
        for k in range(12):
            new = [f"[{k}] user: message {rng.randint(0, 3)}" for _ in range(rng.randint(0, 4))]
            raw += new
            forgetting += new
            if k % 4 == 3 and forgetting:
                del forgetting[rng.randrange(len(forgetting))]
            rows += [
                _row(persona, "full_history", k, raw[-9:]),  # the context budget keeps the newest 9
                _row(persona, "full_history_forgetting", k, list(forgetting)),
                _row(persona, "agentic", k, [f"note {rng.randint(0, 5)}" for _ in range(rng.randint(0, 3))]),
                _row(persona, "none", k, []),
            ]
    return rows


def test_chains_give_back_every_snapshot_exactly():
    rows = _histories()
    chains = SnapshotChains()
    stored = [chains.stored(r) for r in rows]
    assert sorted(whole_rows(stored), key=lambda r: r.snapshot_id) == sorted(rows, key=lambda r: r.snapshot_id)
    raw = [s for s in stored if s.strategy == "full_history"]
    assert sum(s.carried is not None for s in raw) >= 18, "a raw history's snapshots continue the one before"
    assert sum(len(s.items) for s in raw) < sum(len(r.items) for r in rows if r.strategy == "full_history") / 3


def test_the_view_gives_the_rows_written_whole_and_as_chains(tmp_path):
    rows = _histories(seed=1)
    chains = SnapshotChains()
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        store.write_many([("memory_snapshot_items", [chains.stored(r) for r in rows if r.run_id == "r"])])
        again = [r.model_copy(update={"run_id": "whole"}) for r in rows]
        store.write_many([("memory_snapshots", again)])  # whole rows: the store makes the chains
        got = store.con.execute("SELECT * FROM memory_snapshots ORDER BY run_id, snapshot_id").fetchall()
        stored_items = store.con.execute("SELECT sum(len(items)) FROM memory_snapshot_items").fetchall()[0][0]
    expected = sorted((*rows, *again), key=lambda r: (r.run_id, r.snapshot_id))
    assert got == [tuple(r.model_dump().values()) for r in expected]
    assert stored_items < sum(len(r.items) for r in expected) / 2


def test_a_batch_of_whole_rows_starts_each_chain_whole():
    rows = _histories(seed=2)
    stored = stored_rows(reversed(rows))  # any order: each chain is taken in session order
    first = {(s.persona_id, s.strategy): s for s in sorted(stored, key=lambda s: -s.session_index)}
    assert all(s.carried is None for s in first.values())
    assert sorted(whole_rows(stored), key=lambda r: r.snapshot_id) == sorted(rows, key=lambda r: r.snapshot_id)


def test_a_continuation_without_its_start_is_an_error():
    rows = [_row("p", "full_history", k, [f"line {i}" for i in range(k + 1)]) for k in range(3)]
    chains = SnapshotChains()
    stored = [chains.stored(r) for r in rows]
    with pytest.raises(ValueError, match="continues a row that is not there"):
        whole_rows(stored[1:])


def test_a_text_that_is_not_the_items_is_refused():
    row = _row("p", "agentic", 0, ["a", "b"]).model_copy(update={"text": "a b"})
    with pytest.raises(ValueError, match="items joined by newlines"):
        SnapshotChains().stored(row)


def test_snapshots_are_deleted_in_whole_chains_only(tmp_path):
    rows = _histories(seed=3)
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        store.write_many([("memory_snapshots", rows)])
        with pytest.raises(StoreError, match="whole chains"):
            store.replace_rows({"memory_snapshots": {"run_id": "r", "session_index": 3}})
        store.replace_rows({"memory_snapshots": {"run_id": "r", "strategy": ["agentic"]}})
        left = dict(store.con.execute("SELECT strategy, count(*) FROM memory_snapshots GROUP BY 1").fetchall())
    assert left == {"full_history": 24, "full_history_forgetting": 24, "none": 24}


def test_read_snapshots_joins_the_chains_as_the_view_does(tmp_path):
    rows = _histories(seed=4)
    chains = SnapshotChains()
    with TrajectoryStore(tmp_path / "s.duckdb") as store:
        store.write_many([("memory_snapshot_items", [chains.stored(r) for r in rows])])
        some = read_snapshots(store.con, "r", ["p1"])
        every = read_snapshots(store.con, "r")
    assert {p for p, _ in some} == {"p1"} and set(every) >= set(some)
    for (persona, strategy), refs in every.items():
        expected = sorted((r for r in rows if (r.persona_id, r.strategy) == (persona, strategy)),
                          key=lambda r: (r.time, r.snapshot_id))
        assert [(s.snapshot_id, s.time, s.items, s.tokens) for s in refs] == [
            (r.snapshot_id, r.time, r.items, r.tokens) for r in expected]
    assert some[("p1", "full_history")] == every[("p1", "full_history")]
