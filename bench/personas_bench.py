"""Persona generation speed and memory: 100,000 personas on one core.

    python bench/personas_bench.py [--n 100000] [--months 0]

Targets (issue 3): at least 2,000 personas/s and under 20 KB of memory per persona held.
Speed is measured over the whole run; memory is the traced Python heap held by a list of all
generated personas, divided by their number (tracemalloc, so it counts what the personas keep,
not allocator slack). Writes bench/results/personas.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
import tracemalloc
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "personas.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--memory-sample", type=int, default=5_000, help="Personas held for the memory figure.")
    parser.add_argument("--months", type=int, default=0, help="Months of drift applied to each persona.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from personasim.personas.generator import PopulationConfig
    from personasim.personas.population import PopulationBuilder

    builder = PopulationBuilder(PopulationConfig(users=args.n), seed=0)
    builder.persona(0, months=args.months)  # warm-up: Faker locales, caches

    started = time.perf_counter()
    preferences = 0
    for persona in builder.personas(args.n, months=args.months):
        preferences += len(persona.preferences)
    elapsed = time.perf_counter() - started

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = list(builder.personas(args.memory_sample, months=args.months))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_persona = (after - before) / len(held)

    result = {
        "personas": args.n,
        "months_of_drift": args.months,
        "seconds": round(elapsed, 2),
        "personas_per_second": round(args.n / elapsed, 1),
        "preferences_per_persona": round(preferences / args.n, 2),
        "memory_sample": len(held),
        "bytes_per_persona": round(per_persona),
        "targets": {"personas_per_second": 2000, "bytes_per_persona": 20_000},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    result["meets_targets"] = (
        result["personas_per_second"] >= 2000 and result["bytes_per_persona"] <= 20_000
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
