"""Online GRPO: TRL's GRPOTrainer samples replies, live simulated users score them, and the
conversations move on step by step in the store."""

from __future__ import annotations

import json
import math

import pytest

from personasim.rl.env import PersonaVectorEnv
from personasim.rl.online import OnlineGRPO
from personasim.sim.config import RunConfig
from personasim.sim.store import TrajectoryStore


def test_grpo_trains_on_live_simulated_users(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from tests.tiny_models import build_tiny_causal_lm

    path = build_tiny_causal_lm(tmp_path / "tiny")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    store = TrajectoryStore(tmp_path / "online.duckdb")
    online = OnlineGRPO.start(store, RunConfig(population={"users": 6}), num_envs=6, label="t", num_actors=0)
    prompts_seen: dict[str, list] = {}
    original = online._prompts

    def recording():
        for row in original():
            prompts_seen[row["env_key"]] = row["prompt"]
            yield row

    online._prompts = recording  # type: ignore[method-assign]
    scored: dict[str, float] = {}  # the reward the trainer got for each group's first sample
    score = online.reward_funcs[0]

    def recording_reward(env_key, **kwargs):
        rewards = score(env_key=env_key, **kwargs)
        for key, reward in zip(env_key, rewards, strict=True):
            scored.setdefault(key, reward)
        return rewards

    recording_reward.__name__ = score.__name__
    args = GRPOConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4,
                      num_generations=2, max_completion_length=8, report_to=[], logging_steps=1, use_cpu=True,
                      save_strategy="no", shuffle_dataset=False)
    trainer = GRPOTrainer(model=model, reward_funcs=[recording_reward], args=args,
                          train_dataset=online.train_dataset(), processing_class=tokenizer,
                          callbacks=[online.callback])
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    logged = [e for e in trainer.state.log_history if "rewards/simulated_user_reward/mean" in e]
    assert len(logged) == 2 and all("env/alignment" in e for e in logged)
    steps = store.con.execute(
        "SELECT state_json, policy_version, reward, action FROM env_steps ORDER BY policy_version, step_id").fetchall()
    assert len(steps) == online.steps_taken == 4, "two prompts per generation batch, one step each, two batches"
    assert [v for _, v, _, _ in steps] == ["step-0", "step-0", "step-1", "step-1"]
    for state, _, reward, _ in steps:
        (key,) = [k for k, prompt in prompts_seen.items() if prompt == json.loads(state)]
        assert reward == pytest.approx(scored[key]), "the stored step is the sample the trainer was rewarded for"
    online.close()
    assert store.con.execute("SELECT status FROM runs").fetchall() == [("completed",)]
    store.close()


def test_a_shuffled_or_overdrawn_stream_fails_clearly(tmp_path):
    store = TrajectoryStore(tmp_path / "s.duckdb")
    env = PersonaVectorEnv(_small_env_config(), db=store, num_envs=2, num_actors=0)
    online = OnlineGRPO(env)
    stream = online._prompts()
    next(stream), next(stream)
    with pytest.raises(RuntimeError, match="raise num_envs"):
        next(stream)
    reward = online.reward_funcs[0]
    with pytest.raises(RuntimeError, match="was the dataset shuffled"):
        reward(prompts=[[]], completions=["hi"], env_key=["not-a-live-prompt"])
    online.close()
    store.close()


def _small_env_config():
    from personasim.rl.env import EnvConfig

    return EnvConfig(run={"population": {"users": 2}, "schedule": {"sessions": 2}})
