"""Online environment: a policy plays the chatbot to live simulated users, Gymnasium-style.

``PersonaEnv`` is one conversation at a time (``gymnasium.Env``): ``reset()`` starts the next
session of a simulated user and returns its first message; ``step(reply)`` returns the user's
next message, the reward from the persona's true state (``rl/env_reward.py``) and whether the
session is over. ``PersonaVectorEnv`` runs many at once (``gymnasium.vector.VectorEnv``, same-step
autoreset) with its users held in Ray actors, as a simulated run's are.

Every step is written to the store as it happens (``env_steps``, ``rewards``), and every finished
episode as a session like any run's (``sessions``, ``turns``, ``memory_snapshots``, drift): an
online run can be evaluated, exported and analysed like a simulated one.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from personasim.analysis.static_build import prepare_embedder
from personasim.rl.env_reward import RewardConfig
from personasim.rl.env_worker import Action, EnvWorker, SlotResult
from personasim.sim.config import RunConfig, later_fields_at_default
from personasim.sim.store import TrajectoryStore
from personasim.sim.store_runs import RunStatus, set_run_status, start_run


def _default_run() -> RunConfig:
    """A year of weekly sessions for 16 users: long enough for a training run, small enough to start fast."""
    return RunConfig(population={"users": 16}, schedule={"sessions": 52, "mean_gap_days": 7.0})


class EnvConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: RunConfig = Field(default_factory=_default_run, description="The simulated users and their world.")
    reward: RewardConfig = Field(default_factory=RewardConfig)
    max_steps_per_episode: int | None = Field(
        default=None, ge=1, description="Truncate an episode after this many policy replies (default: the session's).")
    label: str = Field(default="", description="Tells apart online runs with the same users (e.g. a training id).")

    @property
    def run_id(self) -> str:
        identity = self.model_dump_json(exclude={"run": {"engine": True, **later_fields_at_default(self.run)}})
        return "env-" + hashlib.blake2b(identity.encode(), digest_size=6).hexdigest()


class Conversation(gymnasium.spaces.Space):
    """Chat messages (``[{"role", "content"}]``): TRL's conversational format, so an observation
    is a prompt as it is."""

    def __init__(self) -> None:
        super().__init__(shape=None, dtype=None)

    def contains(self, x: Any) -> bool:
        return isinstance(x, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in x)

    def sample(self, mask: Any = None, probability: Any = None) -> list[dict[str, str]]:
        return [{"role": "user", "content": "Can you help me plan my week?"}]


class Reply(gymnasium.spaces.Space):
    """The policy's reply: any text (or an ``Action`` with log-probabilities)."""

    def __init__(self) -> None:
        super().__init__(shape=None, dtype=None)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str | Action)

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        return "Happy to help. What matters most to you here?"


def _as_action(action: str | Action | dict[str, Any]) -> Action:
    if isinstance(action, Action):
        return action
    if isinstance(action, str):
        return Action(text=action)
    if isinstance(action, dict):
        return Action.model_validate(action)
    raise TypeError(f"an action is the reply text (str) or Action(text, logprobs); got {type(action).__name__}")


