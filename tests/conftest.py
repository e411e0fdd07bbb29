"""Shared fixtures: one Ray session per test run, and default-sized runs shared by many tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def small_config():
    """What ``personasim run --users 12 --sessions 6 --seed 0`` runs, with one Ray actor running its
    rounds in waves of 5 users: the simulated store of tests/test_store_digest.py (recorded with two
    actors and no waves, so sharding and waves are checked too)."""
    from personasim.config import build_config

    config = build_config(users=12, sessions=6, seed=0, actors=1)
    return config.model_copy(update={"engine": config.engine.model_copy(update={"wave_users": 5})})


@pytest.fixture(scope="session")
def small_run_store(tmp_path_factory, ray_session, small_config):
    """small_run's summary and store, and a copy of the store taken as soon as the run finished (what
    tests/test_store_digest.py hashes, whatever later tests do). Built as the digest was recorded:
    the embedder has embedded nothing yet and torch runs 2 threads."""
    from personasim.api import run
    from tests.test_store_digest import recorded_conditions

    db = Path(tmp_path_factory.mktemp("run")) / "simulated.duckdb"
    with recorded_conditions():
        summary = run(small_config, db)
    pristine = Path(tmp_path_factory.mktemp("pristine")) / "simulated.duckdb"
    shutil.copy(db, pristine)
    return summary, db, pristine


@pytest.fixture(scope="session")
def small_run(small_run_store):
    """A real run: Ray actors, AutoGen agents, a DuckDB file, questions and answers (12 users x 6
    sessions, seed 0; read it, or copy it to write)."""
    summary, db, _ = small_run_store
    return summary, db


@pytest.fixture(scope="session")
def default_run(tmp_path_factory, ray_session):
    """The CLI's default configuration (what `make demo` runs)."""
    from personasim.api import run
    from personasim.config import build_config

    db = Path(tmp_path_factory.mktemp("default")) / "default.duckdb"
    summary = run(build_config(), db)
    return summary, db
