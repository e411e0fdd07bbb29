"""Simulated users that a policy talks to, one session (episode) at a time, step by step.

A worker holds many env slots (it runs in a Ray actor, or in process for a single env). Each slot
serves a fixed set of users in rotation; an episode is the next session of the slot's next user,
run by the same per-user runner as a simulated run's session (``SimulatedUser`` in
``sim/session.py``): drift before it, the revelation plan, user turns recorded with their token
usage, reveals counted, forget requests, exposure drift, memories fed. Only the chatbot is
replaced: the policy writes its replies, and sees the prompt a simulated chatbot sees
(``agents/chatbot.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from personasim.agents.chatbot import chatbot_messages
from personasim.agents.tokens import count_tokens
from personasim.rl.env_reward import COMPONENTS, RewardConfig, reaction, score_reply, step_truth, total_reward
from personasim.sim.config import RunConfig
from personasim.sim.ids import session_id
from personasim.sim.rows import EnvStepRow, RewardRow
from personasim.sim.session import PreparedSession, SessionBatch, SimulatedUser
from personasim.sim.shard import PersonaBatch, UserShard


class Action(BaseModel):
    """A policy's reply, with its token log-probabilities where the policy gives them."""

    text: str
    logprobs: list[float] | None = None


class SlotResult(BaseModel):
    """What one slot returns after a reset or a step, with the rows to store."""

    slot: int
    observation: list[dict[str, str]]
    reward: float = 0.0
    components: dict[str, float] = Field(default_factory=dict)
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = Field(default_factory=dict)
    steps: list[EnvStepRow] = Field(default_factory=list)
    rewards: list[RewardRow] = Field(default_factory=list)
    session: SessionBatch | None = None

    def tables(self) -> list[tuple[str, list[BaseModel]]]:
        out: list[tuple[str, list[BaseModel]]] = [("env_steps", list(self.steps)), ("rewards", list(self.rewards))]
        return out + (self.session.tables() if self.session is not None else [])


class EnvExhausted(RuntimeError):
    """Every user of a slot has had all its scheduled sessions."""


@dataclass
class _Episode:
    user: SimulatedUser
    session: PreparedSession
    step_index: int = 0

    @property
    def k(self) -> int:
        return self.session.index

    @property
    def episode_id(self) -> str:
        return session_id(self.user.persona.id, self.k)


@dataclass
class _Slot:
    users: list[int]
    turn: int = 0
    episode: _Episode | None = None


