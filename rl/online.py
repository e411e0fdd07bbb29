"""Online GRPO: TRL's ``GRPOTrainer`` trains a chatbot on live simulated users.

The glue is two TRL-native pieces, so nothing in TRL is patched:

- a streaming ``train_dataset`` whose prompts are the live conversations: each row is the
  observation of an env slot waiting for the chatbot's reply (``prompt``, plus ``env_slot`` and
  ``env_key`` naming that moment);
- a reward function that scores every completion of a group against the same user at the same
  moment (``PersonaVectorEnv.score``: the persona's true state), then moves that conversation on
  with one of them (the first sample by default: an on-policy trajectory), so the user answers it
  and the next prompt from this slot is the next turn. Every such step lands in ``env_steps`` with
  the trainer's global step as ``policy_version``.

A slot is "in flight" from the moment its prompt is read until its reward is computed; the data
loader reads one generation batch ahead, so ``num_envs`` must cover about three generation
batches of prompts. Single process only (each process would need its own users).

TRL's reward functions receive no sampling log-probabilities, so online GRPO steps store
``logprobs`` as null; a policy driving ``PersonaVectorEnv`` directly passes them with ``Action``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Literal

from personasim.rl.env import EnvConfig, PersonaVectorEnv
from personasim.rl.env_reward import COMPONENTS, total_reward
from personasim.rl.env_worker import Action
from personasim.rl.rewards import completion_text
from personasim.sim.config import RunConfig
from personasim.sim.store import TrajectoryStore


class OnlineGRPO:
    """Prompts from, and rewards by, the simulated users of a ``PersonaVectorEnv``."""

    def __init__(self, env: PersonaVectorEnv, advance_with: Literal["first", "best"] = "first") -> None:
        if advance_with not in ("first", "best"):
            raise ValueError(f"advance_with is 'first' or 'best', got {advance_with!r}")
        self.env = env
        self.advance_with = advance_with
        self.env_run_id = env.run_id
        self._free: deque[int] = deque(range(env.num_envs))
        self._in_flight: dict[str, int] = {}
        self.steps_taken = 0
        self.episodes_finished = 0
        env.reset()
        self.reward_funcs: list[Callable[..., list[float]]] = [self._named_reward()]
        self.callback = _policy_version_callback(env)

    @classmethod
    def start(
        cls, store: TrajectoryStore, run_config: RunConfig, num_envs: int = 16, label: str = "",
        users: int | None = None, num_actors: int | None = None, **env_options: Any,
    ) -> OnlineGRPO:
        """An online env over ``run_config``'s users (at least ``num_envs`` of them), in ``store``."""
        population = run_config.population.model_copy(update={"users": max(users or 0, num_envs,
                                                                           run_config.population.users)})
        schedule = run_config.schedule.model_copy(update={"sessions": max(run_config.schedule.sessions, 52)})
        run = run_config.model_copy(update={"population": population, "schedule": schedule})
        config = EnvConfig(run=run, label=label, **env_options)
        env = PersonaVectorEnv(config, store, num_envs=num_envs, num_actors=num_actors, overwrite=True)
        return cls(env)

    def train_dataset(self) -> Any:
        """An endless ``datasets.IterableDataset`` of live prompts (use ``max_steps`` and
        ``shuffle_dataset=False``: a shuffle buffer would read far ahead of the conversations)."""
        from datasets import IterableDataset

        # datasets fingerprints the generator by pickling it: hand it a name, not the live env
        _LIVE[self.env_run_id] = self
        return IterableDataset.from_generator(_live_prompts, gen_kwargs={"source": self.env_run_id})

    def close(self) -> None:
        _LIVE.pop(self.env_run_id, None)
        self.env.close()

    # -- internals ------------------------------------------------------------------------
    def _prompts(self) -> Iterator[dict[str, Any]]:
        while True:
            if not self._free:
                raise RuntimeError(
                    f"all {self.env.num_envs} simulated conversations are waiting for their rewards; the data loader "
                    "reads a generation batch ahead, so raise num_envs to at least 3x the prompts per generation batch"
                )
            slot = self._free.popleft()
            observation = self.env.observation(slot)
            if observation is None:
                self.env.reset_slots([slot])
                observation = self.env.observation(slot)
            key = f"{self.env.run_id}:{slot}:{self.steps_taken}:{len(self._in_flight)}:{_last_turn(observation)}"
            self._in_flight[key] = slot
            yield {"prompt": observation, "env_slot": slot, "env_key": key}

    def _named_reward(self) -> Callable[..., list[float]]:
        def simulated_user_reward(
            prompts: list[Any], completions: list[Any], env_key: list[str], trainer_state: Any = None,
            log_metric: Callable[[str, float], None] | None = None, **kwargs: Any,
        ) -> list[float]:
            """Each completion scored by the live simulated user's true state; one per group moves
            the conversation on."""
            if trainer_state is not None:
                self.env.policy_version = f"step-{trainer_state.global_step}"
            groups: dict[str, list[int]] = {}
            for i, key in enumerate(env_key):
                groups.setdefault(key, []).append(i)
            rewards = [0.0] * len(completions)
            sums = dict.fromkeys(COMPONENTS, 0.0)
            for key, members in groups.items():
                slot = self._in_flight.pop(key, None)
                if slot is None:
                    raise RuntimeError(f"no live conversation is waiting for prompt {key}; was the dataset shuffled?")
                texts = [completion_text(completions[i]) for i in members]
                scored = self.env.score(slot, texts)
                totals = [total_reward(c, self.env.config.reward) for c in scored]
                for i, total, parts in zip(members, totals, scored, strict=True):
                    rewards[i] = total
                    for name in COMPONENTS:
                        sums[name] += parts[name]
                chosen = 0 if self.advance_with == "first" else max(range(len(texts)), key=lambda j: totals[j])
                (result,) = self.env.step_slots({slot: Action(text=texts[chosen])})
                self.steps_taken += 1
                if result.terminated or result.truncated:
                    self.episodes_finished += 1
                    self.env.reset_slots([slot])
                self._free.append(slot)
            if log_metric is not None and completions:
                for name in COMPONENTS:
                    log_metric(f"env/{name}", sums[name] / len(completions))
            return rewards

        return simulated_user_reward


_LIVE: dict[str, OnlineGRPO] = {}


def _live_prompts(source: str) -> Iterator[dict[str, Any]]:
    if source not in _LIVE:
        raise RuntimeError(f"online env {source} is closed; its dataset cannot be read any more")
    yield from _LIVE[source]._prompts()


def _last_turn(observation: list[dict[str, str]] | None) -> int:
    return len(observation or [])


def _policy_version_callback(env: PersonaVectorEnv) -> Any:
    from transformers import TrainerCallback

    class PolicyVersionCallback(TrainerCallback):
        """Tells the env which policy (the trainer's global step) writes the next replies."""

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            env.policy_version = f"step-{state.global_step}"

    return PolicyVersionCallback()
