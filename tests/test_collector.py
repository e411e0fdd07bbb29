"""Shard and evaluation actors run the collector's full passes rarely; a driver keeps its own settings."""

from __future__ import annotations

import gc

from personasim.sim.collector import FULL_PASS_EVERY, collecting_rarely
from personasim.sim.shard import UserShard


def test_a_shard_in_a_ray_worker_makes_full_collections_rare_and_a_driver_keeps_its_own(ray_session, small_config):
    before = gc.get_threshold()
    UserShard(small_config, [0])
    assert gc.get_threshold() == before  # in the driver: untouched

    @ray_session.remote(num_cpus=1)
    def thresholds_in_a_worker(start: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        from personasim.analysis.asking import load_embedder_in_actor

        gc.set_threshold(700, 10, 10)  # CPython's defaults, whatever an earlier task left
        first = gc.get_threshold()
        if start == "shard":
            UserShard(small_config, [0])
        else:  # an evaluation pool actor's start
            load_embedder_in_actor(small_config.embedder)
        return first, gc.get_threshold()

    for start in ("shard", "evaluation actor"):
        first, after = ray_session.get(thresholds_in_a_worker.remote(start))
        assert after == (first[0], first[1], FULL_PASS_EVERY)


def test_a_driver_collects_rarely_only_inside_the_block_and_gets_its_settings_back():
    before = gc.get_threshold()
    try:
        gc.set_threshold(500, 7, 9)
        with collecting_rarely():
            assert gc.get_threshold() == (500, 7, FULL_PASS_EVERY)
        assert gc.get_threshold() == (500, 7, 9)
        try:
            with collecting_rarely():
                raise KeyboardInterrupt  # a run stopped by Ctrl-C
        except KeyboardInterrupt:
            pass
        assert gc.get_threshold() == (500, 7, 9)
    finally:
        gc.set_threshold(*before)
