"""personasim: simulated users with evolving implicit personas, chatbots with long-term memory,
and exact scoring against the persona's true state.

Every command of the ``personasim`` command line has a function here:

- ``run`` / ``resume``: ``personasim run`` (simulate, store, score), with ``build_config``;
- ``evaluate``: ``personasim eval`` on a stored run; ``evaluate_personamem_v2`` on PersonaMem-v2's files;
- ``audit``: ``personasim audit`` (the artifact audit of a stored run); ``audit_personamem_v2``;
- ``report``: ``personasim report`` (the HTML and Markdown report of a run);
- ``export``: ``personasim export`` (PersonaMem-v2's format or TRL datasets), and its two halves
  ``export_benchmark`` and ``export_training``;
- ``compare``: ``personasim compare`` (two strategies, readers or backends, paired);
- ``train``: ``personasim train`` (TRL's SFT, DPO or GRPO trainer).

The top-level names load lazily, so ``import personasim.personas`` stays light (no Ray, no torch).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

try:  # pyproject.toml is the one source of the version (the store records the same one)
    __version__ = importlib.metadata.version("personasim")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# public name -> "module" (same name there) or "module:name"
_EXPORTS = {
    "run": "personasim.api",
    "resume": "personasim.api",
    "RunSummary": "personasim.api",
    "build_config": "personasim.config",
    "ConfigError": "personasim.config",
    "RunConfig": "personasim.sim.config",
    "evaluate": "personasim.analysis.evaluate",
    "EvalSummary": "personasim.analysis.evaluate",
    "ReaderSpec": "personasim.analysis.evaluate",
    "evaluate_personamem_v2": "personasim.interop.personamem_v2.api",
    "load_personamem_v2": "personasim.interop.personamem_v2.load",
    "export_personamem_v2": "personasim.interop.personamem_v2.export",
    "audit": "personasim.analysis.audit:audit_store",
    "AuditReport": "personasim.analysis.audit",
    "audit_personamem_v2": "personasim.interop.personamem_v2.api",
    "report": "personasim.analysis.report:write_run_report",
    "export": "personasim.api",
    "export_benchmark": "personasim.interop.personamem_v2.api",
    "export_training": "personasim.rl.datasets",
    "compare": "personasim.api",
    "train": "personasim.rl.train",
    "TrainConfig": "personasim.rl.train",
}

__all__ = [
    "AuditReport",
    "ConfigError",
    "EvalSummary",
    "ReaderSpec",
    "RunConfig",
    "RunSummary",
    "TrainConfig",
    "__version__",
    "audit",
    "audit_personamem_v2",
    "build_config",
    "compare",
    "evaluate",
    "evaluate_personamem_v2",
    "export",
    "export_benchmark",
    "export_personamem_v2",
    "export_training",
    "load_personamem_v2",
    "report",
    "resume",
    "run",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        module, _, attr = _EXPORTS[name].partition(":")
        return getattr(importlib.import_module(module), attr or name)
    raise AttributeError(f"module 'personasim' has no attribute {name!r}")
