"""The engine: Ray actors holding shards of users, the run loop, and the DuckDB trajectory store."""

from personasim.sim.config import EngineConfig, MemoryConfig, RunConfig
from personasim.sim.engine import SimulationCounts, ensure_ray, run_simulation
from personasim.sim.store import StoreError, TrajectoryStore

__all__ = [
    "EngineConfig",
    "MemoryConfig",
    "RunConfig",
    "SimulationCounts",
    "StoreError",
    "TrajectoryStore",
    "ensure_ray",
    "run_simulation",
]
