"""The run loop: Ray actors hold user shards; the driver is the store's single writer.

Sessions advance in rounds (session k of every user), so each user's sessions run in simulated
time order while all users of a shard run concurrently. Batches are written as soon as a shard
returns them, which is what the progress bar counts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import ray
from pydantic import BaseModel

from personasim.sim.config import RunConfig
from personasim.sim.shard import PersonaBatch, SessionBatch, UserShard
from personasim.sim.store import TrajectoryStore


class SimulationCounts(BaseModel):
    users: int = 0
    sessions: int = 0
    turns: int = 0
    drift_events: int = 0
    actors: int = 0


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start an embedded Ray (or join ``address``) unless this process is already connected."""
    if ray.is_initialized():
        return
    kwargs: dict = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)


def plan_shards(users: int, cpus: int, num_actors: int | None) -> list[list[int]]:
    """Round-robin user indices over actors: a few actors with many users each."""
    n = num_actors or max(1, min(cpus, math.ceil(users / 4)))
    n = min(n, users)
    return [list(range(i, users, n)) for i in range(n)]


def run_simulation(
    config: RunConfig,
    store: TrajectoryStore,
    on_sessions: Callable[[int], None] | None = None,
) -> SimulationCounts:
    ensure_ray(config.engine.address)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    shards = plan_shards(config.population.users, cpus, config.engine.num_actors)
    cpu_per_actor = min(1.0, cpus / len(shards))
    actor_cls = ray.remote(UserShard)
    actors = [actor_cls.options(num_cpus=cpu_per_actor).remote(config, shard) for shard in shards]
    counts = SimulationCounts(users=config.population.users, actors=len(actors))
    try:
        for k in range(config.schedule.sessions):
            pending = [a.run_round.remote(k) for a in actors]
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                batch: SessionBatch = ray.get(done[0])
                store.write_many(batch.tables())
                counts.sessions += len(batch.sessions)
                counts.turns += len(batch.turns)
                counts.drift_events += len(batch.drift_events)
                if on_sessions:
                    on_sessions(len(batch.sessions))
        finals: list[PersonaBatch] = ray.get([a.personas.remote() for a in actors])
        store.write_many(table for final in finals for table in final.tables())
    finally:
        for a in actors:
            ray.kill(a)
    return counts
