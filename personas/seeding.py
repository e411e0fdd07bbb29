"""Stable seed derivation.

Python's ``hash()`` is salted per process, so it can never seed anything that must reproduce.
Every random stream in personasim is derived from the run seed and a path of names through
BLAKE2b, which is identical across processes, machines and Ray actors.
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed that depends only on ``seed`` and the ``parts`` path (e.g. "persona", 17)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def rng_for(seed: int, *parts: object) -> random.Random:
    """An independent ``random.Random`` for one purpose, so streams never interfere."""
    return random.Random(derive_seed(seed, *parts))
