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

from collections.abc import Callable, Sequence

from personasim.agents.embedding import size_torch_threads
from personasim.analysis.reader import ReaderAnswer

#: Below this many answers a pool costs more (actors import torch and load MiniLM) than it saves.
MIN_PARALLEL_ANSWERS = 3000
#: Users per task: small enough to balance the actors, big enough to batch the embedding calls.
USERS_PER_TASK = 8

Work = tuple[list[str], str, list[str]]  # (context items, query, options)


class AnswerWorker:
    """One pool member: an embedding reader with the driver's settings, answering whole users."""

    def __init__(self, embedder: str, temperature: float, recency_weight: float, relevance_floor: float) -> None:
        from personasim.agents.embedding import default_embedder, use_embedder
        from personasim.analysis.reader import EmbeddingReader

        use_embedder(embedder)
        self.threads = size_torch_threads()
        self.reader = EmbeddingReader(default_embedder(), temperature, recency_weight, relevance_floor)

    def answer_users(self, users: list[list[Work]]) -> list[list[ReaderAnswer]]:
        return [self.reader.answer_many(work) for work in users]


def answer_users_in_parallel(
    reader: object, users: Sequence[list[Work]], workers: int, on_done: Callable[[int], None] | None = None,
    on_answered: Callable[[list[int], list[list[ReaderAnswer]]], None] | None = None,
) -> list[list[ReaderAnswer]]:
    """Each user's work answered by ``reader``'s settings in a pool of ``workers`` Ray actors, in order.

    ``reader`` is an ``EmbeddingReader`` (its embedder stays in this process; each actor loads its
    own). ``on_done`` gets the number of answers of each finished task (a progress bar);
    ``on_answered`` the users' indices and answers of each finished task (to store them)."""
    import ray

    from personasim.sim.engine import ensure_ray

    ensure_ray()
    settings = (getattr(reader.embedder, "name", "minilm"), reader.temperature,  # type: ignore[attr-defined]
                reader.recency_weight, reader.relevance_floor)  # type: ignore[attr-defined]
    cores = max(1, int(ray.available_resources().get("CPU", 1)))
    workers = max(1, min(workers, cores, len(users)))
    actor_cls = ray.remote(num_cpus=1)(AnswerWorker)
    actors = [actor_cls.remote(*settings) for _ in range(workers)]
    tasks = [list(range(i, min(i + USERS_PER_TASK, len(users)))) for i in range(0, len(users), USERS_PER_TASK)]
    results: list[list[ReaderAnswer] | None] = [None] * len(users)
    try:
        idle = list(actors)
        pending: dict[ray.ObjectRef, tuple[object, list[int]]] = {}
        queue = list(reversed(tasks))
        while queue or pending:
            while queue and idle:
                actor, task = idle.pop(), queue.pop()
                pending[actor.answer_users.remote([users[i] for i in task])] = (actor, task)  # type: ignore[attr-defined]
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor, task = pending.pop(ready[0])
            finished = ray.get(ready[0])
            for i, answers in zip(task, finished, strict=True):
                results[i] = answers
            idle.append(actor)
            if on_answered:
                on_answered(task, finished)
            if on_done:
                on_done(sum(len(users[i]) for i in task))
    finally:
        for actor in actors:
            ray.kill(actor)
    return results  # type: ignore[return-value]  # every user's slot is filled above
