"""The cyclic garbage collector in a worker process: full passes a hundred times less often.

A shard holds a wave of users' sessions at once (1,000 by default) and every user's state between
them: half a million tracked objects at 2,000 users. CPython walks all of them on each full
collection, and a full collection is due after every ten young ones. In a 2,000-user shard the
13 full collections of 5 rounds took 5.5 s of 29.6 s of CPU, and found nothing: what a session
leaves behind dies by reference counting or in the young collections, and one more full pass at
the end freed no object. So a worker keeps the young collections as they are and makes a full
one due after a thousand of them instead of ten; a cycle that does reach the old generation is
still freed, later.

In a Ray worker (a shard actor, an evaluation actor) for the process's life. In a driver (a
notebook, a test) only while a run is in progress (``collecting_rarely``; a 1,000-user run's
driver spent 1.75 s in the collector with the default settings, 0.30 s so), and its own
settings come back after.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Young (generation 1) collections between two full ones; CPython's default is 10.
FULL_PASS_EVERY = 1000


def collect_rarely_in_workers() -> bool:
    """In a Ray worker, make full collections rare (see the module); returns whether it did."""
    from personasim.agents.embedding import in_ray_worker

    if "ray" not in sys.modules or not in_ray_worker():  # a worker has imported Ray; nothing else need
        return False
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_PASS_EVERY)
    return True


@contextmanager
def collecting_rarely() -> Iterator[None]:
    """Full collections rare while the block runs (a run in the driver), then as they were."""
    before = gc.get_threshold()
    gc.set_threshold(before[0], before[1], max(before[2], FULL_PASS_EVERY))
    try:
        yield
    finally:
        gc.set_threshold(*before)
