"""A shard of simulated users, run inside one Ray actor (or directly, in tests).

A user costs kilobytes and an actor costs a process, so an actor holds many users and runs their
sessions concurrently with asyncio. Every user draws from its own seeded streams, so the rows do
not depend on which shard holds the user or in which order sessions interleave.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from personasim.agents.backends import create_client
from personasim.agents.chatbot import build_chatbot
from personasim.agents.conversation import TurnRecord, run_session
from personasim.agents.memory import PersonaMemory, create_memory, load_plugins, message_content
from personasim.agents.recommendations import accepts, mentioned_options, recommended_options
from personasim.agents.user import SessionPlan, build_user_agent, plan_session, user_system_prompt
from personasim.personas.models import DriftEvent, ForgetRequest, Persona
from personasim.personas.others import others_statements
from personasim.personas.population import PopulationBuilder
from personasim.personas.seeding import derive_seed, rng_for
from personasim.personas.timeline import PersonaTimeline
from personasim.sim.config import RunConfig
from personasim.sim.ids import session_id, snapshot_id, turn_id
from personasim.sim.rows import (
    ConsistencyProbeRow,
    DriftEventRow,
    ForgetRequestRow,
    MemorySnapshotRow,
    PersonaRow,
    PreferenceRow,
    SensitiveFactRow,
    SessionRow,
    TurnRow,
)
from personasim.worlds.scenarios import load_scenario_catalog
from personasim.worlds.schedule import session_times


class SessionBatch(BaseModel):
    """Everything one round of sessions produced in one shard, ready for the store."""

    sessions: list[SessionRow] = Field(default_factory=list)
    turns: list[TurnRow] = Field(default_factory=list)
    memory_snapshots: list[MemorySnapshotRow] = Field(default_factory=list)
    drift_events: list[DriftEventRow] = Field(default_factory=list)
    forget_requests: list[ForgetRequestRow] = Field(default_factory=list)
    consistency_probes: list[ConsistencyProbeRow] = Field(default_factory=list)
    part_rows: dict[str, int] = Field(default_factory=dict, description="Rows the shard wrote as Parquet parts.")

    def tables(self) -> list[tuple[str, list[BaseModel]]]:
        if self.part_rows:  # the rows are in Parquet parts already; only the session rows came back
            return []
        return [
            ("consistency_probes", list(self.consistency_probes)),
            ("sessions", list(self.sessions)),
            ("turns", list(self.turns)),
            ("memory_snapshots", list(self.memory_snapshots)),
            ("drift_events", list(self.drift_events)),
            ("forget_requests", list(self.forget_requests)),
        ]


def write_parts(batch: BaseModel, folder: str, name: str) -> dict[str, int]:
    """Each table of a batch as one Parquet file, written under a temporary name and renamed, so
    a reader never sees half a file. Returns rows written per table."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from personasim.sim.store import arrow_schema

    counts = {}
    for table, rows in batch.tables():  # type: ignore[attr-defined]
        if not rows:
            continue
        target = Path(folder) / table / f"{name}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".parquet.tmp")
        pq.write_table(pa.Table.from_pylist([r.model_dump() for r in rows], schema=arrow_schema(table)), tmp)
        tmp.rename(target)
        counts[table] = len(rows)
    return counts


@dataclass
class PreparedSession:
    """A session decided but not yet spoken: its plan, start, the drift before it, and who speaks."""

    plan: SessionPlan
    start: datetime
    drift_events: list[DriftEvent]
    user_client: Any
    chatbot_client: Any
    live_memory: Any


class PersonaBatch(BaseModel):
    personas: list[PersonaRow]
    preferences: list[PreferenceRow]
    sensitive_facts: list[SensitiveFactRow]

    def tables(self) -> list[tuple[str, list[BaseModel]]]:
        return [
            ("personas", list(self.personas)),
            ("preferences", list(self.preferences)),
            ("sensitive_facts", list(self.sensitive_facts)),
        ]


class _User:
    def __init__(self, persona: Persona, times: list[datetime], memories: dict[str, PersonaMemory],
                 live_memory: PersonaMemory, source_live_memory: PersonaMemory | None = None) -> None:
        self.persona = persona
        self.times = times
        self.memories = memories
        self.live_memory = live_memory
        self.source_live_memory = source_live_memory  # a fork: the source run's chatbot memory, before T
        self.revealed: dict[str, int] = {}
        self.last_end: datetime | None = None