class _Workers:
    """The env slots, spread over workers: Ray actors, or one worker in this process."""

    def __init__(self, config: EnvConfig, num_envs: int, num_actors: int | None) -> None:
        users = config.run.population.users
        if num_envs > users:
            raise ValueError(f"num_envs={num_envs} needs at least that many users; run.population.users is {users}")
        slot_users = {slot: list(range(slot, users, num_envs)) for slot in range(num_envs)}
        self.loop: asyncio.AbstractEventLoop | None = None
        prepare_embedder(config.run.embedder)  # built here, before any worker needs it
        args = (config.run, config.run_id, config.reward)
        if num_actors == 0:
            self.loop = asyncio.new_event_loop()
            self.workers: list[Any] = [EnvWorker(*args, slot_users, config.max_steps_per_episode)]
            self.owner = dict.fromkeys(slot_users, 0)
            return
        import ray

        from personasim.sim.engine import ensure_ray

        ensure_ray(config.run.engine.address, connect_timeout_s=config.run.engine.connect_timeout_s)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        n = max(1, min(num_actors or cpus, num_envs))
        self.owner = {slot: slot % n for slot in slot_users}
        remote = ray.remote(EnvWorker).options(num_cpus=min(1.0, cpus / n))
        self.workers = [
            remote.remote(*args, {s: u for s, u in slot_users.items() if self.owner[s] == w},
                          config.max_steps_per_episode, w, n)
            for w in range(n)
        ]

    def call(self, method: str, per_worker: dict[int, tuple]) -> list[Any]:
        """Call ``method`` on the workers named (with their arguments), concurrently; results in order."""
        if self.loop is not None:
            worker = self.workers[0]
            out = []
            for args in per_worker.values():
                result = getattr(worker, method)(*args)
                out.append(self.loop.run_until_complete(result) if asyncio.iscoroutine(result) else result)
            return out
        import ray

        return ray.get([getattr(self.workers[w], method).remote(*args) for w, args in per_worker.items()])

    def close(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            return
        import ray

        for worker in self.workers:
            ray.kill(worker)


class PersonaVectorEnv(gymnasium.vector.VectorEnv):
    """``num_envs`` conversations at once, each with its own users; see the module docstring.

    ``db`` is a store path or an open ``TrajectoryStore`` (then the caller closes it). The online
    run's id is ``config.run_id``; one that is already in the store is refused unless
    ``overwrite``. Set ``policy_version`` before a step to record which policy wrote it."""

    metadata = {"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP}

    def __init__(
        self, config: EnvConfig | None = None, db: str | Path | TrajectoryStore = "personasim.duckdb",
        num_envs: int = 8, num_actors: int | None = None, overwrite: bool = False,
    ) -> None:
        self.closed = True  # until it is built: nothing for gymnasium's __del__ to close
        self.config = config or EnvConfig()
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.num_envs = num_envs
        self.single_observation_space = Conversation()
        self.single_action_space = Reply()
        self.observation_space = gymnasium.spaces.Tuple([Conversation() for _ in range(num_envs)])
        self.action_space = gymnasium.spaces.Tuple([Reply() for _ in range(num_envs)])
        self.policy_version: str | None = None
        self.run_id = self.config.run_id
        self._owns_store = not isinstance(db, TrajectoryStore)
        self.store = TrajectoryStore(db) if not isinstance(db, TrajectoryStore) else db
        self._start_run(overwrite)
        try:
            self._workers = _Workers(self.config, num_envs, num_actors)
        except BaseException:
            self._close_store("failed")
            raise
        self._observations: list[list[dict[str, str]] | None] = [None] * num_envs
        self.closed = False

    # -- gymnasium ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[tuple[list[dict[str, str]], ...], dict[str, Any]]:
        """Start an episode in every slot (or in ``options["slots"]``). Episodes follow the run's
        seed, so ``seed`` is ignored: the same config gives the same users and sessions."""
        slots = list((options or {}).get("slots", range(self.num_envs)))
        results = self._reset_slots(slots)
        return tuple(self._observations), self._infos(results)  # type: ignore[arg-type]

    def step(self, actions: Sequence[str | Action | dict[str, Any]]
             ) -> tuple[tuple[list[dict[str, str]], ...], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if len(actions) != self.num_envs:
            raise ValueError(f"step takes one action per env ({self.num_envs}), got {len(actions)}")
        results = self.step_slots({i: _as_action(a) for i, a in enumerate(actions)})
        done = [r.slot for r in results if r.terminated or r.truncated]
        final_obs = [None] * self.num_envs
        for r in results:
            if r.terminated or r.truncated:
                final_obs[r.slot] = r.observation  # type: ignore[call-overload]
        rewards = np.array([r.reward for r in results], dtype=np.float64)
        terminated = np.array([r.terminated for r in results])
        truncated = np.array([r.truncated for r in results])
        infos = self._infos(results)
        if done:  # same-step autoreset: the new episode's first message is this step's observation
            restarted = {r.slot: r for r in self._reset_slots(done)}
            infos["final_obs"] = final_obs
            infos["next_episode"] = [restarted[s].info if s in restarted else None for s in range(self.num_envs)]
        return tuple(self._observations), rewards, terminated, truncated, infos  # type: ignore[return-value]

    def close(self, **kwargs: Any) -> None:
        """Write the personas' final truth, mark the run completed, stop the workers."""
        if self.closed:
            return
        self.closed = True
        try:
            everyone = {w: () for w in range(len(self._workers.workers))}
            open_sessions = self._workers.call("close_episodes", everyone)
            self.store.write_many([pair for part in open_sessions for batch in part for pair in batch.tables()])
            batches = self._workers.call("personas", everyone)
            self.store.replace_rows(
                {table: {"run_id": self.run_id} for table in ("personas", "preferences", "sensitive_facts")},
                [pair for batch in batches for pair in batch.tables()])
            self._workers.close()
        finally:
            self._close_store("completed")

    # -- beyond gymnasium: per-slot calls, for the online GRPO glue -----------------------
    def step_slots(self, actions: dict[int, Action]) -> list[SlotResult]:
        """Step only the named slots (no autoreset); their rows are written before this returns."""
        by_worker: dict[int, dict[int, Action]] = {}
        for slot, action in actions.items():
            if self._observations[slot] is None:
                raise RuntimeError(f"env slot {slot} has no episode running; call reset() first")
            by_worker.setdefault(self._workers.owner[slot], {})[slot] = _as_action(action)
        calls = {w: (acts, self.policy_version) for w, acts in by_worker.items()}
        results = sorted((r for part in self._workers.call("step", calls) for r in part), key=lambda r: r.slot)
        self._write(results)
        for r in results:
            self._observations[r.slot] = None if r.terminated or r.truncated else r.observation
        return results

    def reset_slots(self, slots: Sequence[int]) -> list[SlotResult]:
        return self._reset_slots(list(slots))

    def score(self, slot: int, replies: Sequence[str]) -> list[dict[str, float]]:
        """Reward components each candidate reply would earn in ``slot`` now, without stepping."""
        (components,) = self._workers.call("score", {self._workers.owner[slot]: (slot, list(replies))})
        return components

    def observation(self, slot: int) -> list[dict[str, str]] | None:
        return self._observations[slot]

    # -- internals ------------------------------------------------------------------------
    def _reset_slots(self, slots: list[int]) -> list[SlotResult]:
        by_worker: dict[int, list[int]] = {}
        for slot in slots:
            by_worker.setdefault(self._workers.owner[slot], []).append(slot)
        results = sorted((r for part in self._workers.call("reset", {w: (s,) for w, s in by_worker.items()})
                          for r in part), key=lambda r: r.slot)
        self._write(results)
        for r in results:
            self._observations[r.slot] = r.observation
        return results

    def _write(self, results: list[SlotResult]) -> None:
        """Every slot's rows in one transaction, one insert per table: an insert costs DuckDB about
        2 ms whatever its size, and a vector step of 16 slots has four or five tables each."""
        by_table: dict[str, list[Any]] = {}
        for r in results:
            for table, rows in r.tables():
                by_table.setdefault(table, []).extend(rows)
        self.store.write_many(list(by_table.items()))

    def _infos(self, results: list[SlotResult]) -> dict[str, Any]:
        keys = sorted({k for r in results for k in r.info})
        by_slot = {r.slot: r for r in results}
        infos: dict[str, Any] = {k: [by_slot[s].info.get(k) if s in by_slot else None for s in range(self.num_envs)]
                                 for k in keys}
        infos["reward_components"] = [by_slot[s].components if s in by_slot else None for s in range(self.num_envs)]
        return infos

    def _start_run(self, overwrite: bool) -> None:
        start_run(self.store, self.run_id, self.config.run, overwrite=overwrite, described="same EnvConfig",
                  replace_hint="pass overwrite=True to replace it, or set EnvConfig.label to start another")

    def _close_store(self, status: RunStatus) -> None:
        set_run_status(self.store, self.run_id, status)
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> PersonaVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PersonaEnv(gymnasium.Env):
    """One conversation at a time, in this process (no Ray): the simplest way to try a policy.

    ``reset()`` → (messages, info); ``step(reply)`` → (messages, reward, terminated, truncated,
    info). After an episode ends, call ``reset()`` for the next session of the next user."""

    metadata = {"render_modes": []}

    def __init__(self, config: EnvConfig | None = None, db: str | Path | TrajectoryStore = "personasim.duckdb",
                 overwrite: bool = False) -> None:
        self.vector = PersonaVectorEnv(config, db, num_envs=1, num_actors=0, overwrite=overwrite)
        self.observation_space = Conversation()
        self.action_space = Reply()
        self.run_id = self.vector.run_id

    @property
    def policy_version(self) -> str | None:
        return self.vector.policy_version

    @policy_version.setter
    def policy_version(self, value: str | None) -> None:
        self.vector.policy_version = value

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[list[dict[str, str]], dict[str, Any]]:
        super().reset(seed=seed)
        (result,) = self.vector.reset_slots([0])
        return result.observation, result.info

    def step(self, action: str | Action | dict[str, Any]
             ) -> tuple[list[dict[str, str]], float, bool, bool, dict[str, Any]]:
        (result,) = self.vector.step_slots({0: _as_action(action)})
        info = {**result.info, "reward_components": result.components}
        return result.observation, result.reward, result.terminated, result.truncated, info

    def close(self) -> None:
        self.vector.close()
