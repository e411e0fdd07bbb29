"""Answering in parallel: a pool of Ray actors asks, answers and audits whole users, the driver
only hands out tasks and writes what comes back (``analysis.asking`` for a run,
``analysis.scoring`` for a stored run's ``personasim eval``).

The embedding reader's time is all MiniLM forward passes (a profile of the default run's
evaluation: 98% in ``torch`` linear layers and attention), and one process uses one core well,
so an evaluation on N cores is N actors, each answering whole users (a user's questions share
their memory lines and options: ``EmbeddingReader.answer_users`` embeds them once). Each actor
sizes torch's threads to the cores Ray gave it, so a loaded machine slows the pool in proportion
instead of drowning it in OpenMP threads (a driver at torch's default thread count beside busy
actors once took 270 ms per answer instead of 16).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

#: Below this many answers a pool costs more (actors import torch and load MiniLM) than it saves.
MIN_PARALLEL_ANSWERS = 3000
#: Users per task: small enough to balance the actors, big enough to batch the embedding calls.
USERS_PER_TASK = 8
#: Tasks queued on each actor at once: one answered, the next waiting, so no actor idles while the
#: driver reads the next users' snapshots.
TASKS_IN_FLIGHT = 2

Key = TypeVar("Key")


def in_pool(
    worker: type, args: tuple, method: str, tasks: Iterable[tuple[Key, object]], workers: int,
    on_done: Callable[[Key, Any], None],
) -> None:
    """Each task's payload handed to ``method`` of one of ``workers`` Ray actors of class
    ``worker`` (built with ``args``, one core each); ``on_done(key, result)`` in completion order.

    ``tasks`` is read lazily, a task whenever an actor has room: each actor has up to
    ``TASKS_IN_FLIGHT`` queued, so it does not wait while the driver builds the next one, and the
    driver never holds more than that many tasks per actor. The actors are killed at the end,
    and on the first failure, which is raised."""
    import ray

    from personasim.sim.engine import ensure_ray

    ensure_ray()
    cores = max(1, int(ray.available_resources().get("CPU", 1)))
    actor_cls = ray.remote(num_cpus=1)(worker)
    actors = [actor_cls.remote(*args) for _ in range(max(1, min(workers, cores)))]
    source = iter(tasks)
    try:
        load = {i: 0 for i in range(len(actors))}
        pending: dict[ray.ObjectRef, tuple[int, Key]] = {}
        exhausted = False
        while True:
            while not exhausted and min(load.values()) < TASKS_IN_FLIGHT:
                task = next(source, None)
                if task is None:
                    exhausted = True
                    break
                i = min(load, key=lambda a: (load[a], a))  # the least loaded actor
                load[i] += 1
                key, payload = task
                pending[getattr(actors[i], method).remote(payload)] = (i, key)
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, key = pending.pop(ready[0])
            load[i] -= 1
            on_done(key, ray.get(ready[0]))
    finally:
        for actor in actors:
            ray.kill(actor)