class UserShard:
    def __init__(
        self, config: RunConfig, user_indices: list[int], shard_index: int = 0, num_shards: int = 1,
        model_servers: dict[str, Any] | None = None,
    ) -> None:
        load_plugins(config.memory.plugins)  # an actor process has not imported them yet
        self.config = config
        self.run_id = config.run_id
        self.shard_index = shard_index
        self.rounds_done = 0
        population = PopulationBuilder(config.population, config.seed, config.drift)
        self.catalog = population.catalog
        self.scenarios = load_scenario_catalog()
        self.scenarios.check_topics(t.id for t in self.catalog.topics)
        cache = (config.engine.cache_path, config.engine.cache)
        servers = model_servers or {}
        self.user_client = create_client(
            config.user_backend, self.catalog, *cache, concurrency_share=num_shards, model_server=servers.get("user"))
        self.chatbot_client = create_client(
            config.chatbot_backend, self.catalog, *cache, concurrency_share=num_shards,
            model_server=servers.get("chatbot"),
        )
        source = config.fork.source if config.fork else None
        if source is not None:  # before the fork time, the source run's backends drive (cached: free)
            load_plugins(source.memory.plugins)
            self.source_user_client = create_client(
                source.user_backend, self.catalog, *cache, concurrency_share=num_shards)
            self.source_chatbot_client = create_client(
                source.chatbot_backend, self.catalog, *cache, concurrency_share=num_shards)
        self.drift = population.drift
        generator = population.generator
        self.users: list[_User] = []
        for index in user_indices:
            persona = generator.generate(index, config.schedule.start)
            secrets = list(persona.sensitive_facts.values().values()) if persona.sensitive_facts else []
            memories = {
                name: create_memory(name, config.memory.settings, self.chatbot_client, redact_values=secrets)
                for name in config.memory.strategies
            }
            live = memories.get(config.memory.chatbot) or create_memory(
                config.memory.chatbot, config.memory.settings, self.chatbot_client, redact_values=secrets
            )
            source_live = None
            if source is not None:
                source_live = create_memory(
                    source.memory.chatbot, source.memory.settings, self.source_chatbot_client, redact_values=secrets
                )
            times = session_times(index, config.schedule, config.seed)
            self.users.append(_User(persona, times, memories, live, source_live))

    async def run_round(
        self, session_index: int, stored: frozenset[str] = frozenset(),
        failed: dict[int, frozenset[str]] | None = None,
    ) -> SessionBatch:
        """Run session ``session_index`` of every user in the shard, concurrently.

        Users in ``stored`` already have this session in the store (a resumed run): their session
        is replayed to rebuild their state, and its rows are not returned. A fresh actor (a
        restart after a crash) first replays the rounds it missed, so the driver only ever
        re-sends the round that failed. ``failed`` names, per round, sessions the store records
        as failed: a replay fails them again rather than asking the backend a second time."""
        self._maybe_fail(session_index)
        failed = failed or {}
        everyone = frozenset(u.persona.id for u in self.users)
        while self.rounds_done < session_index:
            await self._round(self.rounds_done, everyone, failed.get(self.rounds_done, frozenset()))
        return await self._round(session_index, stored, failed.get(session_index, frozenset()))

    async def _round(self, k: int, replay: frozenset[str], failed: frozenset[str]) -> SessionBatch:
        results = await asyncio.gather(*(
            self._run_user_session(u, k, u.persona.id in replay, u.persona.id in failed) for u in self.users
        ))
        self.rounds_done = k + 1
        results = [r for r, u in zip(results, self.users, strict=True) if u.persona.id not in replay]
        check = self.config.dialogue.leak_check
        if check == "on" or (check == "auto" and self.config.user_backend.kind != "scripted"):
            self._leakage([t for part in results for t in part.turns])
        batch = SessionBatch()
        for part in results:
            batch.sessions += part.sessions
            batch.turns += part.turns
            batch.memory_snapshots += part.memory_snapshots
            batch.drift_events += part.drift_events
            batch.forget_requests += part.forget_requests
            batch.consistency_probes += part.consistency_probes
        return batch

    async def run_round_to_parts(
        self, session_index: int, folder: str, stored: frozenset[str] = frozenset(),
        failed: dict[int, frozenset[str]] | None = None,
    ) -> SessionBatch:
        """``run_round``, but the shard writes its rows as Parquet parts itself (a cluster: no rows
        cross the network to the driver) and returns only the session rows, for bookkeeping."""
        batch = await self.run_round(session_index, stored, failed)
        counts = write_parts(batch, folder, f"r{session_index:05d}-s{self.shard_index:05d}")
        return SessionBatch(sessions=batch.sessions, part_rows=counts)

    def personas_to_parts(self, folder: str) -> dict[str, int]:
        return write_parts(self.personas(), folder, f"final-s{self.shard_index:05d}")

    def _maybe_fail(self, k: int) -> None:
        """Fault injection (``engine.faults``): kill this actor's process once, to test restarts."""
        faults = self.config.engine.faults
        if faults is None or faults.kill_actor_at_round != k or self.shard_index != 0:
            return
        import os
        import signal
        from pathlib import Path

        marker = Path(faults.marker_dir or ".") / f".personasim-fault-{self.run_id}-actor0-round{k}"
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    async def _run_user_session(
        self, user: _User, k: int, replay: bool = False, failed_before: bool = False
    ) -> SessionBatch:
        session = self.prepare_session(user, k)
        user_agent = build_user_agent(session.user_client, user_system_prompt(user.persona, session.plan, self.catalog))
        chatbot = build_chatbot(session.chatbot_client, session.live_memory)
        try:
            if failed_before:
                raise RuntimeError("failed in the stored run")
            records = await run_session(
                user_agent, chatbot, session.plan.directive.turns, session.start, self.config.schedule.minutes_per_turn
            )
        except Exception as exc:  # the backend failed even after its retries: record it, go on
            user.last_end = session.start  # drift up to here is applied; the next session continues from it
            return self._failed_session(
                user.persona, k, session.plan.scenario.id, session.start, exc, session.drift_events)
        return await self.finish_session(user, k, session, records, probe=not replay)

    def prepare_session(self, user: _User, k: int) -> PreparedSession:
        """Drift up to session ``k``'s start, then its plan: everything decided before any text exists.
        The online environment (``rl/env.py``) shares this, so its episodes are sessions like any run's."""
        cfg = self.config
        persona = user.persona
        start = user.times[k]
        drift_events: list[DriftEvent] = []
        if user.last_end is not None:
            drift_events = self.drift.apply_between(
                persona, user.last_end, start, rng_for(cfg.seed, "drift", persona.index, k)
            )
        shared = cfg.fork is not None and start < cfg.fork.at  # a fork's shared history: the source drives
        driver = cfg.fork.source if shared and cfg.fork else cfg
        plan = plan_session(
            persona, start, user.revealed, self.scenarios, self.catalog, driver.dialogue,
            rng_for(cfg.seed, "plan", persona.index, k), derive_seed(cfg.seed, "dialogue", persona.index, k),
        )
        return PreparedSession(
            plan=plan, start=start, drift_events=drift_events,
            user_client=self.source_user_client if shared else self.user_client,
            chatbot_client=self.source_chatbot_client if shared else self.chatbot_client,
            live_memory=user.source_live_memory if shared and user.source_live_memory else user.live_memory,
        )

    async def finish_session(
        self, user: _User, k: int, session: PreparedSession, records: list[TurnRecord], probe: bool = True
    ) -> SessionBatch:
        """What a finished session changes (reveals counted, forget requests, exposure drift, every
        memory fed) and the rows that record it."""
        cfg = self.config
        persona = user.persona
        end = records[-1].time + timedelta(minutes=cfg.schedule.minutes_per_turn)
        forgets: list[ForgetRequestRow] = []
        for r in records:
            if r.reveal is not None:
                user.revealed[r.reveal.preference_id] = user.revealed.get(r.reveal.preference_id, 0) + 1
            if r.forget is not None:
                request = ForgetRequest(
                    id=f"{persona.id}/forget/{len(persona.forget_requests)}", persona_id=persona.id, time=r.time,
                    preference_id=r.forget.preference_id, topic=r.forget.topic,
                )
                persona.forget_requests.append(request)
                forgets.append(ForgetRequestRow(
                    run_id=self.run_id, request_id=request.id, persona_id=persona.id, time=r.time,
                    preference_id=request.preference_id, topic=request.topic,
                    turn_id=turn_id(persona.id, k, r.index),
                ))
        scenario = session.plan.scenario
        drift_events = session.drift_events + self._exposures(persona, records, k, scenario.topics)
        await self._feed_memories(user, records, end)
        user.last_end = end
        probes = await self._probe(persona, k, end) if probe else []
        sid = session_id(persona.id, k)
        return SessionBatch(
            sessions=[SessionRow(
                run_id=self.run_id, session_id=sid, persona_id=persona.id, session_index=k,
                scenario_id=scenario.id, started_at=session.start, ended_at=end, n_turns=len(records),
                status="completed",
            )],
            turns=[self._turn_row(persona.id, k, sid, r) for r in records],
            memory_snapshots=[
                MemorySnapshotRow(
                    run_id=self.run_id, snapshot_id=snapshot_id(persona.id, k, name), persona_id=persona.id,
                    session_index=k, strategy=name, time=end, text=snap.text, items=snap.items,
                    tokens=snap.tokens,
                )
                for name, mem in user.memories.items()
                for snap in [mem.snapshot()]
            ],
            drift_events=self._drift_rows(persona, drift_events),
            forget_requests=forgets,
            consistency_probes=probes,
        )

    async def _probe(self, persona: Persona, k: int, t: datetime) -> list[ConsistencyProbeRow]:
        every = self.config.dialogue.probe_every
        if not every or (k + 1) % every:
            return []
        from personasim.agents.embedding import default_embedder
        from personasim.agents.probe import probe_user

        liked = sorted({p.topic for p in PersonaTimeline.of(persona).at(t) if p.polarity == "likes"})
        rng = rng_for(self.config.seed, "probe", persona.index, k)
        topics = rng.sample(liked, min(self.config.dialogue.probe_topics, len(liked)))
        rows = []
        for topic in topics:
            result = await probe_user(self.user_client, persona, t, topic, self.catalog, default_embedder())
            rows.append(ConsistencyProbeRow(
                run_id=self.run_id, probe_id=f"{session_id(persona.id, k)}/probe/{topic}", persona_id=persona.id,
                session_index=k, time=t, **result.model_dump(),
            ))
        return rows

    def _drift_rows(self, persona: Persona, events: list[DriftEvent]) -> list[DriftEventRow]:
        return [
            DriftEventRow(
                run_id=self.run_id, event_id=e.id, persona_id=persona.id, time=e.time, cause=e.cause, topic=e.topic,
                old_preference_id=e.old.id if e.old else None, new_preference_id=e.new.id if e.new else None,
                kind=e.kind,
            )
            for e in events
        ]

    def _failed_session(
        self, persona: Persona, k: int, scenario_id: str, start: datetime, exc: Exception, drift: list[DriftEvent]
    ) -> SessionBatch:
        error = f"{type(exc).__name__}: {exc}".strip()[:2000]
        return SessionBatch(
            sessions=[SessionRow(
                run_id=self.run_id, session_id=session_id(persona.id, k), persona_id=persona.id, session_index=k,
                scenario_id=scenario_id, started_at=start, ended_at=start, n_turns=0, status="failed", error=error,
            )],
            drift_events=self._drift_rows(persona, drift),
        )

    def _exposures(
        self, persona: Persona, records: list[TurnRecord], k: int, scenario_topics: list[str]
    ) -> list[DriftEvent]:
        """The user accepted a recommendation: the exposure hook may shift what they like.

        A label can belong to several topics ("hiking"), so only topics in play count: the
        scenario's, and those the user named in the message the reply answered."""
        events: list[DriftEvent] = []
        for prompt, reply, answer in zip(records, records[1:], records[2:], strict=False):
            if reply.role != "assistant" or answer.role != "user" or not accepts(answer.text):
                continue
            in_play = set(scenario_topics) | {t for t, _ in mentioned_options(prompt.text, self.catalog)}
            for topic, option in recommended_options(reply.text, self.catalog):
                if topic not in in_play:
                    continue
                rng = rng_for(self.config.seed, "exposure", persona.index, k, reply.index)
                events += self.drift.exposure.on_exposure(persona, topic, option, answer.time, rng)
        return events

    async def _feed_memories(self, user: _User, records: list[TurnRecord], end: datetime) -> None:
        targets = list(user.memories.values())
        for live in (user.live_memory, user.source_live_memory):
            if live is not None and live not in targets:
                targets.append(live)
        for memory in targets:
            for r in records:
                await memory.add(message_content(r.role, r.text, r.time))
            await memory.end_session(end)

    def _leakage(self, turns: list[TurnRow]) -> None:
        """Similarity of each revealing user turn to the explicit statement of what it reveals.

        An implicit reveal that reads like the statement has leaked the preference (LLM user
        simulators often do); the turn row keeps the similarity and the flag. One embedding call
        per round for the whole shard: batching is what keeps this check off the critical path."""
        revealing = [t for t in turns if t.revealed_preference_id is not None]
        if not revealing:
            return
        from personasim.agents.embedding import default_embedder

        embedder = default_embedder()
        personas = {t.persona_id for t in revealing}
        users = [u for u in self.users if u.persona.id in personas]
        prefs = {p.id: p for u in users for p in (*u.persona.preferences, *u.persona.others_preferences)}
        people = {(u.persona.id, person.owner): person for u in users for person in u.persona.people}
        statements = []
        for t in revealing:
            pref = prefs[t.revealed_preference_id]  # type: ignore[index]
            person = people.get((pref.persona_id, pref.owner))
            if person is not None:  # about someone else: their explicit form is what a leak reads like
                statements.append(others_statements(self.catalog, person, pref.topic, pref.option)[0])
            else:
                statements.append(self.catalog.statements(pref.topic, pref.option, pref.polarity.value)[0])
        vectors = embedder.encode([t.text for t in revealing] + statements)
        threshold = self.config.dialogue.leak_threshold
        for row, a, b in zip(revealing, vectors[: len(revealing)], vectors[len(revealing):], strict=True):
            row.leak_similarity = round(float(a @ b), 4)
            row.leaked = row.leak_similarity >= threshold and row.reveal_mode == "implicit"

    def _turn_row(self, persona_id: str, k: int, sid: str, r: TurnRecord) -> TurnRow:
        return TurnRow(
            run_id=self.run_id, turn_id=turn_id(persona_id, k, r.index), session_id=sid, persona_id=persona_id,
            session_index=k, turn_index=r.index, role=r.role, text=r.text, time=r.time, tokens=r.tokens,
            prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
            revealed_preference_id=r.reveal.preference_id if r.reveal else None,
            reveal_mode=r.reveal.mode if r.reveal else None,
            hint_kind=r.reveal.hint_kind if r.reveal else None,
            forget_preference_id=r.forget.preference_id if r.forget else None,
            leak_similarity=None, leaked=None,  # filled for the whole round by _leakage
        )

    def personas(self) -> PersonaBatch:
        """Final persona truth: demographics and every preference with its validity interval."""
        personas, prefs, facts = [], [], []
        for user in self.users:
            p, d = user.persona, user.persona.demographics
            personas.append(PersonaRow(
                run_id=self.run_id, persona_id=p.id, user_index=p.index, locale=d.locale, name=d.name,
                age=d.age, gender=d.gender, occupation=d.occupation, city=d.city, country=d.country,
            ))
            prefs += [
                PreferenceRow(
                    run_id=self.run_id, preference_id=q.id, polarity=q.polarity.value,
                    **{k: v for k, v in q.as_dict().items() if k not in ("id", "polarity")},
                )
                for q in (*p.preferences, *p.others_preferences)
            ]
            if p.sensitive_facts is not None:
                facts += [
                    SensitiveFactRow(run_id=self.run_id, persona_id=p.id, kind=kind, value=value)
                    for kind, value in p.sensitive_facts.values().items()
                ]
        return PersonaBatch(personas=personas, preferences=prefs, sensitive_facts=facts)
