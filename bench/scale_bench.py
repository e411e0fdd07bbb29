"""End to end at scale: N users x S sessions on the scripted backend, and the store's share of time.

    python bench/scale_bench.py --users 10000 --sessions 10     # writes bench/results/scale.json

Runs exactly what `personasim run` runs (embedded Ray, actors sized to the CPUs, the DuckDB
store, questions and the embedding reader) with the default config otherwise. Target (issue 6):
10,000 users x 10 sessions in under 10 minutes on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory", default=None, help="strategies (default: the run default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from personasim import build_config, run

    config = build_config(users=args.users, sessions=args.sessions, seed=args.seed, memory=args.memory)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "scale.duckdb"
        started = time.perf_counter()
        summary = run(config, db, show_progress=True)
        wall = time.perf_counter() - started
        store_mb = db.stat().st_size / 2**20
    result = {
        "users": args.users, "sessions_per_user": args.sessions, "seed": args.seed,
        "strategies": config.memory.strategies, "sessions": summary.sessions, "turns": summary.turns,
        "questions": summary.questions, "actors": summary.actors,
        "wall_seconds": round(wall, 1), "simulation_seconds": summary.simulation_seconds,
        "store_seconds": summary.store_seconds,
        "store_share_of_simulation": round(summary.store_seconds / max(summary.simulation_seconds, 1e-9), 4),
        "evaluation_seconds": round(wall - summary.simulation_seconds, 1),
        "sessions_per_second": round(summary.sessions / max(summary.simulation_seconds, 1e-9), 1),
        "turns_per_second": round(summary.turns / max(summary.simulation_seconds, 1e-9), 1),
        "store_mb": round(store_mb, 1),
        "driver_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "target_seconds": 600, "accuracy": {s.strategy: round(s.accuracy, 4) for s in summary.scores},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
