"""The run loop: Ray actors hold user shards; the driver is the store's single writer.

Each shard advances in rounds (session k of each of its users), so every user's sessions run in
simulated time order while all users of a shard run concurrently; shards do not wait for each
other. Batches are written as soon as a shard returns them, which is what the progress bar counts.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import ray
from pydantic import BaseModel

from personasim.personas.generator import persona_id_for
from personasim.sim.config import RunConfig
from personasim.sim.shard import PersonaBatch, SessionBatch, UserShard, wave_bounds
from personasim.sim.store import TrajectoryStore


class SimulationCounts(BaseModel):
    users: int = 0
    sessions: int = 0
    turns: int = 0
    drift_events: int = 0
    actors: int = 0
    failed_sessions: int = 0
    actor_restarts: int = 0
    store_seconds: float = 0.0
    wall_seconds: float = 0.0


class ClusterUnreachableError(ConnectionError):
    """Nothing answers at the Ray address a run was given."""


def ensure_ray(address: str | None = None, num_cpus: int | None = None, connect_timeout_s: float = 30.0) -> None:
    """Start an embedded Ray (or join ``address``) unless this process is already connected.

    An address is probed first (a TCP connection to its host and port, retried for
    ``connect_timeout_s``): Ray itself retries a dead address forever, printing "Failed to connect
    to GCS" while the run holds its store."""
    if ray.is_initialized():
        return
    kwargs: dict = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
    if address:
        _probe(address, connect_timeout_s)
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)


def stop_embedded_ray() -> None:
    """Shut down this process's Ray now, without the waits Ray's own exit handler adds: 1.5-2 s
    at the end of every command, a tenth of the default run.

    At exit Ray sleeps 0.5 s so that its workers' log lines can print (``ensure_ray`` sends none
    to the driver), and its autoscaler's monitor, which an embedded Ray never uses, answers
    SIGTERM by reporting to the GCS that Ray has just killed, so Ray waits a full second before
    killing it. The monitor of a Ray this process started is killed first; a driver joined to a
    cluster only disconnects (``ray.shutdown`` stops nothing there). The monitor is found through
    Ray's node object, which is not a public API: if that changes, the shutdown is Ray's own."""
    if not ray.is_initialized():
        return
    node = getattr(ray._private.worker, "_global_node", None)
    try:
        monitors = node.all_processes.get("monitor", []) if node is not None and node.is_head() else []
        for info in monitors:
            info.process.kill()
            info.process.wait(timeout=5)
    except Exception:  # Ray's internals moved: its own shutdown still stops everything, only slower
        pass
    ray.shutdown()


