"""Engine benchmarks (issue 6): throughput against a bare loop, LLM-bound efficiency, memory per user.

    python bench/engine_bench.py throughput [--users 200 --sessions 4]   # results/engine_throughput.json
    python bench/engine_bench.py throughput --baseline REF [--repeats 2] # ... and this commit against REF
    python bench/engine_bench.py answers [--users 24 --sessions 6]       # results/engine_answers.json
    python bench/engine_bench.py embedders [--users 24 --sessions 6]     # results/engine_embedders.json
    python bench/engine_bench.py llm [--latency 1.0 --concurrency 64]    # results/engine_llm.json
    python bench/engine_bench.py memory [--users 250 --sessions 6]       # results/engine_memory.json

Each is measured against a baseline in the same process and run: this machine is shared and
noisy, so ratios mean more than absolute rates.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.openai_server, for the LLM bench


def _config(users: int, sessions: int, seed: int = 0, **extra: object):  # type: ignore[no-untyped-def]
    from personasim.sim.config import RunConfig

    return RunConfig.model_validate({"seed": seed, "population": {"users": users}, "schedule": {"sessions": sessions},
                                     **extra})


def bare_loop(users: int, sessions: int) -> dict:
    """The same sessions in one process: no Ray, no store, no row transfer. The reference."""
    import torch

    from personasim.sim.shard import UserShard

    torch.set_num_threads(1)  # one core, as an actor gets
    config = _config(users, sessions)
    minilm = _time_minilm()
    started = time.perf_counter()
    shard = UserShard(config, list(range(users)))
    marks: list[tuple[float, int, float]] = []

    async def all_rounds() -> int:
        turns = 0
        for k in range(sessions):
            turns += len((await shard.run_round(k)).turns)
            marks.append((time.perf_counter(), turns, minilm[0]))
        return turns

    turns = asyncio.run(all_rounds())
    (t1, turns1, m1), (t_end, _, m_end) = marks[0], marks[-1]
    import personasim

    return {"turns": turns, "seconds": time.perf_counter() - started,
            "steady_turns_per_s": (turns - turns1) / (t_end - t1),
            # MiniLM's forward passes (texts not in the embedder's cache) in the steady rounds
            "steady_minilm_share": round((m_end - m1) / (t_end - t1), 3) if minilm[0] >= 0 else None,
            "code": str(Path(personasim.__file__).resolve().parents[1])}


def _time_minilm() -> list[float]:
    """Seconds spent in MiniLM's ``encode`` from now on ([-1.0] where the checkout has no
    ``agents/minilm.py``: a baseline from before it)."""
    try:
        from personasim.agents.minilm import MiniLM
    except ImportError:
        return [-1.0]
    spent = [0.0]
    encode = MiniLM.encode

    def timed(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return encode(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    MiniLM.encode = timed  # type: ignore[method-assign]
    return spent


def engine(users: int, sessions: int, actors: int) -> dict:
    """The real engine: Ray actors, the driver writing every batch to a DuckDB file."""
    import ray

    from personasim.sim.engine import run_simulation
    from personasim.sim.rows import RunRow
    from personasim.sim.store import TrajectoryStore

    config = _config(users, sessions, engine={"num_actors": actors})
    with tempfile.TemporaryDirectory() as tmp:
        store = TrajectoryStore(Path(tmp) / "bench.duckdb")
        store.write("runs", [RunRow(run_id=config.run_id, seed=0, config_json="{}", personasim_version="bench",
                                    world_data_hash="", package_versions_json="{}", users=users,
                                    sessions_per_user=sessions, status="running")])
        if not ray.is_initialized():
            ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        started = time.perf_counter()
        progress = {"sessions": 0, "first_round_done": 0.0}

        def on_sessions(n: int) -> None:
            progress["sessions"] += n
            if not progress["first_round_done"] and progress["sessions"] >= users:
                progress["first_round_done"] = time.perf_counter()

        counts = run_simulation(config, store, on_sessions=on_sessions)
        seconds = time.perf_counter() - started
        store.close()
    steady_turns = counts.turns * (sessions - 1) / sessions
    steady = steady_turns / (started + seconds - progress["first_round_done"])
    return {"turns": counts.turns, "seconds": seconds, "store_seconds": counts.store_seconds,
            "steady_turns_per_s": steady}


def throughput(args: argparse.Namespace) -> dict:
    """Turns per second with 1 and 2 actors against the bare loop on one core. ``steady``: after
    the first round, once every process has loaded its models (startup is reported apart)."""
    bare = bare_loop(args.users, args.sessions)
    bare_tps = bare["turns"] / bare["seconds"]
    result: dict = {"users": args.users, "sessions": args.sessions, "cpus": os.cpu_count(),
                    "bare_loop": {"turns_per_s": round(bare_tps, 1), "steady_turns_per_s": round(
                        bare["steady_turns_per_s"], 1), "steady_minilm_share": bare["steady_minilm_share"]},
                    "target_per_core_ratio": 0.8}
    for actors in (1, 2):
        run = engine(args.users, args.sessions, actors)
        tps = run["turns"] / run["seconds"]
        result[f"actors_{actors}"] = {
            "turns_per_s": round(tps, 1), "seconds": round(run["seconds"], 1),
            "steady_turns_per_s": round(run["steady_turns_per_s"], 1),
            "store_share": round(run["store_seconds"] / run["seconds"], 4),
            "per_core_ratio_vs_bare": round(tps / actors / bare_tps, 3),
            "steady_per_core_ratio_vs_bare": round(run["steady_turns_per_s"] / actors / bare["steady_turns_per_s"], 3),
        }
    return result


# -- this commit against another one, in one run ---------------------------------------------------

#: Copied into the shim folder: imports ``personasim`` from the shim (a checkout of another commit),
#: not from this checkout's editable install, in the bench's subprocess and any process it starts.
_SITECUSTOMIZE = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in str(getattr(f, "__module__", ""))]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in str(getattr(h, "__module__", ""))]
sys.path_importer_cache.clear()
"""