class EnvWorker:
    def __init__(
        self, run: RunConfig, run_id: str, reward: RewardConfig, slots: dict[int, list[int]],
        max_steps_per_episode: int | None = None, worker_index: int = 0, num_workers: int = 1,
    ) -> None:
        indices = sorted({u for users in slots.values() for u in users})
        self.shard = UserShard(run, indices, worker_index, num_workers, run_id=run_id)
        self.run_id = run_id
        self.reward = reward
        self.max_steps = max_steps_per_episode
        self.users = {u.persona.index: u for u in self.shard.users}
        self.sessions_done = dict.fromkeys(self.users, 0)
        self.slots = {slot: _Slot(users) for slot, users in slots.items()}
        self.scripted_user = not run.user_backend.is_llm
        self._embedder: Any = None

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from personasim.agents.embedding import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    # -- the env protocol, per slot ---------------------------------------------------------
    async def reset(self, slots: list[int]) -> list[SlotResult]:
        """Start the next episode in each slot; an episode still running there ends as truncated."""
        out = []
        for slot in slots:
            state = self.slots[slot]
            closing = await self._close_early(state) if state.episode is not None else None
            state.episode = self._begin(slot, state)
            await state.episode.user.opening_turn(state.episode.session)
            result = self._observe(slot, state.episode)
            result.session = closing
            out.append(result)
        return out

    async def step(self, actions: dict[int, Action], policy_version: str | None = None) -> list[SlotResult]:
        import asyncio

        return list(await asyncio.gather(*(self._step(slot, a, policy_version) for slot, a in actions.items())))

    def score(self, slot: int, texts: list[str]) -> list[dict[str, float]]:
        """Reward components each candidate reply would get now, without taking a step (GRPO
        scores every sample of a group against the same moment of the same user)."""
        episode = self._running(slot)
        truth = self._truth(episode)
        return [score_reply(text, truth, self.shard.catalog, self.embedder, self.reward) for text in texts]

    async def close_episodes(self) -> list[SessionBatch]:
        """End every running episode as truncated, so its turns are stored like any session's."""
        return [await self._close_early(state) for state in self.slots.values() if state.episode is not None]

    def personas(self) -> PersonaBatch:
        return self.shard.personas()

    # -- internals ------------------------------------------------------------------------
    def _running(self, slot: int) -> _Episode:
        episode = self.slots[slot].episode
        if episode is None:
            raise RuntimeError(f"env slot {slot} has no episode running; call reset() first")
        return episode

    def _begin(self, slot: int, state: _Slot) -> _Episode:
        for _ in range(len(state.users)):
            index = state.users[state.turn % len(state.users)]
            state.turn += 1
            user = self.users[index]
            if self.sessions_done[index] < len(user.times):
                k = self.sessions_done[index]
                self.sessions_done[index] += 1
                return _Episode(user=user, session=user.prepare(k))
        sessions = len(self.users[state.users[0]].times)
        raise EnvExhausted(
            f"env slot {slot}: its {len(state.users)} user(s) have had all {sessions} scheduled sessions; "
            "raise run.schedule.sessions or run.population.users in the EnvConfig"
        )

    def _observe(self, slot: int, episode: _Episode) -> SlotResult:
        return SlotResult(slot=slot, observation=self._messages(episode), info=self._info(episode))

    def _messages(self, episode: _Episode) -> list[dict[str, str]]:
        """What the chatbot would see: its memory (selected for the latest message), then the session."""
        session = episode.session
        return chatbot_messages(session.live_memory, [(r.role, r.text) for r in session.records],
                                session.dialogue.reply_tokens)

    def _info(self, episode: _Episode) -> dict[str, Any]:
        plan = episode.session.plan
        return {
            "persona_id": episode.user.persona.id, "episode_id": episode.episode_id, "session_index": episode.k,
            "step_index": episode.step_index, "scenario_id": plan.scenario.id, "scenario": plan.scenario.title,
            "time": episode.session.time.isoformat(),
        }

    def _truth(self, episode: _Episode) -> Any:
        session = episode.session
        user_texts = [r.text for r in session.records if r.role == "user"]
        return step_truth(episode.user.persona, session.time, session.plan.scenario.topics, user_texts,
                          self.shard.catalog)

    async def _step(self, slot: int, action: Action, policy_version: str | None) -> SlotResult:
        state = self.slots[slot]
        episode = self._running(slot)
        seen = self._messages(episode)
        truth = self._truth(episode)
        components = score_reply(action.text, truth, self.shard.catalog, self.embedder, self.reward)
        reward = total_reward(components, self.reward)
        replied_at = episode.session.time
        terminated = episode.session.plan_done
        truncated = not terminated and self.max_steps is not None and episode.step_index + 1 >= self.max_steps
        prefix = None
        if self.scripted_user and not terminated and not truncated:
            prefix = reaction(action.text, truth, self.shard.catalog)
        said = await episode.user.policy_turn(episode.session, action.text, answer=not truncated, prefix=prefix)
        user_reply = said.text if said is not None else None
        step_id = f"{episode.episode_id}/step/{episode.step_index:03d}"
        persona_id = episode.user.persona.id
        row = EnvStepRow(
            run_id=self.run_id, step_id=step_id, episode_id=episode.episode_id, persona_id=persona_id,
            session_index=episode.k, step_index=episode.step_index, time=replied_at,
            state_json=json.dumps(seen, ensure_ascii=False), action=action.text,
            action_tokens=count_tokens(action.text), reward=reward, user_reply=user_reply, terminated=terminated,
            truncated=truncated, policy_version=policy_version, logprobs=action.logprobs,
        )
        weights = self.reward.weights()
        rewards = [RewardRow(run_id=self.run_id, reward_id=f"{step_id}/{name}", step_id=step_id, persona_id=persona_id,
                             name=name, value=components[name], weight=weights[name]) for name in COMPONENTS]
        info = self._info(episode)
        episode.step_index += 1
        session = None
        if terminated or truncated:
            session = await self._finish(episode, "completed" if terminated else "truncated")
            state.episode = None
        return SlotResult(
            slot=slot, observation=self._messages(episode), reward=reward, components=components,
            terminated=terminated, truncated=truncated, info=info, steps=[row], rewards=rewards, session=session,
        )

    async def _finish(self, episode: _Episode, status: str) -> SessionBatch:
        return await episode.user.finish(episode.session, status=status)

    async def _close_early(self, state: _Slot) -> SessionBatch:
        episode = state.episode
        assert episode is not None
        state.episode = None
        return await self._finish(episode, "truncated")