def _probe(address: str, timeout_s: float) -> None:
    """Return once something listens at ``address`` (host:port, or ray://host:port); ``auto`` and
    other forms without a port are left to Ray."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=min(5.0, timeout_s)):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise ClusterUnreachableError(
                    f"no Ray cluster answers at {address} (tried for {timeout_s:.0f} s: {exc.strerror or exc}); "
                    "start one there with `ray start --head`, fix --address, or raise engine.connect_timeout_s"
                ) from None
            time.sleep(0.5)


def plan_shards(users: int, cpus: int, num_actors: int | None) -> list[list[int]]:
    """Round-robin user indices over actors: a few actors with many users each."""
    n = num_actors or max(1, min(cpus, math.ceil(users / 4)))
    n = min(n, users)
    return [list(range(i, users, n)) for i in range(n)]


def run_simulation(
    config: RunConfig,
    store: TrajectoryStore,
    on_sessions: Callable[[int], None] | None = None,
    resume: bool = False,
) -> SimulationCounts:
    """Run every round, writing each shard's batch as it arrives (one transaction per batch).

    ``resume``: sessions the store already holds are replayed, not written again, so a run killed
    at any point continues exactly where each user stopped. An actor that dies is restarted by Ray
    (up to ``engine.max_actor_restarts``); it replays what it missed and the round is re-sent."""
    started = time.perf_counter()
    ensure_ray(config.engine.address, connect_timeout_s=config.engine.connect_timeout_s)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    shards = plan_shards(config.population.users, cpus, config.engine.num_actors)
    cpu_per_actor = min(1.0, cpus / len(shards))
    config = _with_fault_markers(config, store)
    parts = _parts_folder(config, store) if config.engine.store_mode == "parquet" else None
    store_seconds = 0.0
    if resume:  # whatever shards wrote as parts before the interruption, whichever mode resumes now
        loading = time.perf_counter()
        store.ingest_parts(_parts_folder(config, store))
        store_seconds = time.perf_counter() - loading
    elif parts is not None:
        shutil.rmtree(parts, ignore_errors=True)
    stored, failed = _stored_sessions(store, config.run_id) if resume else ({}, {})
    servers = _model_servers(config)
    actor_cls = ray.remote(UserShard)
    actors = [
        actor_cls.options(
            num_cpus=cpu_per_actor, max_restarts=config.engine.max_actor_restarts, max_task_retries=0
        ).remote(config, shard, i, len(shards), {role: pool[i % len(pool)] for role, pool in servers.items()})
        for i, shard in enumerate(shards)
    ]
    # each shard runs a round in waves of at most engine.wave_users users (UserShard.run_round)
    ids = [
        [frozenset(persona_id_for(u) for u in shard[start:start + n]) for start, n in wave_bounds(
            len(shard), config.engine.wave_users)]
        for shard in shards
    ]
    # restarts are counted as new actor instances seen, not as errors caught (see UserShard.incarnation)
    seen = [{name} for name in ray.get([a.incarnation.remote() for a in actors])]
    counts = SimulationCounts(users=config.population.users, actors=len(actors), store_seconds=store_seconds)
    restarts = [0] * len(actors)
    batches = 0
    try:
        rounds = config.schedule.sessions

        def submit(i: int, k: int, w: int) -> ray.ObjectRef:
            done, failures = ids[i][w] & stored.get(k, frozenset()), _failed_upto(failed, k)
            if parts is not None:
                return actors[i].run_round_to_parts.remote(k, str(parts), done, failures, w)
            return actors[i].run_round.remote(k, done, failures, w)

        def after(i: int, k: int, w: int) -> tuple[int, int] | None:
            """A shard's next (round, wave): every wave of a round, then the next round."""
            if w + 1 < len(ids[i]):
                return k, w + 1
            return (k + 1, 0) if k + 1 < rounds else None

        # no barrier between rounds: a shard's users never meet another shard's, so each shard moves
        # on to its next wave as soon as it returns one, and the driver writes that one meanwhile;
        # time order holds within a user (its sessions are in successive rounds of one wave)
        pending = {submit(i, 0, 0): (i, 0, 0) for i in range(len(actors))} if rounds else {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, k, w = pending.pop(ready[0])
            try:
                batch: SessionBatch = ray.get(ready[0])
            except ray.exceptions.RayActorError as error:
                seen[i].add(_await_actor(actors[i], seen[i], config, error))
                restarts[i] = len(seen[i]) - 1
                pending[submit(i, k, w)] = (i, k, w)  # the new instance replays what it missed, then runs it
                continue
            for row in batch.sessions:
                if row.status == "failed":
                    failed.setdefault(k, set()).add(row.persona_id)
            step = after(i, k, w)
            if step is not None:
                pending[submit(i, *step)] = (i, *step)
            written = time.perf_counter()
            store.write_many(batch.tables())
            counts.store_seconds += time.perf_counter() - written
            batches += 1
            _maybe_kill_driver(config, batches)
            counts.sessions += len(batch.sessions)
            counts.turns += batch.part_rows.get("turns", 0) if parts is not None else len(batch.turns)
            counts.drift_events += (
                batch.part_rows.get("drift_events", 0) if parts is not None else len(batch.drift_events)
            )
            counts.failed_sessions += sum(r.status == "failed" for r in batch.sessions)
            if on_sessions:
                on_sessions(len(batch.sessions))
        if not store.con.execute("SELECT count(*) FROM personas WHERE run_id = ?", [config.run_id]).fetchall()[0][0]:
            if parts is not None:
                ray.get([a.personas_to_parts.remote(str(parts)) for a in actors])
            else:
                finals: list[PersonaBatch] = ray.get([a.personas.remote() for a in actors])
                written = time.perf_counter()
                store.write_many(table for final in finals for table in final.tables())
                counts.store_seconds += time.perf_counter() - written
    finally:
        for a in actors + [s for pool in servers.values() for s in pool]:
            ray.kill(a)
        if parts is not None:  # on success and on failure alike: what the shards wrote lands in DuckDB
            written = time.perf_counter()
            try:
                store.ingest_parts(parts)
            except Exception:
                if sys.exc_info()[0] is None:
                    raise
                # already failing: keep the parts for `--resume`, report the original error
            counts.store_seconds += time.perf_counter() - written
    counts.actor_restarts = sum(restarts)
    counts.wall_seconds = time.perf_counter() - started
    return counts


def _await_actor(actor: ray.actor.ActorHandle, seen: set[str], config: RunConfig, error: Exception) -> str:
    """The name of the actor's live instance, once Ray has it back (the same name when the error
    was only a moment of unavailability); ``error`` again when Ray has spent its restarts or the
    actor is not back within ``engine.actor_restart_wait_s``."""
    if len(seen) > config.engine.max_actor_restarts:  # every restart Ray allows has been used
        raise error
    deadline = time.monotonic() + config.engine.actor_restart_wait_s
    while True:
        try:
            return ray.get(actor.incarnation.remote(), timeout=max(0.1, deadline - time.monotonic()))
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            if time.monotonic() >= deadline:
                raise error from None
            time.sleep(0.2)


def _stored_sessions(store: TrajectoryStore, run_id: str) -> tuple[dict[int, frozenset[str]], dict[int, set[str]]]:
    """Sessions already in the store, per session index; and which of them failed."""
    stored: dict[int, set[str]] = {}
    failed: dict[int, set[str]] = {}
    for persona_id, k, status in store.con.execute(
        "SELECT persona_id, session_index, status FROM sessions WHERE run_id = ?", [run_id]
    ).fetchall():
        stored.setdefault(k, set()).add(persona_id)
        if status == "failed":
            failed.setdefault(k, set()).add(persona_id)
    return {k: frozenset(v) for k, v in stored.items()}, failed


def _model_servers(config: RunConfig) -> dict[str, list]:
    """Shared model actors for the transformers backends (one pool when both roles use one model)."""
    if not config.engine.shared_models:
        return {}
    from personasim.agents.model_actor import start_model_servers

    pools: dict[str, list] = {}
    for role, backend in (("user", config.user_backend), ("chatbot", config.chatbot_backend)):
        if backend.kind != "transformers":
            continue
        same = next((r for r, b in (("user", config.user_backend),) if r in pools and b == backend), None)
        pools[role] = pools[same] if same else start_model_servers(backend)
    return pools


def _parts_folder(config: RunConfig, store: TrajectoryStore) -> Path:
    root = Path(config.engine.parts_dir) if config.engine.parts_dir else Path(str(store.path) + ".parts")
    return root / config.run_id


def _failed_upto(failed: dict[int, set[str]], k: int) -> dict[int, frozenset[str]]:
    return {j: frozenset(v) for j, v in failed.items() if j <= k}


def _with_fault_markers(config: RunConfig, store: TrajectoryStore) -> RunConfig:
    faults = config.engine.faults
    if faults is None or faults.marker_dir is not None:
        return config
    faults = faults.model_copy(update={"marker_dir": str(store.path.resolve().parent)})
    return config.model_copy(update={"engine": config.engine.model_copy(update={"faults": faults})})


def _maybe_kill_driver(config: RunConfig, batches: int) -> None:
    """Fault injection: a real ``kill -9`` of this process, after a committed batch."""
    faults = config.engine.faults
    if faults is not None and faults.kill_driver_after_batches == batches:
        os.kill(os.getpid(), signal.SIGKILL)
