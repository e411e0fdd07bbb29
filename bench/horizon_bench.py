"""Long horizons (issue 16): a PersonaMem-v2-shaped preset end to end, its cost and its measured shape.

    python bench/horizon_bench.py --preset pmv2-32k --users 200      # writes bench/results/horizon_pmv2-32k.json
    python bench/horizon_bench.py --preset pmv2-128k --users 20 --check
    python bench/horizon_bench.py --users 2 --history-tokens 3000 --sessions 4   # a smoke run

Runs exactly what `personasim run --preset P` runs (``personasim.api.run``: simulation, question
generation, the embedding reader over the preset's strategies), then measures from the store:

* wall seconds, split into simulation (without its store writes), store writes and evaluation
  (questions, answers and scoring: the run's wall time less the simulation's);
* the DuckDB file's size per user;
* the bytes one user holds in memory at the horizon: user 0's whole schedule is replayed in this
  process (``SessionContext(cfg).user(0)``, ``await user.run(k)`` for every session k), then the
  persona and each memory are sized with a recursive ``sys.getsizeof`` over ``gc.get_referents``
  that skips what the process shares between users (everything reachable from the
  ``SessionContext``, the embedding model and the topic index: catalogs, clients and their caches,
  settings, the topic descriptors' vectors);
* ``analysis.horizon.horizon_shape`` (history length against its target, reveal rate, reply
  variety, filler, updates and forget requests, scenarios, questions);
* the reveal-to-question distances beside PersonaMem-v2's, accuracy by strategy, by question type
  and by distance with bootstrap intervals, and forget compliance of the note-keeping memories.

``--check`` exits 1 if a target of the issue fails (see ``TARGETS``); a target that the run cannot
measure (no forget request in a tiny run, no history target) is reported as n/a and does not fail.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import shutil
import sys
import tempfile
import time
import types
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

#: The issue's targets. Wall time: (preset, users it names, seconds); a smaller run must fit too.
WALL_TARGET = ("pmv2-32k", 200, 1800.0)
MAX_REVEAL_RATE = 0.2
MIN_DISTINCT_REPLIES = 0.95
MAX_REPLY_SHARE = 0.005
MIN_WITHIN_TARGET = 1.0
MIN_FORGET_COMPLIANCE = 0.9
FORGET_STRATEGIES = ("fact_list", "temporal", "agentic")
# the preset's shape (point 4): judged only on a run at the preset's own horizon (its sessions and
# history length, not overridden) of at least SHAPE_MIN_USERS users; scenarios in use need more users
SHAPE_MIN_USERS = 20
SCENARIO_MIN_USERS = 100
MIN_UPDATED_SHARE = 0.5
MIN_FORGOTTEN_SHARE = 0.2
QUESTIONS_PER_USER = (20.0, 30.0)
MIN_CHECKPOINTS = 3
MIN_TYPE_SHARE = 0.1
OTHERS_SHARE = (0.25, 0.45)
MIN_SCENARIOS = 300
TARGETS = {
    "wall_seconds": f"<= {WALL_TARGET[2]:.0f} s for {WALL_TARGET[0]} at up to {WALL_TARGET[1]} users",
    "reveal_rate": f"<= {MAX_REVEAL_RATE}",
    "distinct_replies": f">= {MIN_DISTINCT_REPLIES}",
    "top_reply_share": f"<= {MAX_REPLY_SHARE} (a reply that occurs once passes)",
    "within_history_target": f"{MIN_WITHIN_TARGET:.0%} of users within 10% of dialogue.history_tokens",
    "forget_compliance": f">= {MIN_FORGET_COMPLIANCE} for {', '.join(FORGET_STRATEGIES)} (mean over sessions)",
    "updated_share_min": f">= {MIN_UPDATED_SHARE} of each user's revealed own preferences updated (preset scale)",
    "forgotten_share_min": f">= {MIN_FORGOTTEN_SHARE} of each user's revealed own preferences asked to be "
                           "forgotten (preset scale)",
    "questions_per_user": f"{QUESTIONS_PER_USER[0]:.0f} to {QUESTIONS_PER_USER[1]:.0f} (about 25; preset scale)",
    "checkpoints_per_user_min": f">= {MIN_CHECKPOINTS} (preset scale)",
    "updated_question_share": f">= {MIN_TYPE_SHARE} of the questions (preset scale)",
    "forget_question_share": f">= {MIN_TYPE_SHARE} of the questions (preset scale)",
    "others_reveal_share": f"{OTHERS_SHARE[0]} to {OTHERS_SHARE[1]} of reveals (about a third; preset scale)",
    "scenarios": f">= {MIN_SCENARIOS} in use (preset scale, {SCENARIO_MIN_USERS}+ users)",
}

# objects whose referents are code and modules, not a user's data: never walked into
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
           types.CodeType, types.FrameType, weakref.ref)


# -- memory per user ---------------------------------------------------------------------------------

def _walk(roots: Iterable[object], skip: set[int]) -> dict[int, object]:
    """Every object reachable from ``roots`` through ``gc.get_referents``, by id, except ``skip``
    and what is only reachable through them; code, types and modules are not entered."""
    seen: dict[int, object] = {}
    stack = [r for r in roots if id(r) not in skip]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or id(obj) in skip or isinstance(obj, _OPAQUE):
            continue
        seen[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return seen


def deep_size(roots: Iterable[object], shared: set[int]) -> int:
    """Bytes of everything reachable from ``roots`` that is not in ``shared`` (``sys.getsizeof``,
    each object once: what these roots hold that the process would free without them)."""
    return sum(sys.getsizeof(obj) for obj in _walk(roots, shared).values())


def held_per_user(config: Any) -> dict[str, Any]:
    """User 0's whole schedule in this process, then what it holds at the horizon (see the docstring)."""
    from personasim.agents.embedding import default_embedder
    from personasim.agents.memory import topics
    from personasim.sim.session import SessionContext

    started = time.perf_counter()
    ctx = SessionContext(config)
    user = ctx.user(0)

    async def schedule() -> None:
        for k in range(len(user.times)):
            await user.run(k)

    asyncio.run(schedule())
    gc.collect()
    shared = set(_walk([ctx, default_embedder(), topics._indexes], set()))
    shared.discard(id(user))  # a user is never shared; the context does not point at one, but be sure
    memories = dict(user.memories)
    return {
        "method": "recursive sys.getsizeof over gc.get_referents, without what the SessionContext, the "
                  "embedder and the topic index reach (shared by every user of a process)",
        "user_index": 0,
        "sessions": len(user.times),
        "history_tokens": user.history_tokens,
        "persona_bytes": deep_size([user.persona], shared),
        "memory_bytes": {name: deep_size([m], shared) for name, m in sorted(memories.items())},
        "persona_and_memories_bytes": deep_size([user.persona, *memories.values()], shared),
        "user_bytes": deep_size([user], shared),
        "seconds": round(time.perf_counter() - started, 2),
    }


