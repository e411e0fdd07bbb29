"""The online environment: episodes are sessions, steps land in the store as they happen, rewards
come from the persona's true state, Ray actors and in-process workers write the same rows."""

from __future__ import annotations

import json

import duckdb
import gymnasium
import pytest

from personasim.personas.catalog import load_topic_catalog
from personasim.rl.env import EnvConfig, PersonaEnv, PersonaVectorEnv
from personasim.rl.env_reward import RewardConfig, StepTruth, reaction, score_reply
from personasim.rl.env_worker import Action, EnvExhausted

SMALL = {"population": {"users": 4}, "schedule": {"sessions": 3}}


def _policy(observation: list[dict[str, str]]) -> str:
    """A deterministic stand-in policy: its reply depends only on what it was shown."""
    last = observation[-1]["content"]
    return f"Happy to help with that. You said: {last[:60]}"


def _rows(con, table: str, order: str) -> list[tuple]:
    return con.execute(f"SELECT * EXCLUDE (run_id) FROM {table} ORDER BY {order}").fetchall()


def test_single_env_writes_every_step_as_it_happens(tmp_path):
    env = PersonaEnv(EnvConfig(run=SMALL), db=tmp_path / "env.duckdb")
    assert isinstance(env, gymnasium.Env)
    con = env.vector.store.con
    obs, info = env.reset()
    assert env.observation_space.contains(obs) and obs[0]["role"] == "system" and obs[-1]["role"] == "user"
    env.policy_version = "v1"
    steps, done = 0, False
    while not done:
        reply = Action(text=_policy(obs), logprobs=[-0.5, -1.25])
        shown = obs
        obs, reward, terminated, truncated, step_info = env.step(reply)
        steps += 1
        done = terminated or truncated
        (row,) = con.execute(
            "SELECT state_json, action, reward, terminated, policy_version, logprobs, user_reply FROM env_steps "
            "WHERE step_index = ? AND episode_id = ?", [steps - 1, info["episode_id"]]).fetchall()
        assert json.loads(row[0]) == shown, "the stored state is exactly what the policy was shown"
        assert row[1] == reply.text and row[3] == terminated and row[4] == "v1" and row[5] == [-0.5, -1.25]
        weighted = con.execute("SELECT sum(value * weight) FROM rewards WHERE step_id LIKE ?",
                               [f"{info['episode_id']}/step/{steps - 1:03d}"]).fetchall()[0][0]
        assert row[2] == pytest.approx(reward) == pytest.approx(weighted)
        if not done:
            assert row[6] == obs[-1]["content"], "the user's next turn is the next observation"
            assert not con.execute("SELECT count(*) FROM sessions").fetchall()[0][0], "session rows come at the end"
    turns = con.execute("SELECT role, text FROM turns WHERE session_id = ? ORDER BY turn_index",
                        [info["episode_id"]]).fetchall()
    assert [t for r, t in turns if r == "assistant"] == [_policy(json.loads(s)) for (s,) in con.execute(
        "SELECT state_json FROM env_steps ORDER BY step_index").fetchall()]
    assert con.execute("SELECT status, n_turns FROM sessions").fetchall() == [("completed", 2 * steps)]
    assert con.execute("SELECT count(DISTINCT strategy) FROM memory_snapshots").fetchall()[0][0] >= 1
    env.close()
    con = duckdb.connect(str(tmp_path / "env.duckdb"), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchall() == [("completed",)]
    assert con.execute("SELECT count(*) FROM personas").fetchall()[0][0] == 4
    con.close()
    from personasim import evaluate

    summary = evaluate(tmp_path / "env.duckdb", env.run_id)  # an online run is evaluated like any run
    assert summary.questions > 0 and {s["strategy"] for s in summary.tables["by_strategy"]} >= {"agentic"}


def test_vector_env_on_ray_actors_writes_what_one_process_writes(tmp_path, ray_session):
    """Same config, same policy: byte-identical steps, rewards and turns, whoever holds the users.
    Same-step autoreset: a finished episode's last messages are in info, the next one starts."""
    stores = {}
    for actors in (0, 2):
        with PersonaVectorEnv(EnvConfig(run=SMALL), db=tmp_path / f"{actors}.duckdb", num_envs=2,
                              num_actors=actors) as env:
            obs, _ = env.reset()
            finished = 0
            for _ in range(8):
                obs, rewards, terminated, truncated, infos = env.step([_policy(o) for o in obs])
                assert rewards.shape == (2,)
                for slot in range(2):
                    if terminated[slot]:
                        finished += 1
                        assert infos["final_obs"][slot][-1]["role"] == "assistant"
                        assert infos["next_episode"][slot]["episode_id"] != infos["episode_id"][slot]
                        assert len(obs[slot]) == 2, "the next episode starts at once (same-step autoreset)"
            assert finished >= 2
        stores[actors] = duckdb.connect(str(tmp_path / f"{actors}.duckdb"), read_only=True)
    a, b = stores[0], stores[2]
    for table, order in [("env_steps", "step_id"), ("rewards", "reward_id"), ("turns", "turn_id"),
                         ("sessions", "session_id"), ("memory_snapshots", "snapshot_id"),
                         ("preferences", "preference_id"), ("drift_events", "event_id")]:
        assert _rows(a, table, order) == _rows(b, table, order), table
    assert _rows(a, "env_steps", "step_id")


def test_rewards_follow_the_true_state():
    catalog = load_topic_catalog()
    topic = catalog.topics[0]
    liked, disliked, stale = topic.options[0], topic.options[1], topic.options[2]
    truth = StepTruth(
        in_play=[topic.id], liked_now=[(topic.id, liked.id)], disliked_now=[(topic.id, disliked.id)],
        stale=[(topic.id, stale.id)], current_statements=[f"I love {liked.label}."],
        stale_statements=[f"I love {stale.label}."],
        off_topic_statements=["I go hiking in the mountains every weekend."],
        sensitive_values=["4111 1111 1111 1111"],
    )
    from personasim.agents.embedding import default_embedder

    embedder, config = default_embedder(), RewardConfig()

    def score(text: str) -> dict[str, float]:
        return score_reply(text, truth, catalog, embedder, config)

    good, old, bad = (f"I recommend {o.label}." for o in (liked, stale, disliked))
    assert score(good)["recommendation"] == 1.0 and reaction(good, truth, catalog).startswith("Sounds good")
    assert score(old)["recommendation"] == -1.0 and "any more" in reaction(old, truth, catalog)
    assert score(bad)["recommendation"] == -1.0 and "don't really like" in reaction(bad, truth, catalog)
    assert score("Let me think about it.")["recommendation"] == 0.0
    assert reaction("Let me think about it.", truth, catalog) is None
    assert score(good)["alignment"] > 0 > score(old)["alignment"]
    assert score(good + " Also, go hiking in the mountains this weekend.")["over_personalisation"] == -1.0
    assert score(good)["over_personalisation"] == 0.0
    assert score("Your card 4111 1111 1111 1111 is on file.")["privacy"] == -1.0


def test_a_liked_recommendation_is_accepted_and_scored_by_the_live_user(tmp_path):
    env = PersonaEnv(EnvConfig(run=SMALL), db=tmp_path / "env.duckdb")
    env.reset()
    worker = env.vector._workers.workers[0]
    truth = worker._truth(worker.slots[0].episode)
    topic, option = truth.liked_now[0]
    reply = f"I recommend {worker.shard.catalog.topic(topic).option(option).label}."
    assert env.vector.score(0, [reply, "Okay."])[0]["recommendation"] == 1.0
    obs, reward, *_ = env.step(reply)
    assert obs[-1]["content"].startswith("Sounds good, I'll give that a try.")
    assert reward >= 1.0
    env.close()


def test_env_errors_name_the_fix(tmp_path):
    from personasim.sim.store import StoreError

    with pytest.raises(ValueError, match="needs at least that many users"):
        PersonaVectorEnv(EnvConfig(run=SMALL), db=tmp_path / "a.duckdb", num_envs=5, num_actors=0)
    config = EnvConfig(run={"population": {"users": 1}, "schedule": {"sessions": 1}}, max_steps_per_episode=1)
    env = PersonaEnv(config, db=tmp_path / "b.duckdb")
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("hello")
    env.reset()
    *_, terminated, truncated, _ = env.step("hello")
    assert truncated and not terminated
    with pytest.raises(EnvExhausted, match="raise run.schedule.sessions"):
        env.reset()
    env.close()
    with pytest.raises(StoreError, match="set EnvConfig.label"):
        PersonaEnv(config, db=tmp_path / "b.duckdb")
    other = PersonaEnv(config.model_copy(update={"label": "second"}), db=tmp_path / "b.duckdb")
    assert other.run_id != env.run_id
    other.close()
    con = duckdb.connect(str(tmp_path / "b.duckdb"), read_only=True)
    assert con.execute("SELECT status FROM sessions WHERE run_id = ?", [env.run_id]).fetchall() == [("truncated",)]
