"""The refactoring guard: three stores, every table dumped sorted, hashed per table.

A refactor changes no output. These digests were recorded on main before the store layer and the
session runner were introduced (issue 15); they must stay identical. An *intended* change of
output updates the digest in the same commit, and the commit says why.

The stores: a simulated run (what ``personasim run --users 12 --sessions 6 --seed 0`` writes,
built with one Ray actor though recorded with two, so sharding is checked too; it is the session's
``small_run``, tests/conftest.py, which many other tests read),
a short online-environment episode set driven by a deterministic policy, and a PersonaMem-v2 load
of the test fixture. Columns that describe the machine rather than the run
(``runs.package_versions_json``) are left out, and floats are compared by their sum per table,
within a tolerance, so that a CPU's BLAS kernels (their last bits differ between AVX-512 and AVX2)
do not count as a change. Stores are built as the digests were recorded: in
a process whose embedder has embedded nothing yet, with torch at 2 threads. Since MiniLM stopped
padding its batches (agents/minilm.py) a text's vector no longer depends on either; the conditions
are kept so that a change elsewhere that reintroduces such a dependence shows here, not as noise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest

MINI = Path(__file__).resolve().parent / "fixtures" / "personamem_v2" / "mini"

MACHINE_COLUMNS = {"runs": {"package_versions_json"}}

# Recorded on main 4cd6fcd before issue 15's refactor (which kept them); re-recorded for issue 16, an
# intended change of output: the scripted chatbot composes task replies (agents/replies.py), user turns
# carry task talk and reactions, new config fields change every run id, forgetting works by topic, and
# `turns` gains the `filler` column (the only change in the loaded store). `runs` changed since by the
# stored config gaining planned updates and forgets (drift.revealed_update_share, dialogue.forget_share)
# and the embedder choice (embedder), all at their old behaviour by default; run ids are unchanged
# (sim/config.py LATER_FIELDS). `answers` changed in the 6th
# decimal of some scores when the embedding reader began to answer a user's questions in one batch (issue
# 17): a text's MiniLM vector moves by ~1e-6 with its batch. Every chosen option is the same (the default
# run's 2,073 answers: 2,073 identical choices, all scores within 2e-6; tests/test_answer_pool.py). It
# changed again in the 6th decimal when MiniLM began to run in plain torch (agents/minilm.py) instead of
# through sentence-transformers, with no padding (a batch's texts laid end to end, attention per text, so
# a text's vector no longer depends on its batch or the thread count): vectors within 2e-7 of theirs, and
# `personasim run --users 12 --sessions 6` gives the same 1,056 choices with every score within 1e-6 (one
# rounding step) and identical turns, snapshots and questions. In the online store two of 96 rewards moved
# by that one rounding step (0.138586 -> 0.138585, 0.21755 -> 0.217549), and `env_steps` with them.
# The loaded store gained one `preferences` row (issue 18): a preference stated only in a benchmark CSV
# row (no raw persona file gives it) is stored, so every question's preference_id resolves. Its
# full_history snapshots became the raw history (issue 18: the forget request and what it is about are
# kept, as in the seed's long-context baseline). Then `full_history` became the raw history in our runs
# too and the deleting one `full_history_forgetting` (issue 18, store schema 10): the simulated run lists
# full_history, so its run id changed (sim/config.py RUN_ID_SPELLING) and with it every table's run_id
# column; besides run ids, only full_history's snapshots and answers differ (3 of 72 snapshots and 27 of
# 456 answers on 6 users x 4 sessions). The online store's `runs` changed by the stored config losing the
# short-lived memory.settings.full_history_deletes_on_request.
EXPECTED: dict[str, dict[str, str]] = {
    "simulated": {
        "answers": "1056:1985c1f089dbc29a:1675.0562",
        "consistency_probes": "0:cccd8ea1107ad6ef:0.0000",
        "drift_events": "25:e7c1facdfdaf16c0:0.0000",
        "env_steps": "0:76dda627c00a87de:0.0000",
        "forget_requests": "6:ab8d2108a727f87a:0.0000",
        "memory_snapshots": "216:5041a564482ac1e1:0.0000",
        "personas": "12:e8987d3bb93a9c63:0.0000",
        "preferences": "461:09f4792fb3ca7417:326.9540",
        "questions": "352:2cf1d845061f5b28:0.0000",
        "rewards": "0:149be79a664d43a2:0.0000",
        "runs": "1:6b27c5733d09e02a:0.0000",
        "sensitive_facts": "104:0da0e2238a508e4c:0.0000",
        "sessions": "72:5e9a9a3f075180ce:0.0000",
        "source_files": "0:c9f1e6776cbc732c:0.0000",
        "training_metrics": "0:bb708472f1b51926:0.0000",
        "training_runs": "0:9c1921f9b14cf70b:0.0000",
        "turns": "432:ff8af133237d45f2:0.0000",
    },
    "online": {
        "answers": "0:c305445a7bf9eb1b:0.0000",
        "consistency_probes": "0:cccd8ea1107ad6ef:0.0000",
        "drift_events": "3:98661a9dd9b7939f:0.0000",
        "env_steps": "24:3a498bee5904b58e:5.4803",
        "forget_requests": "0:8b5f444ce912a06f:0.0000",
        "memory_snapshots": "30:bc5d207b03bb9993:0.0000",
        "personas": "4:acb1d9922b54c5bd:0.0000",
        "preferences": "153:d367cc731f8133d3:107.3880",
        "questions": "0:bbd75df83a75adfe:0.0000",
        "rewards": "96:9e1d39b3e13c2448:83.4803",
        "runs": "1:04d2803835d16d8d:0.0000",
        "sensitive_facts": "37:906c8febe56f8a51:0.0000",
        "sessions": "10:72e8c044876e4733:0.0000",
        "source_files": "0:c9f1e6776cbc732c:0.0000",
        "training_metrics": "0:bb708472f1b51926:0.0000",
        "training_runs": "0:9c1921f9b14cf70b:0.0000",
        "turns": "50:03d65d856a874b8c:0.0000",
    },
    "loaded": {
        "answers": "0:c305445a7bf9eb1b:0.0000",
        "consistency_probes": "0:cccd8ea1107ad6ef:0.0000",
        "drift_events": "1:82d2a04452ec10a6:0.0000",
        "env_steps": "0:76dda627c00a87de:0.0000",
        "forget_requests": "0:8b5f444ce912a06f:0.0000",
        "memory_snapshots": "15:597126ffe0cc89bf:0.0000",
        "personas": "1:59c49f4c075cc39e:0.0000",
        "preferences": "8:72edabb8d23aaf68:8.0000",
        "questions": "3:f5f05229f953adff:0.0000",
        "rewards": "0:149be79a664d43a2:0.0000",
        "runs": "1:00f2700c259ec95a:0.0000",
        "sensitive_facts": "12:6047f46248aa3771:0.0000",
        "sessions": "5:89b20ee1d8e90e05:0.0000",
        "source_files": "3:66cee70a3ade14c6:0.0000",
        "training_metrics": "0:bb708472f1b51926:0.0000",
        "training_runs": "0:9c1921f9b14cf70b:0.0000",
        "turns": "20:df5089eb7157389f:0.0000",
    },
}


def _canonical(value: object, floats: list[float]) -> object:
    """The value with every float taken out into ``floats`` (they are compared apart, with a
    tolerance: see ``store_digest``)."""
    if isinstance(value, float):
        floats.append(value)
        return "<float>"
    if isinstance(value, list | tuple):
        return [_canonical(v, floats) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


#: How far a table's float sum may move between machines. MiniLM's vectors differ in their last
#: bits between CPUs (AVX-512 against AVX2 kernels: measured 2026-12-03, a new machine's vectors
#: and so its answers' scores and the online rewards rounded differently at the 6th place, every
#: other value the same), which is noise far below this; a real change of a score moves it more.
FLOAT_SUM_TOLERANCE = 1e-3


def store_digest(path: Path) -> dict[str, str]:
    """Per table: the row count, a sha256 (first 16 hex digits) of its rows with every float left
    out (every column but the machine's, sorted), and the sum of those floats to 4 places.

    Floats are not hashed: a hash of rounded floats changes when a CPU's kernels move one of
    thousands of values across a rounding boundary. Everything discrete (ids, texts, chosen
    options, token counts) is hashed exactly; the floats are compared by their sum, within
    ``FLOAT_SUM_TOLERANCE``."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        # what readers see: snapshots whole through their view, not the chains that store them
        # (schema 11, sim/snapshots.py: a change of layout, not of content, so the digests stay)
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE (table_type = 'BASE TABLE' "
            "AND table_name NOT IN ('schema_info', 'memory_snapshot_items')) OR table_name = 'memory_snapshots' "
            "ORDER BY table_name").fetchall()]
        out = {}
        for table in tables:
            columns = [r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY column_name",
                [table]).fetchall()]
            columns = [c for c in columns if c not in MACHINE_COLUMNS.get(table, set())]
            rows = con.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            floats: list[float] = []
            lines = sorted(json.dumps(_canonical(list(r), floats), ensure_ascii=False, default=str) for r in rows)
            digest = hashlib.sha256(("\n".join([",".join(columns), *lines])).encode()).hexdigest()[:16]
            out[table] = f"{len(rows)}:{digest}:{math.fsum(floats):.4f}"
        return out
    finally:
        con.close()


