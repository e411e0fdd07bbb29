"""Compare memory strategies on identical simulated histories, then slice the results with SQL.

    python examples/compare_memories.py --users 40 --sessions 8 --db compare.duckdb
"""

from __future__ import annotations

import argparse

import duckdb

from personasim import build_config, run


def main(argv: list[str] | None = None) -> list[tuple]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", default="compare.duckdb")
    args = parser.parse_args(argv)

    summary = run(build_config(users=args.users, sessions=args.sessions, seed=args.seed), args.db, overwrite=True)
    con = duckdb.connect(args.db, read_only=True)
    rows = con.execute(
        """
        SELECT q.question_type, q.reveal_mode, a.strategy,
               count(*) AS n, round(avg(a.correct::INT), 3) AS accuracy, round(avg(a.context_tokens)) AS tokens
        FROM answers a JOIN questions q USING (run_id, question_id)
        WHERE a.run_id = ?
        GROUP BY ALL ORDER BY ALL
        """,
        [summary.run_id],
    ).fetchall()
    con.close()
    print(f"run {summary.run_id}: {summary.questions} questions, chance {summary.chance:.0%}")
    print(f"{'type':<20} {'revealed':<9} {'strategy':<13} {'n':>4} {'acc':>6} {'tokens':>7}")
    for qtype, mode, strategy, n, acc, tokens in rows:
        print(f"{qtype:<20} {mode:<9} {strategy:<13} {n:>4} {acc:>6.1%} {tokens:>7.0f}")
    return rows


if __name__ == "__main__":
    main()
