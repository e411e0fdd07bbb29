"""End to end at scale: N users x S sessions on the scripted backend, and the store's share of time.

    python bench/scale_bench.py --users 10000 --sessions 10     # writes bench/results/scale.json
    python bench/scale_bench.py --users 100 --sessions 6 --rescore --out bench/results/rescore_100x6.json

Runs exactly what `personasim run` runs (embedded Ray, actors sized to the CPUs, the DuckDB
store, questions and the embedding reader) with the default config otherwise. Target (issue 6):
10,000 users x 10 sessions in under 10 minutes on this 2-core machine.

``--rescore`` then times `personasim eval` on the finished store, as a user runs it (a fresh
process: start-up, answering every stored question again, the audit and the bootstrap tables),
and checks that it gives the run's own accuracies.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"


class PeakMemory:
    """Peak resident memory of every process of the run, sampled twice a second: this driver and
    each Ray process (shard and evaluation actors, idle workers, raylet, GCS), by process name.
    Ray's processes are not this process's children in the ``getrusage`` sense, so they are read
    from the process table; a spike shorter than the interval can be missed.

    It keeps each process's CPU seconds (user + system, as last sampled) too: their sum against
    the wall time and the cores says whether the run kept the machine busy or waited."""

    def __init__(self, interval: float = 0.5) -> None:
        import threading

        self.interval = interval
        self.peaks: dict[str, float] = {}
        self._cpu_by_pid: dict[int, float] = {}
        self._name_by_pid: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> dict[str, float]:
        return {self._name_by_pid[pid]: cpu for pid, cpu in self._cpu_by_pid.items()}

    def _sample(self) -> None:
        import psutil

        me = os.getpid()
        while not self._stop.is_set():
            for proc in psutil.process_iter(["pid", "name", "cmdline", "memory_info", "cpu_times"]):
                try:
                    info = proc.info
                    cmdline = " ".join(info["cmdline"] or [])
                    if info["pid"] == me:
                        name = "driver"
                    elif (info["name"] or "").startswith("ray::") or "ray/core/src" in cmdline or "raylet" in cmdline \
                            or "gcs_server" in cmdline:
                        # an actor's process name follows its current task: keep the actor's part
                        name = f"{(info['name'] or '?').split('.')[0]}[{info['pid']}]"
                    else:
                        continue
                    rss = info["memory_info"].rss / 2**20
                    cpu = info["cpu_times"].user + info["cpu_times"].system
                except (psutil.Error, AttributeError, TypeError):
                    continue
                self.peaks[name] = max(self.peaks.get(name, 0.0), rss)
                # per process, not per name: an actor's name changes with its task (ray::IDLE between)
                self._cpu_by_pid[info["pid"]] = max(self._cpu_by_pid.get(info["pid"], 0.0), cpu)
                if not name.startswith("ray::IDLE") or info["pid"] not in self._name_by_pid:
                    self._name_by_pid[info["pid"]] = name
            self._stop.wait(self.interval)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory", default=None, help="strategies (default: the run default)")
    parser.add_argument("--embedder", default="minilm", help="minilm (the default), minilm-bf16 or minilm-static")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--rescore", action="store_true", help="then time `personasim eval` on the store")
    args = parser.parse_args(argv)

    from personasim import build_config, run

    config = build_config(users=args.users, sessions=args.sessions, seed=args.seed, memory=args.memory,
                          base={"embedder": args.embedder})
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "scale.duckdb"
        started = time.perf_counter()
        with PeakMemory() as memory:
            summary = run(config, db, show_progress=True)
        wall = time.perf_counter() - started
        store_mb = db.stat().st_size / 2**20
        rescore = _rescore(db, {s.strategy: s.accuracy for s in summary.scores}) if args.rescore else None
    result = {
        "users": args.users, "sessions_per_user": args.sessions, "seed": args.seed, "embedder": args.embedder,
        "strategies": config.memory.strategies, "sessions": summary.sessions, "turns": summary.turns,
        "questions": summary.questions, "actors": summary.actors,
        "wall_seconds": round(wall, 1), "simulation_seconds": summary.simulation_seconds,
        "store_seconds": summary.store_seconds,
        "store_share_of_simulation": round(summary.store_seconds / max(summary.simulation_seconds, 1e-9), 4),
        "evaluation_seconds": round(wall - summary.simulation_seconds, 1),
        "evaluation_store_seconds": summary.evaluation_store_seconds,
        "sessions_per_second": round(summary.sessions / max(summary.simulation_seconds, 1e-9), 1),
        "turns_per_second": round(summary.turns / max(summary.simulation_seconds, 1e-9), 1),
        "store_mb": round(store_mb, 1),
        "driver_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_mb_by_process": {name: round(mb) for name, mb in sorted(memory.peaks.items(), key=lambda kv: -kv[1])},
        "cpu_seconds_by_process": {name: round(s, 1) for name, s in sorted(
            memory.cpu_seconds.items(), key=lambda kv: -kv[1]) if s >= 1.0},
        "cpu_seconds_total": round(sum(memory.cpu_seconds.values()), 1),
        "cores": os.cpu_count(),
        "target_seconds": 600, "accuracy": {s.strategy: round(s.accuracy, 4) for s in summary.scores},
    }
    if rescore is not None:
        result["rescore"] = rescore
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def _rescore(db: Path, accuracy: dict[str, float]) -> dict:
    """`personasim eval --db DB` in a fresh process, timed from the command; its accuracies must be
    the run's own (the same answers, given again)."""
    import subprocess
    import sys

    summary_file = db.with_suffix(".eval.json")
    peak_file = db.with_suffix(".peak")
    command = [sys.executable, "-c", _REPORTS_OWN_PEAK + "from personasim.cli import main; main()", str(peak_file),
               "eval", "--db", str(db), "--quiet", "--json", str(summary_file)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    process.wait()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    summary = json.loads(summary_file.read_text())
    again = {row["strategy"]: row["accuracy"] for row in summary["tables"]["by_strategy"]}
    if any(abs(again[s] - a) > 1e-9 for s, a in accuracy.items()):  # the JSON keeps 10 decimals
        raise RuntimeError(f"personasim eval scored the run otherwise: {again} against the run's {accuracy}")
    return {"command": "personasim eval --db STORE", "wall_seconds": round(seconds, 1),
            "in_process_seconds": summary["wall_seconds"], "answers": summary["answers"],
            "ms_per_answer": round(1000 * seconds / summary["answers"], 2), "same_accuracy_as_the_run": True,
            "driver_max_rss_mb": round(int(peak_file.read_text()) / 1024)}


#: Prefixed to the child's command: at exit it writes its own peak resident memory (``VmHWM``, kB)
#: to the file named by its first argument. Its ``ru_maxrss`` (from ``wait4`` or itself) would not
#: do: Linux carries the peak of the memory it had before ``exec`` into it, and a child spawned
#: from this process had this process's, the whole run's (2.98 GB at 10,000 users, reported as the
#: re-scoring's own in the thirteenth session).
_REPORTS_OWN_PEAK = (
    "import atexit, sys\n"
    "peak_file = sys.argv.pop(1)\n"
    "def _peak():\n"
    "    kb = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
    "    open(peak_file, 'w').write(kb)\n"
    "atexit.register(_peak)\n"
)


if __name__ == "__main__":
    main()