def same_digest(found: dict[str, str], expected: dict[str, str]) -> bool:
    """Equal counts and hashes, and float sums within ``FLOAT_SUM_TOLERANCE``."""
    if found.keys() != expected.keys():
        return False
    for table, value in found.items():
        count, digest, total = value.split(":")
        want_count, want_digest, want_total = expected[table].split(":")
        if (count, digest) != (want_count, want_digest) or abs(float(total) - float(want_total)) > FLOAT_SUM_TOLERANCE:
            return False
    return True


def _policy(observation: list[dict[str, str]]) -> str:
    last = observation[-1]["content"]
    return f"Happy to help with that. You said: {last[:60]}"


def online_store(folder: Path) -> Path:
    from personasim.rl.env import EnvConfig, PersonaVectorEnv

    db = folder / "online.duckdb"
    config = EnvConfig(run={"population": {"users": 4}, "schedule": {"sessions": 3}, "seed": 0})
    with PersonaVectorEnv(config, db=db, num_envs=2, num_actors=0) as env:
        observations, _ = env.reset()
        for _ in range(12):
            observations, *_ = env.step([_policy(o) for o in observations])
    return db


def loaded_store(folder: Path) -> Path:
    from personasim.interop.personamem_v2.load import load_personamem_v2
    from personasim.sim.store import TrajectoryStore

    db = folder / "loaded.duckdb"
    with TrajectoryStore(db) as store:
        load_personamem_v2(MINI, store)
    return db


