"""The driver's store writes as a store grows: what a large run's writer does, without the run.

    python bench/store_bench.py [--users 300 --sessions 10 --copies 12 --checkpoints 16,1024]
                                                            # writes results/store_growth.json

One in-process shard simulates ``--users`` x ``--sessions`` (``minilm-static``, so that this
part is quick); its batches are then written ``--copies`` times under new run ids into a fresh
DuckDB file for each checkpoint threshold, as the driver writes a run's waves: one transaction
per batch, under the run's memory bound. 12 copies of 300 users are a 3,600-user run's rows.
The figures are the write time per copy (it grows with the store), the total with the final
checkpoint at close, and the file's size. Thresholds are compared in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "store_growth.json"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def simulated_batches(users: int, sessions: int) -> list:
    import torch
    from engine_bench import _config

    from personasim.agents.embedding import use_embedder
    from personasim.sim.shard import UserShard

    torch.set_num_threads(1)
    config = _config(users, sessions, embedder="minilm-static")
    use_embedder("minilm-static")
    shard = UserShard(config, list(range(users)))

    async def rounds() -> list:
        return [await shard.run_round(k) for k in range(sessions)]

    return asyncio.run(rounds())


def write_copies(batches: list, copies: int, checkpoint_mb: int, memory_mb: int) -> dict:
    from personasim.sim.store import TrajectoryStore

    per_copy: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "growth.duckdb"
        store = TrajectoryStore(path)
        store.limit_memory(memory_mb)
        store.checkpoint_every(checkpoint_mb)
        for c in range(copies):
            renamed = [[(name, [r.model_copy(update={"run_id": f"r{c}"}) for r in rows]) for name, rows in b.tables()]
                       for b in batches]  # renamed before the clock starts: the driver gets rows ready-made
            started = time.perf_counter()
            for tables in renamed:
                store.write_many(tables)
            per_copy.append(time.perf_counter() - started)
            print(f"  checkpoint {checkpoint_mb} MB, copy {c}: {per_copy[-1]:.2f} s", flush=True)
        closing = time.perf_counter()
        store.close()
        close_s = time.perf_counter() - closing
        size_mb = path.stat().st_size / 2**20
    return {"checkpoint_mb": checkpoint_mb, "seconds_per_copy": [round(s, 2) for s in per_copy],
            "close_seconds": round(close_s, 2), "total_seconds": round(sum(per_copy) + close_s, 1),
            "last_quarter_seconds_per_copy": round(sum(per_copy[-max(1, copies // 4):]) / max(1, copies // 4), 2),
            "file_mb": round(size_mb, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--copies", type=int, default=12)
    parser.add_argument("--checkpoints", default="16,1024", help="checkpoint thresholds in MB (16: DuckDB's default)")
    parser.add_argument("--memory-mb", type=int, default=2048, help="the store's memory bound (engine.store_memory_mb)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    batches = simulated_batches(args.users, args.sessions)
    simulated = time.perf_counter() - started
    rows = {name: sum(len(rows) for b in batches for n, rows in b.tables() if n == name)
            for name, _ in batches[0].tables()}
    runs = [write_copies(batches, args.copies, int(mb), args.memory_mb) for mb in args.checkpoints.split(",")]
    result = {"users": args.users, "sessions": args.sessions, "copies": args.copies,
              "users_written": args.users * args.copies, "rows_per_copy": rows,
              "simulation_seconds": round(simulated, 1), "runs": runs,
              "speedup_vs_first": {str(r["checkpoint_mb"]): round(runs[0]["total_seconds"] / r["total_seconds"], 2)
                                   for r in runs}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    for r in runs:
        print(f"checkpoint {r['checkpoint_mb']} MB: {r['total_seconds']} s (close {r['close_seconds']} s), "
              f"{r['file_mb']} MB file")
    return result


if __name__ == "__main__":
    main()
