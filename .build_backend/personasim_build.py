"""setuptools' PEP 517 backend, quiet about one notice that does not apply to this layout.

personasim maps root folders (``sim/``, ``agents/`` ...) into ``personasim.*`` (DESIGN.md), so an
editable install uses setuptools' meta path finder, which ends with an ``InformationOnly`` notice
("Editable installation ... folders in your working directory with the same name as your package
may take precedence"). The only such folder here is ``personasim/`` itself, the package, so the
notice is noise on every ``pip install -e .``. Everything else, warnings included, passes through.
"""

from __future__ import annotations

import warnings
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (every hook, as setuptools defines it)
from setuptools.warnings import InformationOnly


def build_editable(*args: Any, **kwargs: Any) -> str:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Editable installation", category=InformationOnly)
        return _setuptools.build_editable(*args, **kwargs)
