"""Online environment throughput (issue 7): policy steps per second, in process and on Ray actors.

    python bench/env_bench.py [--envs 16 --steps 40]          # writes bench/results/env.json

A fixed, instant policy (it echoes the user) isolates the environment's own cost: the simulated
user's turn, the reward (MiniLM embeddings of the reply and the persona's statements), the
memory update at each episode's end, and the store writes (timed separately). Both layouts run
in the same process, one after the other, so their ratio is what to read on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _policy(observation: list[dict[str, str]]) -> str:
    return f"Happy to help. You mentioned: {observation[-1]['content'][:80]}"


def measure(envs: int, steps: int, actors: int, folder: Path, embedder: str = "minilm") -> dict:
    from personasim.rl import env_worker
    from personasim.rl.env import EnvConfig, PersonaVectorEnv

    config = EnvConfig(run={"population": {"users": envs * 2}, "schedule": {"sessions": 52}, "embedder": embedder},
                       label=f"bench-{actors}-{embedder}")
    env = PersonaVectorEnv(config, db=folder / f"env-{actors}-{embedder}.duckdb", num_envs=envs, num_actors=actors)
    reward_seconds = 0.0  # in process only: an actor's reward time is in another process
    score = env_worker.score_reply

    def timed_score(*a, **k):  # type: ignore[no-untyped-def]
        nonlocal reward_seconds
        started = time.perf_counter()
        try:
            return score(*a, **k)
        finally:
            reward_seconds += time.perf_counter() - started

    env_worker.score_reply = timed_score
    write_seconds = 0.0
    write = env._write

    def timed_write(results):  # type: ignore[no-untyped-def]
        nonlocal write_seconds
        started = time.perf_counter()
        write(results)
        write_seconds += time.perf_counter() - started

    env._write = timed_write  # type: ignore[method-assign]
    obs, _ = env.reset()
    env.step([_policy(o) for o in obs])  # warm-up: the embedder loads in every worker
    write_seconds = reward_seconds = 0.0
    started = time.perf_counter()
    episodes = 0
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step([_policy(o) for o in obs])
        episodes += int(terminated.sum() + truncated.sum())
    seconds = time.perf_counter() - started
    env.close()
    env_worker.score_reply = score
    split = {"store_share": round(write_seconds / seconds, 3)}
    if actors == 0:  # the rest is the user's turn, its bookkeeping and the memories at episode ends
        split["reward_share"] = round(reward_seconds / seconds, 3)
        split["user_turn_and_rest_share"] = round(1 - (reward_seconds + write_seconds) / seconds, 3)
    return {
        "embedder": embedder, "actors": actors, "num_envs": envs, "vector_steps": steps, "policy_steps": steps * envs,
        "episodes": episodes, "seconds": round(seconds, 2), "steps_per_second": round(steps * envs / seconds, 1),
        "ms_per_vector_step": round(1000 * seconds / steps, 1), **split,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--actors", type=int, default=2, help="Ray actors for the second layout.")
    parser.add_argument("--embedders", default="minilm,minilm-static",
                        help="The run's embedder (the reward's alignment and over-personalisation terms).")
    parser.add_argument("--out", type=Path, default=RESULTS / "env.json")
    args = parser.parse_args()
    import ray
    import torch

    torch.set_num_threads(1)  # one core in process, as each Ray actor gets
    ray.init(num_cpus=args.actors, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(args.envs, args.steps, actors, Path(tmp), embedder)
                for embedder in args.embedders.split(",") for actors in (0, args.actors)]
    best = max(r["steps_per_second"] for r in rows)
    result = {"date": time.strftime("%Y-%m-%d"), "runs": rows, "target_steps_per_second": 300,
              "ray_vs_in_process": round(rows[1]["steps_per_second"] / rows[0]["steps_per_second"], 2),
              "best_steps_per_second": best, "target_met": best >= 300}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for row in rows:
        print(row)
    print(f"Ray actors / in process: {result['ray_vs_in_process']}x; written to {args.out}")


if __name__ == "__main__":
    main()
