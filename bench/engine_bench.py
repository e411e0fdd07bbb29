"""Engine benchmarks (issue 6): throughput against a bare loop, LLM-bound efficiency, memory per user.

    python bench/engine_bench.py throughput [--users 200 --sessions 4]   # results/engine_throughput.json
    python bench/engine_bench.py llm [--latency 1.0 --concurrency 64]    # results/engine_llm.json
    python bench/engine_bench.py memory [--users 250 --sessions 6]       # results/engine_memory.json

Each is measured against a baseline in the same process and run: this machine is shared and
noisy, so ratios mean more than absolute rates.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.openai_server, for the LLM bench


def _config(users: int, sessions: int, seed: int = 0, **extra: object):  # type: ignore[no-untyped-def]
    from personasim.sim.config import RunConfig

    return RunConfig.model_validate({"seed": seed, "population": {"users": users}, "schedule": {"sessions": sessions},
                                     **extra})


def bare_loop(users: int, sessions: int) -> dict:
    """The same sessions in one process: no Ray, no store, no row transfer. The reference."""
    import torch

    from personasim.sim.shard import UserShard

    torch.set_num_threads(1)  # one core, as an actor gets
    config = _config(users, sessions)
    started = time.perf_counter()
    shard = UserShard(config, list(range(users)))
    marks: list[tuple[float, int]] = []

    async def all_rounds() -> int:
        turns = 0
        for k in range(sessions):
            turns += len((await shard.run_round(k)).turns)
            marks.append((time.perf_counter(), turns))
        return turns

    turns = asyncio.run(all_rounds())
    (t1, turns1), (t_end, _) = marks[0], marks[-1]
    return {"turns": turns, "seconds": time.perf_counter() - started,
            "steady_turns_per_s": (turns - turns1) / (t_end - t1)}


def engine(users: int, sessions: int, actors: int) -> dict:
    """The real engine: Ray actors, the driver writing every batch to a DuckDB file."""
    import ray

    from personasim.sim.engine import run_simulation
    from personasim.sim.rows import RunRow
    from personasim.sim.store import TrajectoryStore

    config = _config(users, sessions, engine={"num_actors": actors})
    with tempfile.TemporaryDirectory() as tmp:
        store = TrajectoryStore(Path(tmp) / "bench.duckdb")
        store.write("runs", [RunRow(run_id=config.run_id, seed=0, config_json="{}", personasim_version="bench",
                                    world_data_hash="", package_versions_json="{}", users=users,
                                    sessions_per_user=sessions, status="running")])
        if not ray.is_initialized():
            ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        started = time.perf_counter()
        progress = {"sessions": 0, "first_round_done": 0.0}

        def on_sessions(n: int) -> None:
            progress["sessions"] += n
            if not progress["first_round_done"] and progress["sessions"] >= users:
                progress["first_round_done"] = time.perf_counter()

        counts = run_simulation(config, store, on_sessions=on_sessions)
        seconds = time.perf_counter() - started
        store.close()
    steady_turns = counts.turns * (sessions - 1) / sessions
    steady = steady_turns / (started + seconds - progress["first_round_done"])
    return {"turns": counts.turns, "seconds": seconds, "store_seconds": counts.store_seconds,
            "steady_turns_per_s": steady}


def throughput(args: argparse.Namespace) -> dict:
    """Turns per second with 1 and 2 actors against the bare loop on one core. ``steady``: after
    the first round, once every process has loaded its models (startup is reported apart)."""
    bare = bare_loop(args.users, args.sessions)
    bare_tps = bare["turns"] / bare["seconds"]
    result: dict = {"users": args.users, "sessions": args.sessions, "cpus": os.cpu_count(),
                    "bare_loop": {"turns_per_s": round(bare_tps, 1), "steady_turns_per_s": round(
                        bare["steady_turns_per_s"], 1)},
                    "target_per_core_ratio": 0.8}
    for actors in (1, 2):
        run = engine(args.users, args.sessions, actors)
        tps = run["turns"] / run["seconds"]
        result[f"actors_{actors}"] = {
            "turns_per_s": round(tps, 1), "seconds": round(run["seconds"], 1),
            "steady_turns_per_s": round(run["steady_turns_per_s"], 1),
            "store_share": round(run["store_seconds"] / run["seconds"], 4),
            "per_core_ratio_vs_bare": round(tps / actors / bare_tps, 3),
            "steady_per_core_ratio_vs_bare": round(run["steady_turns_per_s"] / actors / bare["steady_turns_per_s"], 3),
        }
    return result


def llm(args: argparse.Namespace) -> dict:
    """calls/s achieved against a server with a fixed latency L, with C calls allowed: / (C / L).

    The chatbot keeps no memory here (small prompts): this measures how well the engine keeps C
    calls in flight, not how fast Python serialises long histories on a 2-core machine."""
    import ray

    from personasim.sim.engine import run_simulation
    from personasim.sim.rows import RunRow
    from personasim.sim.store import TrajectoryStore
    from tests.openai_server import FakeOpenAIServer

    if not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    with FakeOpenAIServer(latency_s=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        backend = {"kind": "openai", "model": "latency", "base_url": server.base_url,
                   "max_concurrency": args.concurrency, "timeout_s": 120}
        config = _config(args.users, args.sessions, chatbot_backend=backend, memory={"strategies": ["none"],
                         "chatbot": "none"}, engine={"cache": "off"})
        store = TrajectoryStore(Path(tmp) / "llm.duckdb")
        store.write("runs", [RunRow(run_id=config.run_id, seed=0, config_json="{}", personasim_version="bench",
                                    world_data_hash="", package_versions_json="{}", users=args.users,
                                    sessions_per_user=args.sessions, status="running")])
        started = time.perf_counter()
        run_simulation(config, store)
        seconds = time.perf_counter() - started
        store.close()
        calls, peak = server.calls, server.max_in_flight
        done = sorted(server.finished_at)
    ideal = args.concurrency / args.latency
    # saturated rate: the middle 80% of calls, past actor start-up and before the last users' tail
    lo, hi = done[len(done) // 10], done[len(done) * 9 // 10]
    steady = (len(done) * 9 // 10 - len(done) // 10) / (hi - lo)
    return {"latency_s": args.latency, "concurrency": args.concurrency, "users": args.users,
            "sessions": args.sessions, "calls": calls, "seconds": round(seconds, 1),
            "calls_per_s": round(calls / seconds, 1), "ideal_calls_per_s": ideal,
            "efficiency": round(calls / seconds / ideal, 3), "steady_calls_per_s": round(steady, 1),
            "steady_efficiency": round(steady / ideal, 3), "max_in_flight_seen": peak, "target_efficiency": 0.9}


def _held_bytes(users: int, sessions: int, memory_config: dict | None) -> list[int]:
    """Heap held by a shard of ``users`` after each session (embedding cache emptied first: it is
    per process and bounded, not per user)."""
    from personasim.agents.embedding import default_embedder
    from personasim.sim.shard import UserShard

    embedder = default_embedder()  # the model is per process, not per user: load it before measuring
    config = _config(users, sessions, **({"memory": memory_config} if memory_config else {}))
    embedder._cache.clear()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    shard = UserShard(config, list(range(users)))
    held = []

    async def rounds() -> None:
        for k in range(sessions):
            batch = await shard.run_round(k)
            del batch
            embedder._cache.clear()
            gc.collect()
            held.append(tracemalloc.get_traced_memory()[0] - base)

    asyncio.run(rounds())
    tracemalloc.stop()
    return held


def memory(args: argparse.Namespace) -> dict:
    """Bytes per user held between sessions: the marginal cost, from shards of N and 2N users
    (what a shard costs with no users, catalogs and caches, cancels out)."""
    import psutil

    configs = {"default": None, "minimal": {"strategies": ["none"], "chatbot": "none"}}
    result: dict = {"users": [args.users, 2 * args.users], "sessions": args.sessions, "target_bytes_per_user": 20_000}
    for name, memory_config in configs.items():
        small = _held_bytes(args.users, args.sessions, memory_config)
        large = _held_bytes(2 * args.users, args.sessions, memory_config)
        per_round = [round((b - a) / args.users) for a, b in zip(small, large, strict=True)]
        result[name] = {"memory": memory_config or "run default (none, full_history, agentic; chatbot agentic)",
                        "bytes_per_user_after_each_session": per_round, "bytes_per_user": per_round[-1]}
    available = psutil.virtual_memory().total
    actor_overhead = 1.2 * 2**30  # an actor with torch and MiniLM loaded, before any user
    result["machine_memory_bytes"] = available
    result["largest_population_estimate"] = {
        name: int((available * 0.8 - 2 * actor_overhead) / result[name]["bytes_per_user"]) for name in configs
    }
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--users", type=int, default=200)
    t.add_argument("--sessions", type=int, default=4)
    m = sub.add_parser("llm")
    m.add_argument("--latency", type=float, default=1.0)
    m.add_argument("--concurrency", type=int, default=64)
    m.add_argument("--users", type=int, default=1024)
    m.add_argument("--sessions", type=int, default=2)
    r = sub.add_parser("memory")
    r.add_argument("--users", type=int, default=250)
    r.add_argument("--sessions", type=int, default=6)
    args = parser.parse_args(argv)
    result = {"throughput": throughput, "llm": llm, "memory": memory}[args.bench](args)
    result["date"] = time.strftime("%Y-%m-%d")
    out = RESULTS / f"engine_{args.bench}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
