"""Shared fixtures: one Ray session per test run, and default-sized runs shared by many tests."""

from __future__ import annotations

import os
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
    from personasim.config import build_config

    return build_config(users=12, sessions=5, seed=7)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, ray_session, small_config):
    """A real run: Ray actors, AutoGen agents, a DuckDB file, questions and answers."""
    from personasim.api import run

    db = Path(tmp_path_factory.mktemp("run")) / "small.duckdb"
    summary = run(small_config, db)
    return summary, db


@pytest.fixture(scope="session")
def default_run(tmp_path_factory, ray_session):
    """The CLI's default configuration (what `make demo` runs)."""
    from personasim.api import run
    from personasim.config import build_config

    db = Path(tmp_path_factory.mktemp("default")) / "default.duckdb"
    summary = run(build_config(), db)
    return summary, db
