"""The install: the build backend pip uses for ``pip install -e .`` (``.build_backend/``)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_BUILD = """
import json, sys, warnings
sys.path.insert(0, ".build_backend")
import personasim_build
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    wheel = personasim_build.build_editable(sys.argv[1])
print(json.dumps({"wheel": wheel, "warnings": [str(w.message).strip()[:300] for w in caught
                                               if issubclass(w.category, UserWarning)]}))
"""


def test_an_editable_build_prints_no_warning_and_maps_every_root_folder(tmp_path):
    """pip shows every UserWarning the backend emits; setuptools' notice about editable installs of
    a package_dir layout is the one this backend drops (it does not apply: see its docstring)."""
    done = subprocess.run([sys.executable, "-c", _BUILD, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["warnings"] == []
    with zipfile.ZipFile(tmp_path / result["wheel"]) as wheel:
        mapping = "\n".join(wheel.read(n).decode() for n in wheel.namelist() if n.endswith(".py"))
    for package, folder in {"personasim": "personasim", "personasim.sim": "sim", "personasim.agents": "agents",
                            "personasim.interop": "interop"}.items():
        assert f"'{package}': '{ROOT / folder}'" in mapping, package
