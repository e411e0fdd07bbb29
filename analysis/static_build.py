"""Building the static embedder: a corpus run, MiniLM's vectors of its texts, training.

The embedder itself (``agents/static_embedding.py``) only loads vectors; making them needs a
simulated run, which is this layer's job. A driver that will use ``minilm-static`` calls
``prepare_embedder`` before its actors start, so every process of the machine finds the file; an
actor never builds (a simulation inside a simulation's actor would wait for cores its own run
holds). ``python -m personasim.analysis.static_build`` builds it ahead of time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from personasim.agents import static_embedding
from personasim.agents.embedding import in_ray_worker
from personasim.agents.static_embedding import (
    CORPUS_SEED,
    CORPUS_SESSIONS,
    CORPUS_USERS,
    distil,
    save_static_model,
    static_model_file,
)


def _stderr(line: str) -> None:
    print(f"personasim: building the minilm-static embedder (once per machine): {line}", file=sys.stderr, flush=True)


def prepare_embedder(name: str) -> None:
    """Build ``name``'s files if it has any and they are missing (``minilm-static`` only), unless
    this process is a Ray worker."""
    if name == "minilm-static" and not in_ray_worker():
        build_static_model()


def build_static_model(minilm: Path | None = None, corpus_db: Path | None = None,
                       log: Callable[[str], None] | None = _stderr) -> Path:
    """Distil, train on a corpus run (or on the run stored in ``corpus_db``) and save, unless
    already built; returns the file."""
    from personasim.agents.static_training import trained_vectors

    minilm = minilm or static_embedding._minilm_path()  # through the module: one place to point elsewhere
    path = static_model_file(minilm)
    if path.exists():
        return path
    say = log or (lambda line: None)
    say("distilling token vectors")
    initial = distil(minilm)
    with tempfile.TemporaryDirectory() as tmp:
        if corpus_db is None:
            corpus_db = Path(tmp) / "corpus.duckdb"
            say(f"corpus run: {CORPUS_USERS} users x {CORPUS_SESSIONS} sessions, seed {CORPUS_SEED}")
            run_corpus(corpus_db)
        vectors = trained_vectors(minilm, initial, corpus_db, log)
    path = save_static_model(vectors, minilm)
    say(f"saved {path}")
    return path


def run_corpus(db: Path, users: int = CORPUS_USERS, sessions: int = CORPUS_SESSIONS) -> None:
    """The corpus run, in a child process: it starts and stops its own Ray, whatever the caller's."""
    command = [sys.executable, "-m", "personasim.analysis.static_build", "corpus", str(db),
               "--users", str(users), "--sessions", str(sessions)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the static embedder's corpus run failed ({' '.join(command)}):\n{done.stderr[-2000:]}")


def _corpus_run(db: Path, users: int, sessions: int) -> None:
    """Simulate and generate the questions; answering them would add nothing to the corpus."""
    from personasim.agents.embedding import use_embedder
    from personasim.analysis.questions import generate_questions
    from personasim.sim.config import RunConfig
    from personasim.sim.engine import run_simulation
    from personasim.sim.store import TrajectoryStore
    from personasim.sim.store_runs import start_run

    config = RunConfig.model_validate({"seed": CORPUS_SEED, "population": {"users": users},
                                       "schedule": {"sessions": sessions}, "embedder": "minilm"})
    use_embedder("minilm")
    store = TrajectoryStore(db)
    try:
        start_run(store, config.run_id, config)
        run_simulation(config, store)
        store.write_many([("questions", generate_questions(store.con, config.run_id, config.seed,
                                                           config=config.questions))])
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m personasim.analysis.static_build",
                                     description="Build the minilm-static embedder on this machine (once).")
    sub = parser.add_subparsers(dest="command")
    corpus = sub.add_parser("corpus", help="only the corpus run, into a store (what a build runs)")
    corpus.add_argument("db", type=Path)
    corpus.add_argument("--users", type=int, default=CORPUS_USERS)
    corpus.add_argument("--sessions", type=int, default=CORPUS_SESSIONS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.command == "corpus":
        _corpus_run(args.db, args.users, args.sessions)
    else:
        print(build_static_model())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
