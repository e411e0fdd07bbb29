"""Accuracy and context tokens per memory strategy, on a fixed seed, scripted backend.

    python bench/memory_bench.py [--users 1000] [--sessions 6] [--seed 0]

Runs the full pipeline (Ray actors, AutoGen agents, DuckDB store, questions, embedding reader)
with all seven shipped strategies on identical conversations, and writes
bench/results/memory.json: accuracy and context tokens per strategy, and accuracy by question type
x strategy with 95% bootstrap intervals (also printed as a Markdown table for bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"
STRATEGIES = ["none", "full_history", "full_history_forgetting", "sliding_window", "rag", "fact_list", "agentic",
              "temporal"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import duckdb

    from personasim import build_config, run
    from personasim.analysis.metrics import accuracy_table

    config = build_config(users=args.users, sessions=args.sessions, seed=args.seed, memory=",".join(STRATEGIES))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        started = time.perf_counter()
        summary = run(config, db, show_progress=True)
        elapsed = time.perf_counter() - started
        con = duckdb.connect(str(db), read_only=True)
        by_type = accuracy_table(con, summary.run_id, by=("question_type", "strategy"))
        con.close()
    result = {
        "users": args.users, "sessions": args.sessions, "seed": args.seed, "questions": summary.questions,
        "chance": round(summary.chance, 4), "wall_seconds": round(elapsed, 1),
        "strategies": {
            s.strategy: {"accuracy": round(s.accuracy, 4), "mean_context_tokens": round(s.mean_context_tokens, 1)}
            for s in summary.scores
        },
        "by_question_type": [
            {"type": r.question_type, "strategy": r.strategy, "questions": int(r.answers),
             "accuracy": round(r.accuracy, 4), "ci_low": round(r.ci_low, 4), "ci_high": round(r.ci_high, 4)}
            for r in by_type.itertuples()
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "by_question_type"}, indent=2))
    print(markdown_by_type(result))
    return result


def markdown_by_type(result: dict) -> str:
    """Question types as rows, strategies as columns: accuracy [95% CI] and the question count."""
    strategies = sorted(result["strategies"], key=lambda s: result["strategies"][s]["accuracy"])
    cells: dict[str, dict[str, str]] = {}
    counts: dict[str, int] = {}
    for row in result["by_question_type"]:
        ci = f"{row['accuracy']:.1%} [{row['ci_low'] * 100:.0f}-{row['ci_high'] * 100:.0f}]"
        cells.setdefault(row["type"], {})[row["strategy"]] = ci
        counts[row["type"]] = row["questions"]
    lines = ["| question type | questions | " + " | ".join(strategies) + " |",
             "|---|---|" + "---|" * len(strategies)]
    for qtype in sorted(cells):
        row = " | ".join(cells[qtype].get(s, "") for s in strategies)
        lines.append(f"| {qtype} | {counts[qtype]:,} | {row} |")
    overall = " | ".join(f"{result['strategies'][s]['accuracy']:.1%}" for s in strategies)
    lines.append(f"| **all** | {result['questions']:,} | {overall} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