def checkout_importable(ref: str, folder: Path) -> tuple[Path, Path]:
    """``ref`` checked out into ``folder/src`` (a detached git worktree) and a shim folder that makes
    it importable as ``personasim`` (its own ``[tool.setuptools.package-dir]`` mapping, as symlinks).
    Returns (source, shim): run a process with ``PYTHONPATH=shim`` and its cwd outside ``source``."""
    import subprocess
    import tomllib

    root = Path(__file__).resolve().parents[1]
    source, shim = folder / "src", folder / "shim"
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "-f", str(source), ref],
                   check=True, capture_output=True, text=True)
    mapping = tomllib.loads((source / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    package = shim / "personasim"
    package.mkdir(parents=True)
    for item in (source / mapping["personasim"]).iterdir():
        (package / item.name).symlink_to(item)
    for name, path in mapping.items():
        parts = name.split(".")
        if len(parts) == 2 and not (package / parts[1]).exists():
            (package / parts[1]).symlink_to(source / path, target_is_directory=True)
    (shim / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return source, shim


def _bare_in_subprocess(users: int, sessions: int, shim: Path | None) -> dict:
    """``bare_loop`` in a fresh process: this checkout's code, or (``shim``) another commit's."""
    import subprocess

    env = dict(os.environ)
    if shim is not None:
        env["PYTHONPATH"] = str(shim) + os.pathsep + env.get("PYTHONPATH", "")
    # this bench's own loop on both sides, from a copy outside any checkout: the script puts its
    # parent's parent on sys.path, which must not be a folder with a ``personasim`` directory in it
    runner = Path(tempfile.mkdtemp(prefix="engine_bare_")) / "bench" / "engine_bench.py"
    runner.parent.mkdir()
    runner.write_text(Path(__file__).read_text())
    out = subprocess.run([sys.executable, str(runner), "bare", "--users", str(users), "--sessions", str(sessions)],
                         cwd=str(runner.parent), env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the bare loop failed ({'baseline' if shim else 'current'} code):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def against_baseline(ref: str, users: int, sessions: int, repeats: int) -> dict:
    """The same sessions on this checkout and on ``ref``, alternating, ``repeats`` times each; the
    best steady rate of each counts (a shared machine only ever makes a run slower)."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="engine_baseline_") as tmp:
        source, shim = checkout_importable(ref, Path(tmp))
        try:
            commit = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], check=True,
                                    capture_output=True, text=True).stdout.strip()
            runs: dict[str, list[dict]] = {"baseline": [], "current": []}
            for _ in range(repeats):
                runs["baseline"].append(_bare_in_subprocess(users, sessions, shim))
                runs["current"].append(_bare_in_subprocess(users, sessions, None))
        finally:
            root = Path(__file__).resolve().parents[1]
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(source)],
                           capture_output=True, text=True)
    best = {name: max(r["steady_turns_per_s"] for r in rs) for name, rs in runs.items()}
    if any(r["turns"] != runs["current"][0]["turns"] for r in runs["current"]):
        raise RuntimeError("the current code simulated different numbers of turns on repeats: not deterministic")
    return {"ref": ref, "commit": commit, "users": users, "sessions": sessions, "repeats": repeats,
            "turns": {name: rs[0]["turns"] for name, rs in runs.items()},
            "code": {name: rs[0]["code"] for name, rs in runs.items()},
            "steady_turns_per_s": {name: round(v, 1) for name, v in best.items()},
            "total_seconds": {name: round(min(r["seconds"] for r in rs), 1) for name, rs in runs.items()},
            "speedup": round(best["current"] / best["baseline"], 2), "target_speedup": 4.0,
            **_minilm_ceiling(runs["current"], best)}


def _minilm_ceiling(current: list[dict], best: dict[str, float]) -> dict:
    """The speedup the current code would reach if everything but MiniLM's forward passes took no
    time: what float32 MiniLM alone leaves possible, from the best current run's MiniLM share."""
    share = next(r["steady_minilm_share"] for r in current if r["steady_turns_per_s"] == best["current"])
    if not share:
        return {"current_steady_minilm_share": share}
    return {"current_steady_minilm_share": share,
            "speedup_if_only_minilm_took_time": round(best["current"] / share / best["baseline"], 2)}


# -- evaluation: one question at a time, per user in batches, in a pool of actors -------------------

class _OneQuestionAtATime:
    """The embedding reader as evaluation used it before issue 17: one question per call."""

    name = "embedding"

    def __init__(self, reader: object) -> None:
        self.reader = reader

    def answer(self, context_items: list[str], query: str, options: list[str]) -> object:
        return self.reader.answer(context_items, query, options)  # type: ignore[attr-defined]


def answers(args: argparse.Namespace) -> dict:
    """Milliseconds per answer of the default run's evaluation, several ways in one run: one
    question at a time (the old path), a few users' questions in one batch, and a pool of actors;
    each with MiniLM, and the batched ways with ``minilm-bf16`` too. Each starts from an empty
    embedding cache, so every way embeds every text itself."""
    import duckdb
    import ray
    import torch

    from personasim.agents.embedding import Embedder, default_embedder
    from personasim.analysis import answer_pool
    from personasim.analysis.evaluate import answer_questions
    from personasim.analysis.reader import EmbeddingReader
    from personasim.api import run
    from personasim.sim.store_read import read_questions

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "answers.duckdb"
        config = _config(args.users, args.sessions)
        summary = run(config, db)
        con = duckdb.connect(str(db), read_only=True)
        questions = read_questions(con, summary.run_id)
        strategies = [s.strategy for s in summary.scores]
        reader = EmbeddingReader(default_embedder())
        bf16 = EmbeddingReader(Embedder(precision="bfloat16"))
        timings: dict[str, dict] = {}
        chosen: dict[str, list[int]] = {}
        ways = [("one_at_a_time", _OneQuestionAtATime(reader), 1), ("per_user_batches", reader, 1),
                ("actor_pool", reader, cores), ("per_user_batches_bf16", bf16, 1), ("actor_pool_bf16", bf16, cores)]
        answer_pool.MIN_PARALLEL_ANSWERS = 0  # the pool even for this small run: the rate is what is measured
        for name, answering, workers in ways:
            getattr(answering, "reader", answering).embedder.clear_cache()
            torch.set_num_threads(cores)  # the driver alone: every core, as `personasim eval` has
            started = time.perf_counter()
            if workers > 1:  # what `personasim eval` runs: users answered (and audited) in actors
                rows = _scored_in_pool(con, summary.run_id, questions, strategies, config.memory.settings, answering,
                                       workers)
            else:
                rows = answer_questions(con, summary.run_id, questions, strategies, answering)
            seconds = time.perf_counter() - started
            chosen[name] = [r.chosen_index for r in rows]
            accuracy = {s: round(sum(r.correct for r in rows if r.strategy == s) / len(questions), 4)
                        for s in strategies}
            timings[name] = {"answers": len(rows), "seconds": round(seconds, 2),
                             "ms_per_answer": round(1000 * seconds / len(rows), 2), "workers": workers,
                             "accuracy": accuracy}
        floor = _options_floor(questions, len(questions) * len(strategies), cores)
        con.close()
    ray.shutdown()
    base = timings["one_at_a_time"]["ms_per_answer"]
    for timing in timings.values():
        timing["speedup"] = round(base / timing["ms_per_answer"], 2)
    exact = [name for name in timings if not name.endswith("_bf16")]
    return {"users": args.users, "sessions": args.sessions, "cpus": cores, "strategies": strategies,
            "questions": len(questions), "ways": timings, "target_speedup": 10.0,
            "same_choices": all(chosen[n] == chosen["one_at_a_time"] for n in exact),
            "bf16_same_choices_as_minilm": sum(a == b for a, b in zip(chosen["per_user_batches_bf16"],
                                                                        chosen["one_at_a_time"], strict=True)),
            "bf16_same_choices_batched_and_pool": chosen["per_user_batches_bf16"] == chosen["actor_pool_bf16"],
            "options_floor": floor,
            "note": "actor_pool is personasim eval's way (analysis.scoring: answers and the artifact audit in "
                    "actors) and includes starting its actors (each imports torch and loads MiniLM)"}


def _scored_in_pool(con, run_id: str, questions: list, strategies: list[str], settings, reader,  # type: ignore[no-untyped-def]
                    workers: int) -> list:
    """``personasim eval``'s way (``analysis.scoring``): the users' questions answered and audited in
    a pool of ``workers`` actors, as rows in question order, each question's strategies in order."""
    from personasim.analysis.asking import AnsweringSpec
    from personasim.analysis.profiles import load_profiles
    from personasim.analysis.scoring import score_stored
    from personasim.sim.rows import AnswerRow

    spec = AnsweringSpec(run_id=run_id, strategies=strategies, memory=settings, **AnsweringSpec.reader_settings(reader))
    rows: dict[tuple[str, str], AnswerRow] = {}

    def done(scored) -> None:  # type: ignore[no-untyped-def]
        for record in scored.answers.to_pylist():
            rows[(record["question_id"], record["strategy"])] = AnswerRow.model_construct(**record)

    score_stored(con, spec, questions, load_profiles(con, run_id), reader, workers, done)
    return [rows[(q.question_id, s)] for q in questions for s in strategies]


def _options_floor(questions: list, answers: int, cores: int) -> dict:
    """What float32 MiniLM must spend on the options alone, per answer: every distinct option text
    of the run embedded once (the least any reader embedding them can do), timed with every core.
    Beside it, one 4096 x 384 x 1536 product (MiniLM's feed-forward shape): how close MiniLM's
    linear layers run to what torch reaches on this CPU."""
    import torch

    from personasim.agents.embedding import Embedder

    torch.set_num_threads(cores)
    model = Embedder().model  # the bundled MiniLM itself, without the embedder's text cache
    texts = list(dict.fromkeys(o for q in questions for o in q.options))
    tokens = sum(len(e.ids) for e in model.tokenizer.encode_batch(texts))
    model.encode(texts[:64])  # warm: the first pass prepares torch's kernels
    started = time.perf_counter()
    model.encode(texts)
    seconds = time.perf_counter() - started
    flop_per_token = 6 * 2 * (384 * 1152 + 384 * 384 + 2 * 384 * 1536)  # six layers' linear products
    a, w = torch.randn(4096, 384), torch.randn(1536, 384)
    torch.nn.functional.linear(a, w)
    product_started = time.perf_counter()
    for _ in range(20):
        torch.nn.functional.linear(a, w)
    product = (time.perf_counter() - product_started) / 20
    return {"distinct_options": len(texts), "option_tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds), "ms_per_answer": round(1000 * seconds / answers, 2),
            "linear_gflops_in_minilm": round(tokens * flop_per_token / seconds / 1e9),
            "linear_gflops_one_product": round(2 * 4096 * 384 * 1536 / product / 1e9)}


def embedders(args: argparse.Namespace) -> dict:
    """The default run with each embedder end to end (``RunConfig.embedder``: simulation, questions
    and the embedding reader), accuracy per strategy and wall time, in one bench run; MiniLM's run
    re-answered by the static and the bfloat16 readers alone; and how many of its answers each
    reader chose alike. An embedder could replace MiniLM as the default only within a point of it
    on every strategy with the same ordering (``can_be_default``)."""
    from personasim.agents.embedding import use_embedder
    from personasim.agents.static_embedding import static_model_file
    from personasim.analysis.evaluate import evaluate
    from personasim.analysis.static_build import build_static_model
    from personasim.api import run

    names = ("minilm", "minilm-bf16", "minilm-static")
    out: dict = {"users": args.users, "sessions": args.sessions, "runs": {}}
    built = static_model_file().exists()
    started = time.perf_counter()
    build_static_model()  # once per machine: timed apart from the runs
    out["static_build_seconds"] = None if built else round(time.perf_counter() - started, 1)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            db = Path(tmp) / f"{name}.duckdb"
            summary = run(_config(args.users, args.sessions, embedder=name), db)
            out["runs"][name] = {
                "wall_seconds": summary.wall_seconds, "simulation_seconds": summary.simulation_seconds,
                "evaluation_seconds": round(summary.wall_seconds - summary.simulation_seconds, 2),
                "questions": summary.questions,
                "accuracy": {s.strategy: round(s.accuracy, 4) for s in summary.scores},
            }
        minilm_db = Path(tmp) / "minilm.duckdb"
        out["minilm_run_reread"] = {}
        for name in names[1:]:
            reread = evaluate(minilm_db, embedder=name, n_boot=200, workers=1)
            out["minilm_run_reread"][name] = {
                "accuracy": {r["strategy"]: round(r["accuracy"], 4) for r in reread.tables["by_strategy"]},
                "seconds": reread.wall_seconds, "same_choices_as_minilm": _same_choices(minilm_db, name)}
        use_embedder("minilm")
    base = out["runs"]["minilm"]["accuracy"]
    order = sorted(base, key=base.get)
    for name in names[1:]:
        other = out["runs"][name]["accuracy"]
        gap = round(100 * max(abs(base[s] - other[s]) for s in base), 1)
        same_order = order == sorted(other, key=other.get)
        out["runs"][name].update(same_ordering=same_order, max_gap_points=gap,
                                 can_be_default=same_order and gap <= 1.0)
    return out


def _same_choices(db: Path, reader_model: str) -> dict:
    """Of MiniLM's answers in ``db``, how many ``reader_model``'s answers chose alike."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    same, total = con.execute(
        "SELECT count(*) FILTER (WHERE a.chosen_index = b.chosen_index), count(*) FROM answers a JOIN answers b "
        "ON a.question_id = b.question_id AND a.strategy = b.strategy "
        "WHERE a.reader_model IS NULL AND b.reader_model = ?", [reader_model]).fetchone()
    con.close()
    return {"same": same, "answers": total}


def llm(args: argparse.Namespace) -> dict:
    """calls/s achieved against a server with a fixed latency L, with C calls allowed: / (C / L).

    The chatbot keeps no memory here (small prompts): this measures how well the engine keeps C
    calls in flight, not how fast Python serialises long histories on a 2-core machine."""
    import ray

    from personasim.sim.engine import run_simulation
    from personasim.sim.rows import RunRow
    from personasim.sim.store import TrajectoryStore
    from tests.openai_server import FakeOpenAIServer

    if not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    with FakeOpenAIServer(latency_s=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        backend = {"kind": "openai", "model": "latency", "base_url": server.base_url,
                   "max_concurrency": args.concurrency, "timeout_s": 120}
        config = _config(args.users, args.sessions, chatbot_backend=backend, memory={"strategies": ["none"],
                         "chatbot": "none"}, engine={"cache": "off"})
        store = TrajectoryStore(Path(tmp) / "llm.duckdb")
        store.write("runs", [RunRow(run_id=config.run_id, seed=0, config_json="{}", personasim_version="bench",
                                    world_data_hash="", package_versions_json="{}", users=args.users,
                                    sessions_per_user=args.sessions, status="running")])
        started = time.perf_counter()
        run_simulation(config, store)
        seconds = time.perf_counter() - started
        store.close()
        calls, peak = server.calls, server.max_in_flight
        done = sorted(server.finished_at)
    ideal = args.concurrency / args.latency
    # saturated rate: the middle 80% of calls, past actor start-up and before the last users' tail
    lo, hi = done[len(done) // 10], done[len(done) * 9 // 10]
    steady = (len(done) * 9 // 10 - len(done) // 10) / (hi - lo)
    return {"latency_s": args.latency, "concurrency": args.concurrency, "users": args.users,
            "sessions": args.sessions, "calls": calls, "seconds": round(seconds, 1),
            "calls_per_s": round(calls / seconds, 1), "ideal_calls_per_s": ideal,
            "efficiency": round(calls / seconds / ideal, 3), "steady_calls_per_s": round(steady, 1),
            "steady_efficiency": round(steady / ideal, 3), "max_in_flight_seen": peak, "target_efficiency": 0.9}


def _held_by_users(users: int, sessions: int, memory_config: dict | None) -> dict:
    """What each user of a shard holds after ``sessions`` sessions: a recursive ``sys.getsizeof``
    over everything reachable from the user and not from what every user of the process shares
    (the session context with its catalogs and clients, the embedder, the topic index)."""
    import statistics

    from horizon_bench import _walk, deep_size

    from personasim.agents.embedding import default_embedder
    from personasim.agents.memory import topics
    from personasim.sim.shard import UserShard

    config = _config(users, sessions, **({"memory": memory_config} if memory_config else {}))
    shard = UserShard(config, list(range(users)))

    async def rounds() -> None:
        for k in range(sessions):
            await shard.run_round(k)

    asyncio.run(rounds())
    gc.collect()
    shared = set(_walk([shard.context, default_embedder(), topics._indexes], set()))
    per_user = [deep_size([u], shared) for u in shard.users]
    # as held: compressed JSON between rounds (``SimulatedUser.hold``); ``u.persona`` would unpack it
    parts: dict[str, list[int]] = {"persona": [deep_size([u._persona or u._packed_persona], shared)
                                               for u in shard.users]}
    for name in shard.users[0].memories:
        parts[f"memory:{name}"] = [deep_size([u.memories[name]], shared) for u in shard.users]
    return {"users": users, "sessions": sessions,
            "bytes_per_user": round(statistics.mean(per_user)), "p95": sorted(per_user)[int(0.95 * len(per_user))],
            "max": max(per_user), "parts_mean": {k: round(statistics.mean(v)) for k, v in parts.items()}}


def _process_caches() -> dict:
    """Entries and bounds of the caches every user of a process shares (fixed per process)."""
    from personasim.agents.directive import _parse_directive
    from personasim.agents.embedding import default_embedder
    from personasim.agents.tokens import _count_short

    embedder = default_embedder()
    return {"embeddings": [len(getattr(embedder, "_cache", ())), getattr(embedder, "cache_size", 0)],
            "token_counts": [_count_short.cache_info().currsize, _count_short.cache_info().maxsize],
            "directives": [_parse_directive.cache_info().currsize, _parse_directive.cache_info().maxsize]}


def memory(args: argparse.Namespace) -> dict:
    """Bytes each user holds between sessions (persona, memories, counters), measured per user
    rather than as a difference of heaps: a heap difference also counts the per-process caches
    (hint banks, token counts, parsed directives, embeddings) filling up, which are bounded and
    shared, so it grew with the population measured rather than with the users in it."""
    import psutil

    configs = {"default": None, "minimal": {"strategies": ["none"], "chatbot": "none"}}
    result: dict = {"users": args.users, "sessions": args.sessions, "target_bytes_per_user": 20_000}
    for name, memory_config in configs.items():
        result[name] = {"memory": memory_config or "run default (none, full_history, agentic; chatbot agentic)",
                        **_held_by_users(args.users, args.sessions, memory_config)}
    result["process_caches_entries_and_bounds"] = _process_caches()
    available = psutil.virtual_memory().total
    actor_overhead = 1.2 * 2**30  # an actor with torch, MiniLM and full caches, before any user
    result["machine_memory_bytes"] = available
    result["largest_population_estimate"] = {
        name: int((available * 0.8 - 2 * actor_overhead) / result[name]["bytes_per_user"]) for name in configs
    }
    result["target_met"] = result["default"]["bytes_per_user"] <= 20_000
    return result


# -- start-up: from the command to the first sessions --------------------------------------------

_FIRST_SESSIONS_PROBE = """import sys, time
started = time.time()
import personasim.api as api
from personasim.cli import main
inner = api.run_simulation
marks = {}
def probed(config, store, on_sessions=None, resume=False):
    marks["simulation_starts"] = time.time() - started
    def counted(n):
        marks.setdefault("first_sessions_stored", time.time() - started)
        if on_sessions:
            on_sessions(n)
    return inner(config, store, on_sessions=counted, resume=resume)
api.run_simulation = probed
sys.argv = ["personasim", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("MARKS", time.time() - started, marks.get("simulation_starts"), marks.get("first_sessions_stored"))
"""


def startup(args: argparse.Namespace) -> dict:
    """The demo as a new user runs it (``personasim run --db demo.duckdb``, the CLI in a fresh
    process), timed from the command: when the simulation starts (Ray up, store open), when the
    first sessions are stored (a shard's whole first round: the first turn started before it),
    and the end. ``--repeats`` runs, the best of each mark (a shared machine only slows a run).
    The default first; then each other of ``--embedders`` (``--embedder NAME`` added to the command)."""
    import subprocess

    def timed(flags: list[str]) -> dict:
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for n in range(args.repeats):
                db = Path(tmp) / f"demo-{n}.duckdb"
                started = time.perf_counter()
                out = subprocess.run([sys.executable, "-c", _FIRST_SESSIONS_PROBE, "run", "--db", str(db), *flags],
                                     capture_output=True, text=True, cwd=tmp)
                wall = time.perf_counter() - started
                marks = [line for line in out.stdout.splitlines() if line.startswith("MARKS")]
                if out.returncode != 0 or not marks:
                    raise RuntimeError(f"the demo run failed:\n{out.stderr[-3000:]}")
                _, end, sim_start, first = marks[-1].split()
                runs.append({"wall_seconds": round(wall, 1), "simulation_starts_s": round(float(sim_start), 1),
                             "first_sessions_stored_s": round(float(first), 1)})
        return {"runs": runs, "best": {k: min(r[k] for r in runs) for k in runs[0]}}

    default = timed([])
    best = default["best"]
    others = {name: timed(["--embedder", name]) for name in args.embedders.split(",") if name and name != "minilm"}
    return {"command": "personasim run --db demo.duckdb (24 users x 6 sessions, default config)", **default,
            "targets": {"wall_seconds": 25.0, "first_turn_within_s": 8.0},
            "wall_target_met": best["wall_seconds"] < 25.0,
            "first_turn_target_met": best["first_sessions_stored_s"] < 8.0,
            "with_embedder": {name: {**timing, "wall_target_met": timing["best"]["wall_seconds"] < 25.0}
                              for name, timing in others.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--users", type=int, default=200)
    t.add_argument("--sessions", type=int, default=4)
    t.add_argument("--baseline", default=None, metavar="REF",
                   help="also run the bare loop on commit REF (a temporary worktree) and report the speedup")
    t.add_argument("--repeats", type=int, default=2, help="--baseline: runs of each side, alternating")
    b = sub.add_parser("bare", help="the bare loop alone, as JSON on stdout (what --baseline runs)")
    b.add_argument("--users", type=int, default=100)
    b.add_argument("--sessions", type=int, default=4)
    a = sub.add_parser("answers")
    a.add_argument("--users", type=int, default=24)
    a.add_argument("--sessions", type=int, default=6)
    e = sub.add_parser("embedders")
    e.add_argument("--users", type=int, default=24)
    e.add_argument("--sessions", type=int, default=6)
    m = sub.add_parser("llm")
    m.add_argument("--latency", type=float, default=1.0)
    m.add_argument("--concurrency", type=int, default=64)
    m.add_argument("--users", type=int, default=1024)
    m.add_argument("--sessions", type=int, default=2)
    r = sub.add_parser("memory")
    r.add_argument("--users", type=int, default=100)
    r.add_argument("--sessions", type=int, default=6)
    u = sub.add_parser("startup", help="the demo from the command: simulation start, first sessions, end")
    u.add_argument("--repeats", type=int, default=2)
    u.add_argument("--embedders", default="minilm,minilm-bf16",
                   help="the demo again with each of these embedders (--embedder NAME); minilm is the default run")
    args = parser.parse_args(argv)
    if args.bench == "bare":
        print(json.dumps(bare_loop(args.users, args.sessions)))
        return {}
    result = {"throughput": throughput, "llm": llm, "memory": memory, "answers": answers,
              "embedders": embedders, "startup": startup}[args.bench](args)
    if args.bench == "throughput" and args.baseline:
        result["against_baseline"] = against_baseline(args.baseline, args.users, args.sessions, args.repeats)
    result["date"] = time.strftime("%Y-%m-%d")
    out = RESULTS / f"engine_{args.bench}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
