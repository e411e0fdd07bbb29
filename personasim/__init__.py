"""personasim: simulated users with evolving implicit personas, chatbots with long-term memory,
and exact scoring against the persona's true state.

The top-level names load lazily, so ``import personasim.personas`` stays light (no Ray, no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "run": "personasim.api",
    "RunSummary": "personasim.api",
    "build_config": "personasim.config",
    "ConfigError": "personasim.config",
    "RunConfig": "personasim.sim.config",
    "evaluate": "personasim.evaluation",
    "evaluate_personamem_v2": "personasim.evaluation",
    "EvalSummary": "personasim.evaluation",
    "ReaderSpec": "personasim.evaluation",
    "train": "personasim.rl.train",
    "TrainConfig": "personasim.rl.train",
}

__all__ = [
    "ConfigError",
    "EvalSummary",
    "ReaderSpec",
    "RunConfig",
    "RunSummary",
    "TrainConfig",
    "__version__",
    "build_config",
    "evaluate",
    "evaluate_personamem_v2",
    "run",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'personasim' has no attribute {name!r}")