# -- figures from the store ----------------------------------------------------------------------------

def _records(frame: Any) -> list[dict[str, Any]]:
    """A DataFrame as JSON-ready rows: categoricals as text, NaN as null, numpy scalars as Python."""
    out = []
    for row in frame.to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if hasattr(value, "item"):
                value = value.item()
            if isinstance(value, float) and math.isnan(value):
                value = None
            elif not isinstance(value, (int, float, str, bool, type(None))):
                value = str(value)
            clean[str(key)] = value
        out.append(clean)
    return out


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def store_figures(db: Path, run_id: str, strategies: list[str], n_boot: int) -> dict[str, Any]:
    """Everything measured from the finished store (read-only)."""
    from personasim.analysis.distance import (
        PERSONAMEM_V2_DISTANCES,
        accuracy_by_distance,
        distance_distribution,
        distance_vs_personamem_v2,
    )
    from personasim.analysis.fidelity import fidelity_summary
    from personasim.analysis.horizon import horizon_shape
    from personasim.analysis.metrics import summary_tables
    from personasim.sim.store import open_store

    with open_store(db) as store:
        con = store.con
        shape = horizon_shape(con, run_id)
        distribution = distance_distribution(con, run_id)
        tables = summary_tables(con, run_id, n_boot=n_boot)
        by_distance = accuracy_by_distance(con, run_id, n_boot=n_boot)
        noted = [s for s in FORGET_STRATEGIES if s in strategies]
        forget: dict[str, Any] = {}
        if noted:
            fidelity = fidelity_summary(con, run_id, noted)
            for strategy, rows in fidelity.groupby("strategy", sort=True):
                rows = rows.sort_values("session_index")
                values = rows["forget_compliance"]
                forget[str(strategy)] = {
                    "mean": _nan_to_none(values.mean()),  # NaN-skipping: sessions with a request to forget
                    "final": _nan_to_none(values.iloc[-1]),
                    "by_session": [_nan_to_none(v) for v in values],
                }
    return {
        "horizon": shape.model_dump(mode="json"),
        "distance": {
            "distribution": _records(distribution),
            "vs_personamem_v2": _records(distance_vs_personamem_v2(distribution)),
            "personamem_v2": PERSONAMEM_V2_DISTANCES,
        },
        "accuracy": {
            "by_strategy": _records(tables["by_strategy"]),
            "by_type": _records(tables["by_type"]),
            "by_distance": _records(by_distance),
        },
        "forget_compliance": forget,
    }


