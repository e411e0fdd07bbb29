"""Accuracy and context tokens per memory strategy, on a fixed seed, scripted backend.

    python bench/memory_bench.py [--users 1000] [--sessions 6] [--seed 0]

Runs the full pipeline (Ray actors, AutoGen agents, DuckDB store, questions, embedding reader)
with all seven shipped strategies on identical conversations, and writes
bench/results/memory.json plus the per-question-type breakdown.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"
STRATEGIES = ["none", "full_history", "sliding_window", "rag", "fact_list", "agentic", "temporal"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import duckdb

    from personasim import build_config, run

    config = build_config(users=args.users, sessions=args.sessions, seed=args.seed, memory=",".join(STRATEGIES))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        started = time.perf_counter()
        summary = run(config, db, show_progress=True)
        elapsed = time.perf_counter() - started
        con = duckdb.connect(str(db), read_only=True)
        by_type = con.execute(
            "SELECT q.question_type, a.strategy, count(*), avg(a.correct::INT) FROM answers a "
            "JOIN questions q USING (run_id, question_id) GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        con.close()
    result = {
        "users": args.users, "sessions": args.sessions, "seed": args.seed, "questions": summary.questions,
        "chance": round(summary.chance, 4), "wall_seconds": round(elapsed, 1),
        "strategies": {
            s.strategy: {"accuracy": round(s.accuracy, 4), "mean_context_tokens": round(s.mean_context_tokens, 1)}
            for s in summary.scores
        },
        "by_question_type": [
            {"type": t, "strategy": s, "questions": n, "accuracy": round(a, 4)} for t, s, n, a in by_type
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "by_question_type"}, indent=2))
    return result


if __name__ == "__main__":
    main()
