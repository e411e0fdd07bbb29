"""Write constraints.txt: the exact versions of personasim[dev]'s dependencies in this environment.

`make test` and `make demo` install with `-c constraints.txt`, so a fresh machine gets the versions
the suite last passed with; pyproject.toml keeps open ranges for people who use personasim as a
library. Refresh after upgrading a dependency and seeing the suite pass: `make constraints`.
Only the dependency closure is written (tools installed by hand, such as py-spy, are left out), and
local version labels are dropped (torch's "+cpu": the Makefile installs torch==2.13.0 first).
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(root: str, extras: set[str]) -> dict[str, str]:
    """Installed version of every distribution ``root[extras]`` needs, transitively, by canonical name."""
    versions: dict[str, str] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    stack = [(root, frozenset(extras))]
    while stack:
        name, wanted = stack.pop()
        if (canonicalize_name(name), wanted) in done:
            continue
        done.add((canonicalize_name(name), wanted))
        try:
            dist = distribution(name)
        except PackageNotFoundError:  # an optional dependency this platform does not install
            continue
        versions[canonicalize_name(dist.metadata["Name"])] = dist.version.split("+")[0]
        for line in dist.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if requirement.marker is not None and not any(requirement.marker.evaluate(e) for e in environments):
                continue
            stack.append((requirement.name, frozenset(requirement.extras)))
    versions.pop("personasim", None)
    return versions


def main(out: str = "constraints.txt") -> None:
    pins = closure("personasim", {"dev"})
    header = ["# Versions the test suite passed with (written by .ci/constraints.py; `make constraints`",
              "# refreshes it). `make demo` and `make test` pass it to pip as -c; pyproject.toml keeps ranges."]
    Path(out).write_text("\n".join(header + [f"{name}=={pins[name]}" for name in sorted(pins)]) + "\n")
    print(f"{out}: {len(pins)} pins")


if __name__ == "__main__":
    main(*sys.argv[1:])