# -- the targets -------------------------------------------------------------------------------

def _check(name: str, value: float | None, target: str, passed: bool | None) -> dict[str, Any]:
    return {"name": name, "value": value, "target": target, "passed": passed}


def checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue against the result: passed True/False, or None when not measurable."""
    shape = result["horizon"]
    preset, users, limit = WALL_TARGET
    wall = result["wall"]["run_seconds"]
    applies = result["preset"] == preset and result["users"] <= users
    out = [_check("wall_seconds", wall, TARGETS["wall_seconds"], wall <= limit if applies else None)]
    rate = shape["reveals"]["reveal_rate"]
    out.append(_check("reveal_rate", rate, TARGETS["reveal_rate"], None if rate is None else rate <= MAX_REVEAL_RATE))
    replies = shape["replies"]
    distinct = replies["distinct_share"]
    out.append(_check("distinct_replies", distinct, TARGETS["distinct_replies"],
                      None if distinct is None else distinct >= MIN_DISTINCT_REPLIES))
    top = replies["top_reply_share"]
    out.append(_check("top_reply_share", top, TARGETS["top_reply_share"],
                      None if top is None else replies["top_reply_count"] <= 1 or top <= MAX_REPLY_SHARE))
    within = shape["history"]["within_target_share"]
    out.append(_check("within_history_target", within, TARGETS["within_history_target"],
                      None if within is None else within >= MIN_WITHIN_TARGET))
    for strategy in FORGET_STRATEGIES:
        if strategy in result["strategies"]:
            value = result["forget_compliance"].get(strategy, {}).get("mean")
            out.append(_check(f"forget_compliance[{strategy}]", value, TARGETS["forget_compliance"],
                              None if value is None else value >= MIN_FORGET_COMPLIANCE))
    return out + _shape_checks(result)


def _shape_checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Point 4's shape: per-user update and forget shares, questions, others' reveals, scenarios.

    A run that overrides the preset's horizon, or is too small for per-user figures to mean much,
    gets n/a: a 4-session test run cannot update half of what it reveals."""
    shape = result["horizon"]
    at_scale = result.get("preset_scale", False) and result["users"] >= SHAPE_MIN_USERS
    updates, questions = shape.get("updates", {}), shape.get("questions", {})

    def judged(name: str, value: float | None, ok: bool, enough: bool = True) -> dict[str, Any]:
        return _check(name, value, TARGETS[name], ok if at_scale and enough and value is not None else None)

    updated, forgotten = updates.get("updated_share_min"), updates.get("forgotten_share_min")
    per_user, points = questions.get("per_user_mean"), questions.get("checkpoints_per_user_min")
    types = questions.get("type_shares", {})
    others, scenarios = shape["reveals"].get("others_share"), shape.get("scenarios")
    low, high = QUESTIONS_PER_USER
    return [
        judged("updated_share_min", updated, updated is not None and updated >= MIN_UPDATED_SHARE),
        judged("forgotten_share_min", forgotten, forgotten is not None and forgotten >= MIN_FORGOTTEN_SHARE),
        judged("questions_per_user", per_user, per_user is not None and low <= per_user <= high),
        judged("checkpoints_per_user_min", points, points is not None and points >= MIN_CHECKPOINTS),
        judged("updated_question_share", types.get("updated_preference", 0.0),
               types.get("updated_preference", 0.0) >= MIN_TYPE_SHARE),
        judged("forget_question_share", types.get("forget_compliance", 0.0),
               types.get("forget_compliance", 0.0) >= MIN_TYPE_SHARE),
        judged("others_reveal_share", others, others is not None and OTHERS_SHARE[0] <= others <= OTHERS_SHARE[1]),
        judged("scenarios", scenarios, scenarios is not None and scenarios >= MIN_SCENARIOS,
               enough=result["users"] >= SCENARIO_MIN_USERS),
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def print_table(result: dict[str, Any]) -> None:
    """A short summary for the terminal; the JSON holds everything."""
    shape, wall = result["horizon"], result["wall"]
    history = shape["history"]
    print(f"\n{result['preset']}: {result['users']} users x {result['sessions_per_user']} sessions, "
          f"strategies {', '.join(result['strategies'])}")
    print(f"wall {wall['run_seconds']:.1f} s = simulation {wall['simulation_seconds']:.1f} + store "
          f"{wall['store_seconds']:.1f} + evaluation {wall['evaluation_seconds']:.1f}; "
          f"store {result['store']['db_bytes_per_user']:,.0f} B/user; persona + memories held at the horizon "
          f"{result['memory_per_user']['persona_and_memories_bytes']:,} B/user")
    print(f"history tokens min/median/max {history['min']:,}/{history['median']:,.0f}/{history['max']:,} "
          f"(target {_fmt(history['target'])}, within 10%: {_fmt(history['within_target_share'])}); "
          f"filler {_fmt(shape['filler_token_share'])}; scenarios {shape['scenarios']}")
    print(f"{'strategy':<14} {'accuracy':>9} {'95% CI':>15} {'answers':>8} {'tokens':>8} {'forget':>7}")
    for row in result["accuracy"]["by_strategy"]:
        forget = result["forget_compliance"].get(row["strategy"], {}).get("mean")
        ci = f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        print(f"{row['strategy']:<14} {row['accuracy']:>9.3f} {ci:>15} {row['answers']:>8} "
              f"{row['mean_context_tokens']:>8.0f} {_fmt(forget):>7}")
    print(f"{'check':<28} {'value':>10}  result  target")
    for c in result["checks"]:
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[c["passed"]]
        print(f"{c['name']:<28} {_fmt(c['value']):>10}  {verdict:<6}  {c['target']}")


# -- main ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Run the bench; returns the exit status (1 only with ``--check`` and a failed target)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="pmv2-32k")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=None, help="override the preset's sessions per user")
    parser.add_argument("--history-tokens", type=int, default=None, help="override dialogue.history_tokens")
    parser.add_argument("--memory", default=None, help="override the preset's strategies (comma list)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of each interval")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/horizon_<preset>.json")
    parser.add_argument("--db", type=Path, default=None, help="the run's store (a new file); default: a temp dir")
    parser.add_argument("--keep-db", action="store_true", help="keep the store (and its LLM cache) afterwards")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target of the issue fails")
    args = parser.parse_args(argv)

    from personasim.api import run
    from personasim.config import build_config

    config = build_config(preset=args.preset, users=args.users, sessions=args.sessions, seed=args.seed,
                          history_tokens=args.history_tokens, memory=args.memory)
    out = args.out or RESULTS / f"horizon_{args.preset}.json"
    folder = None
    if args.db is None:
        folder = Path(tempfile.mkdtemp(prefix="horizon_"))
        db = folder / f"horizon_{args.preset}.duckdb"
    else:
        db = args.db
        if db.exists():
            parser.error(f"--db {db} exists; the bench writes a new store (remove it or choose another path)")
    started = time.perf_counter()
    try:
        summary = run(config, db, show_progress=sys.stderr.isatty())
        db_bytes = db.stat().st_size
        cache = Path(str(db) + ".llmcache.sqlite")
        cache_bytes = cache.stat().st_size if cache.exists() else None
        analysed = time.perf_counter()
        figures = store_figures(db, summary.run_id, list(config.memory.strategies), args.n_boot)
        analysis_seconds = time.perf_counter() - analysed
        held = held_per_user(config)
    finally:
        if not args.keep_db:
            for path in (db, Path(str(db) + ".wal"), Path(str(db) + ".llmcache.sqlite")):  # remove_store + cache
                path.unlink(missing_ok=True)
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "preset": args.preset, "users": args.users, "sessions_per_user": config.schedule.sessions,
        "history_tokens_target": config.dialogue.history_tokens, "filler": config.dialogue.filler,
        "preset_scale": args.sessions is None and args.history_tokens is None,
        "seed": args.seed, "strategies": list(config.memory.strategies), "run_id": summary.run_id,
        "db": str(db) if args.keep_db else None,
        "sessions": summary.sessions, "turns": summary.turns, "questions": summary.questions,
        "actors": summary.actors, "failed_sessions": summary.failed_sessions,
        "wall": {
            "run_seconds": summary.wall_seconds,
            "simulation_seconds": round(summary.simulation_seconds - summary.store_seconds, 2),
            "store_seconds": summary.store_seconds,
            "evaluation_seconds": round(summary.wall_seconds - summary.simulation_seconds, 2),
            "analysis_seconds": round(analysis_seconds, 2),
            "bench_seconds": round(time.perf_counter() - started, 2),
        },
        "store": {
            "db_bytes": db_bytes, "db_bytes_per_user": db_bytes / args.users,
            "llm_cache_bytes": cache_bytes,
        },
        "memory_per_user": held,
        **figures,
        "targets": TARGETS,
    }
    result["checks"] = checks(result)
    result["passed"] = all(c["passed"] is not False for c in result["checks"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"\nwrote {out}" + (f"; store kept at {db}" if args.keep_db else ""))
    return 1 if args.check and not result["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