#: The simulated store is the session's small_run (tests/conftest.py: ``build_config(users=12, sessions=6,
#: seed=0, actors=1)`` with ``engine.wave_users=5``, one Ray actor running each round in three waves where the
#: digest was recorded with two actors and whole rounds, so this is also the check that how users are sharded
#: and waved changes no row), hashed from the copy taken as soon as it finished; the others are built here.
BUILDERS = {"online": online_store, "loaded": loaded_store}

RECORDED_TORCH_THREADS = 2


@contextlib.contextmanager
def recorded_conditions() -> Iterator[None]:
    """As the digests were recorded: an embedder that has embedded nothing yet, torch at 2 threads."""
    import torch

    from personasim.agents.embedding import default_embedder

    default_embedder().clear_cache()
    before = torch.get_num_threads()
    torch.set_num_threads(RECORDED_TORCH_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["simulated", *BUILDERS])
def test_store_digest_is_unchanged(name, request, tmp_path, ray_session):
    if name == "simulated":
        store = request.getfixturevalue("small_run_store")[2]  # built under recorded_conditions()
    else:
        with recorded_conditions():
            store = BUILDERS[name](tmp_path)
    digest = store_digest(store)
    assert same_digest(digest, EXPECTED[name]), (
        f"the {name} store changed: {json.dumps(digest, indent=1)}. A refactor changes no output; an intended "
        "change updates EXPECTED in the same commit and says why"
    )
