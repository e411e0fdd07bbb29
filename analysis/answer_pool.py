"""Answering in parallel: a pool of Ray actors embeds and answers, the driver only writes rows.

The embedding reader's time is all MiniLM forward passes (a profile of the default run's
evaluation: 98% in ``torch`` linear layers and attention), and one process uses one core well,
so an evaluation on N cores is N actors, each answering whole users (a user's questions share
their memory lines and options: ``EmbeddingReader.answer_many`` embeds them once). Each actor
sizes torch's threads to the cores Ray gave it, so a loaded machine slows the pool in proportion
instead of drowning it in OpenMP threads (a driver at torch's default thread count beside busy
actors once took 270 ms per answer instead of 16).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from typing import TypeVar

from personasim.agents.embedding import size_torch_threads
from personasim.analysis.reader import ReaderAnswer

#: Below this many answers a pool costs more (actors import torch and load MiniLM) than it saves.
MIN_PARALLEL_ANSWERS = 3000
#: Users per task: small enough to balance the actors, big enough to batch the embedding calls.
USERS_PER_TASK = 8
#: Tasks queued on each actor at once: one answered, the next waiting, so no actor idles while the
#: driver reads the next users' snapshots.
TASKS_IN_FLIGHT = 2

Work = tuple[list[str], str, list[str]]  # (context items, query, options)
Key = TypeVar("Key")


class AnswerWorker:
    """One pool member: an embedding reader with the driver's settings, answering whole users."""

    def __init__(self, embedder: str, temperature: float, recency_weight: float, relevance_floor: float) -> None:
        from personasim.agents.embedding import default_embedder, use_embedder
        from personasim.analysis.reader import EmbeddingReader

        use_embedder(embedder)
        self.threads = size_torch_threads()
        self.reader = EmbeddingReader(default_embedder(), temperature, recency_weight, relevance_floor)

    def answer_users(self, users: list[list[Work]]) -> list[list[ReaderAnswer]]:
        return self.reader.answer_users(users)


def answer_users_in_parallel(
    reader: object, users: Iterable[tuple[Key, list[Work]]], workers: int,
    on_answered: Callable[[list[Key], list[list[ReaderAnswer]]], None],
) -> None:
    """Each user's work answered by ``reader``'s settings in a pool of ``workers`` Ray actors.

    ``users`` is read lazily, a task at a time, as actors have room: a caller can build each
    user's work (reading its snapshots) while the actors answer the users before it, so a run's
    whole evaluation never has to sit in the driver's memory. Each actor has up to
    ``TASKS_IN_FLIGHT`` tasks queued, so it does not wait while the driver builds the next one.
    ``reader`` is an ``EmbeddingReader`` (its embedder stays in this process; each actor loads its
    own). ``on_answered`` gets each finished task's users' keys and answers, in completion order."""
    import ray

    from personasim.sim.engine import ensure_ray

    ensure_ray()
    settings = (getattr(reader.embedder, "name", "minilm"), reader.temperature,  # type: ignore[attr-defined]
                reader.recency_weight, reader.relevance_floor)  # type: ignore[attr-defined]
    cores = max(1, int(ray.available_resources().get("CPU", 1)))
    actor_cls = ray.remote(num_cpus=1)(AnswerWorker)
    actors = [actor_cls.remote(*settings) for _ in range(max(1, min(workers, cores)))]
    source = iter(users)
    try:
        load = {i: 0 for i in range(len(actors))}
        pending: dict[ray.ObjectRef, tuple[int, list[Key]]] = {}
        exhausted = False
        while True:
            while not exhausted and min(load.values()) < TASKS_IN_FLIGHT:
                task = list(islice(source, USERS_PER_TASK))
                if not task:
                    exhausted = True
                    break
                i = min(load, key=lambda a: (load[a], a))  # the least loaded actor
                load[i] += 1
                ref = actors[i].answer_users.remote([work for _, work in task])  # type: ignore[attr-defined]
                pending[ref] = (i, [key for key, _ in task])
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, keys = pending.pop(ready[0])
            load[i] -= 1
            on_answered(keys, ray.get(ready[0]))
    finally:
        for actor in actors:
            ray.kill(actor)
