"""One simulated user's sessions, run in one place: prepared, spoken, finished, recorded.

A session is run by three callers: the engine's shards (the chatbot is an AutoGen agent), the
online environment (a policy writes the chatbot's replies, one step at a time) and, for memory
only, loaders of other people's histories. They all go through this module, so a session is the
same thing wherever it happens: the same drift before it, the same revelation plan, the same
turn records (the user's token usage included), the same memory feeding and the same rows.

- :class:`SessionContext`: what every user of one process shares (config, run id, catalogs,
  drift model, backend clients), built once because clients hold caches and concurrency caps;
- :class:`SimulatedUser`: one user's state across sessions, and the runner of each session:
  ``prepare`` (drift up to the start, the plan), then either ``converse`` (an AutoGen chatbot)
  or ``opening_turn`` / ``policy_turn`` (an external policy), then ``finish`` (or ``fail``);
- :func:`feed_memories` and :func:`memory_snapshot_rows`: how any history reaches memories and
  how their state is recorded, and :func:`replay_into_memories` for a stored history.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, Field

from personasim.agents.backends import create_client
from personasim.agents.chatbot import build_chatbot
from personasim.agents.conversation import Conversation, TurnRecord
from personasim.agents.embedding import use_embedder
from personasim.agents.memory import (
    MemorySettings,
    PersonaMemory,
    create_memory,
    load_plugins,
    message_content,
)
from personasim.agents.recommendations import accepts, mentioned_options, recommended_options
from personasim.agents.secrets import configured_secrets, scrub_secrets
from personasim.agents.tokens import count_tokens
from personasim.agents.user import (
    MAX_USER_TURNS,
    DialogueConfig,
    SessionPlan,
    build_user_agent,
    plan_session,
    user_system_prompt,
)
from personasim.personas.models import DriftEvent, ForgetRequest, Persona
from personasim.personas.population import PopulationBuilder
from personasim.personas.seeding import derive_seed, rng_for
from personasim.personas.timeline import PersonaTimeline
from personasim.sim.config import RunConfig
from personasim.sim.ids import session_id, snapshot_id, turn_id
from personasim.sim.rows import (
    ConsistencyProbeRow,
    DriftEventRow,
    ForgetRequestRow,
    MemorySnapshotItemsRow,
    MemorySnapshotRow,
    SessionRow,
    TurnRow,
)
from personasim.sim.snapshots import SnapshotChains
from personasim.worlds.filler import filler_exchanges
from personasim.worlds.scenarios import load_scenario_catalog
from personasim.worlds.schedule import session_times

#: What a user turn costs before a user has spoken (the scripted user's turns average about 30 tokens).
PRIOR_USER_TURN_TOKENS = 30

__all__ = [
    "PreparedSession",
    "SessionBatch",
    "SessionContext",
    "SimulatedUser",
    "drift_rows",
    "feed_memories",
    "memory_snapshot_rows",
    "replay_into_memories",
    "turn_row",
]


class SessionBatch(BaseModel):
    """Everything one or more sessions produced, ready for the store."""

    sessions: list[SessionRow] = Field(default_factory=list)
    turns: list[TurnRow] = Field(default_factory=list)
    memory_snapshots: list[MemorySnapshotItemsRow] = Field(default_factory=list)
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
            ("memory_snapshot_items", list(self.memory_snapshots)),
            ("drift_events", list(self.drift_events)),
            ("forget_requests", list(self.forget_requests)),
        ]


class SessionContext:
    """What every simulated user of one process (a shard, an env worker) shares.

    The run's config and id, the topic and scenario catalogs, the drift model and the backends'
    clients. Clients hold response caches and concurrency caps, so they are built once per
    process, not per user. ``run_id`` defaults to ``config.run_id``; the online environment
    passes its own (its episodes are stored under the env's run)."""

    def __init__(
        self, config: RunConfig, run_id: str | None = None, concurrency_share: int = 1,
        model_servers: dict[str, Any] | None = None,
    ) -> None:
        load_plugins(config.memory.plugins)  # an actor process has not imported them yet
        use_embedder(config.embedder)  # every process of a run embeds with the run's model
        self.config = config
        self.run_id = config.run_id if run_id is None else run_id
        population = PopulationBuilder(config.population, config.seed, config.drift)
        self.catalog = population.catalog
        self.scenarios = load_scenario_catalog()
        self.scenarios.check_topics(t.id for t in self.catalog.topics)
        cache = (config.engine.cache_path, config.engine.cache)
        servers = model_servers or {}
        self.user_client = create_client(
            config.user_backend, self.catalog, *cache, concurrency_share=concurrency_share,
            model_server=servers.get("user"),
        )
        self.chatbot_client = create_client(
            config.chatbot_backend, self.catalog, *cache, concurrency_share=concurrency_share,
            model_server=servers.get("chatbot"),
        )
        self.source_user_client: Any = None
        self.source_chatbot_client: Any = None
        source = config.fork.source if config.fork else None
        if source is not None:  # before the fork time, the source run's backends drive (cached: free)
            load_plugins(source.memory.plugins)
            self.source_user_client = create_client(
                source.user_backend, self.catalog, *cache, concurrency_share=concurrency_share)
            self.source_chatbot_client = create_client(
                source.chatbot_backend, self.catalog, *cache, concurrency_share=concurrency_share)
        self.drift = population.drift
        self.generator = population.generator

    def user(self, index: int) -> SimulatedUser:
        """User ``index`` as the run starts: persona, session times, fresh memories."""
        config = self.config
        persona = self.generator.generate(index, config.schedule.start)
        secrets = list(persona.sensitive_facts.values().values()) if persona.sensitive_facts else []
        memories = {
            name: create_memory(name, config.memory.settings, self.chatbot_client, redact_values=secrets)
            for name in config.memory.strategies
        }
        live = memories.get(config.memory.chatbot) or create_memory(
            config.memory.chatbot, config.memory.settings, self.chatbot_client, redact_values=secrets
        )
        source_live = None
        source = config.fork.source if config.fork else None
        if source is not None:
            source_live = create_memory(
                source.memory.chatbot, source.memory.settings, self.source_chatbot_client, redact_values=secrets
            )
        times = session_times(index, config.schedule, config.seed)
        return SimulatedUser(self, persona, times, memories, live, source_live)


@dataclass
class PreparedSession:
    """A session decided before any text exists (its plan, start, the drift before it, who speaks
    for the user and the chatbot), then its dialogue as it unfolds (``conversation``)."""

    index: int
    plan: SessionPlan
    start: datetime
    drift_events: list[DriftEvent]
    user_client: Any
    chatbot_client: Any
    live_memory: PersonaMemory
    conversation: Conversation
    dialogue: DialogueConfig

    @property
    def records(self) -> list[TurnRecord]:
        return self.conversation.records

    @property
    def plan_done(self) -> bool:
        """Every planned user turn was spoken: the next chatbot reply ends the session."""
        return self.conversation.plan_done

    @property
    def time(self) -> datetime:
        """When the next message of the session is written."""
        return self.conversation.time


class SimulatedUser:
    """One simulated user across its sessions, and the one runner of each of them.

    State: the persona (it drifts), the session times, every memory strategy under study, the
    chatbot's live memory (and, in a fork, the source run's), how often each preference was
    revealed (the plan reveals what is least known) and when the last session ended (drift
    applies from there). A session is ``prepare``d, spoken (``converse`` with an AutoGen chatbot,
    or ``opening_turn`` then ``policy_turn`` per policy reply), then ``finish``ed, which changes
    the state and returns the rows; a session whose backend failed is ``fail``ed instead."""

    def __init__(
        self, context: SessionContext, persona: Persona, times: list[datetime], memories: dict[str, PersonaMemory],
        live_memory: PersonaMemory, source_live_memory: PersonaMemory | None = None,
    ) -> None:
        self.context = context
        self.persona_id = persona.id
        self._persona: Persona | None = persona
        self._packed_persona = b""
        self.times = times
        self.memories = memories
        self.live_memory = live_memory
        self.source_live_memory = source_live_memory  # a fork: the source run's chatbot memory, before T
        self.revealed: dict[str, int] = {}
        self.last_end: datetime | None = None
        self.history_tokens = 0  # every turn so far, filler included: what a history-length target counts
        self.dialogue_tokens = 0  # the user's and the chatbot's own turns (no filler) ...
        self.dialogue_exchanges = 0  # ... and how many user turns they came in: tokens per exchange
        self.snapshot_chains = SnapshotChains()  # each session's snapshots continue the last ones written

    @property
    def persona(self) -> Persona:
        """The persona, as objects from its first use after ``hold`` until the next ``hold``."""
        if self._persona is None:
            self._persona = Persona.model_validate_json(zlib.decompress(self._packed_persona))
            self._packed_persona = b""
        return self._persona

    def hold(self) -> None:
        """Keep the persona as compressed JSON until it is next needed (a shard does this after
        each round). As objects it was most of what a user holds between sessions (about 25 KB
        of 40 after six default sessions: every preference interval, drift event and person, each
        a pydantic model); packed it is a few KB, and a round trip costs well under a millisecond
        against a session's tens. The JSON round trip is exact (the store digest test runs with it)."""
        if self._persona is not None:
            self._packed_persona = zlib.compress(self._persona.model_dump_json().encode())
            self._persona = None

    # -- a whole session with an AutoGen chatbot -----------------------------------------------
    async def run(self, k: int, replay: bool = False, failed_before: bool = False) -> SessionBatch:
        """Session ``k`` from plan to rows, the chatbot an AutoGen agent over the live memory.

        ``replay`` rebuilds state for a session already stored (no probes: they were recorded);
        ``failed_before`` fails it again as the store records, rather than asking the backend."""
        session = self.prepare(k)
        try:
            if failed_before:
                raise RuntimeError("failed in the stored run")
            await self.converse(session)
        except Exception as exc:  # the backend failed even after its retries: record it, go on
            return self.fail(session, exc)
        return await self.finish(session, probe=not replay)

    def prepare(self, k: int) -> PreparedSession:
        """Drift up to session ``k``'s start, then its plan: everything decided before any text exists."""
        ctx, cfg, persona = self.context, self.context.config, self.persona
        start = self.times[k]
        drift_events: list[DriftEvent] = []
        if self.last_end is not None:
            drift_events = ctx.drift.apply_between(
                persona, self.last_end, start, rng_for(cfg.seed, "drift", persona.index, k), self.revealed
            )
        shared = cfg.fork is not None and start < cfg.fork.at  # a fork's shared history: the source drives
        driver = cfg.fork.source if shared and cfg.fork else cfg
        user_turns, filler_tokens = self._session_shape(k, driver.dialogue)
        plan = plan_session(
            persona, start, self.revealed, ctx.scenarios, ctx.catalog, driver.dialogue,
            rng_for(cfg.seed, "plan", persona.index, k), derive_seed(cfg.seed, "dialogue", persona.index, k),
            user_turns=user_turns,
        )
        user_client = ctx.source_user_client if shared else ctx.user_client
        user_agent = build_user_agent(user_client, user_system_prompt(persona, plan, ctx.catalog))
        conversation = Conversation(user_agent, plan.directive.turns, start, cfg.schedule.minutes_per_turn)
        if filler_tokens > 0:
            filler = filler_exchanges(rng_for(cfg.seed, "filler", persona.index, k), filler_tokens, count_tokens)
            conversation.insert_filler([(f.user, f.assistant) for f in filler])
        return PreparedSession(
            index=k, plan=plan, start=start, drift_events=drift_events, user_client=user_client,
            chatbot_client=ctx.source_chatbot_client if shared else ctx.chatbot_client,
            live_memory=self.source_live_memory if shared and self.source_live_memory else self.live_memory,
            conversation=conversation, dialogue=driver.dialogue,
        )

    def _session_shape(self, k: int, dialogue: DialogueConfig) -> tuple[int, int]:
        """(user turns, filler tokens) of session ``k``.

        Without a history target, ``user_turns`` turns and filler in proportion. With one, the
        tokens still to go are shared evenly over the sessions left, filler takes its share, and
        the turns are what the rest buys at this user's tokens per exchange so far (the reply
        range's middle before the first session): a session that ran long is made up for by the
        next ones, so the last session lands on the target within about one exchange."""
        low, high = dialogue.reply_tokens
        per_exchange = (self.dialogue_tokens / self.dialogue_exchanges if self.dialogue_exchanges
                        else PRIOR_USER_TURN_TOKENS + (low + high) / 2)
        if dialogue.history_tokens is None:
            turns = dialogue.user_turns
            conversation = turns * per_exchange
            return turns, round(conversation * dialogue.filler / (1 - dialogue.filler))
        remaining = max(dialogue.history_tokens - self.history_tokens, 0)
        budget = remaining / (len(self.times) - k)
        filler = round(budget * dialogue.filler)
        turns = round((budget - filler) / per_exchange)
        return min(max(turns, 1), MAX_USER_TURNS), filler

    async def converse(self, session: PreparedSession) -> list[TurnRecord]:
        """Every planned turn, answered by an AutoGen chatbot that knows the user only by its memory."""
        chatbot = build_chatbot(session.chatbot_client, session.live_memory, session.dialogue.reply_tokens)
        return await session.conversation.with_chatbot(chatbot)

    # -- a session driven by an external policy, step by step ----------------------------------
    async def opening_turn(self, session: PreparedSession) -> TurnRecord:
        """The user's first message of the session (the policy has said nothing yet)."""
        return await session.conversation.user_speaks()

    async def policy_turn(
        self, session: PreparedSession, reply: str, answer: bool = True, prefix: str | None = None
    ) -> TurnRecord | None:
        """Record a policy's ``reply``; then the user's next turn, unless the plan is done or the
        caller cuts the session here (``answer=False``). ``prefix`` is put before the user's text
        in its record (a scripted reaction to the reply)."""
        session.conversation.chatbot_replied(reply)
        if session.plan_done or not answer:
            return None
        return await session.conversation.user_speaks(reply, prefix)

    # -- the end of a session ----------------------------------------------------------------
    async def finish(self, session: PreparedSession, probe: bool = True, status: str = "completed") -> SessionBatch:
        """What a finished session changes (reveals counted, forget requests, exposure drift, every
        memory fed) and the rows that record it. ``status``: "completed", or "truncated" for an
        episode cut short."""
        ctx, cfg, persona, k = self.context, self.context.config, self.persona, session.index
        records = session.records
        end = records[-1].time + timedelta(minutes=cfg.schedule.minutes_per_turn)
        forgets: list[ForgetRequestRow] = []
        for r in records:
            if r.reveal is not None:
                self.revealed[r.reveal.preference_id] = self.revealed.get(r.reveal.preference_id, 0) + 1
            if r.forget is not None:
                request = ForgetRequest(
                    id=f"{persona.id}/forget/{len(persona.forget_requests)}", persona_id=persona.id, time=r.time,
                    preference_id=r.forget.preference_id, topic=r.forget.topic,
                )
                persona.forget_requests.append(request)
                forgets.append(ForgetRequestRow(
                    run_id=ctx.run_id, request_id=request.id, persona_id=persona.id, time=r.time,
                    preference_id=request.preference_id, topic=request.topic,
                    turn_id=turn_id(persona.id, k, r.index),
                ))
        scenario = session.plan.scenario
        drift_events = session.drift_events + self._exposures(records, k, scenario.topics)
        targets = list(self.memories.values())
        for live in (self.live_memory, self.source_live_memory):
            if live is not None and live not in targets:
                targets.append(live)
        await feed_memories(targets, records, end)
        self.last_end = end
        spoken = [r for r in records if not r.filler]
        self.history_tokens += sum(r.tokens for r in records)
        self.dialogue_tokens += sum(r.tokens for r in spoken)
        self.dialogue_exchanges += sum(1 for r in spoken if r.role == "user")
        probes = await self._probe(k, end) if probe else []
        sid = session_id(persona.id, k)
        return SessionBatch(
            sessions=[SessionRow(
                run_id=ctx.run_id, session_id=sid, persona_id=persona.id, session_index=k,
                scenario_id=scenario.id, started_at=session.start, ended_at=end, n_turns=len(records),
                status=status,
            )],
            turns=[turn_row(ctx.run_id, persona.id, k, r) for r in records],
            memory_snapshots=[self.snapshot_chains.stored(row)
                              for row in memory_snapshot_rows(ctx.run_id, persona.id, k, self.memories, end)],
            drift_events=drift_rows(ctx.run_id, persona, drift_events),
            forget_requests=forgets,
            consistency_probes=probes,
        )

    def fail(self, session: PreparedSession, exc: Exception) -> SessionBatch:
        """The session's backend failed: a failed session row, and the drift before it (applied:
        the next session continues from the start of this one)."""
        run_id, persona, k = self.context.run_id, self.persona, session.index
        self.last_end = session.start
        config = self.context.config
        secrets = configured_secrets([config.user_backend, config.chatbot_backend])
        error = scrub_secrets(f"{type(exc).__name__}: {exc}".strip(), secrets)[:2000]
        return SessionBatch(
            sessions=[SessionRow(
                run_id=run_id, session_id=session_id(persona.id, k), persona_id=persona.id, session_index=k,
                scenario_id=session.plan.scenario.id, started_at=session.start, ended_at=session.start, n_turns=0,
                status="failed", error=error,
            )],
            drift_events=drift_rows(run_id, persona, session.drift_events),
        )

    def _exposures(self, records: list[TurnRecord], k: int, scenario_topics: list[str]) -> list[DriftEvent]:
        """The user accepted a recommendation: the exposure hook may shift what they like.

        A label can belong to several topics ("hiking"), so only topics in play count: the
        scenario's, and those the user named in the message the reply answered."""
        ctx = self.context
        events: list[DriftEvent] = []
        for prompt, reply, answer in zip(records, records[1:], records[2:], strict=False):
            if reply.role != "assistant" or answer.role != "user" or not accepts(answer.text):
                continue
            in_play = set(scenario_topics) | {t for t, _ in mentioned_options(prompt.text, ctx.catalog)}
            for topic, option in recommended_options(reply.text, ctx.catalog):
                if topic not in in_play:
                    continue
                rng = rng_for(ctx.config.seed, "exposure", self.persona.index, k, reply.index)
                events += ctx.drift.exposure.on_exposure(self.persona, topic, option, answer.time, rng)
        return events

    async def _probe(self, k: int, t: datetime) -> list[ConsistencyProbeRow]:
        """Every ``probe_every`` sessions, interview the user about a few liked topics."""
        ctx, persona = self.context, self.persona
        every = ctx.config.dialogue.probe_every
        if not every or (k + 1) % every:
            return []
        from personasim.agents.embedding import default_embedder
        from personasim.agents.probe import probe_user

        liked = sorted({p.topic for p in PersonaTimeline.of(persona).at(t) if p.polarity == "likes"})
        rng = rng_for(ctx.config.seed, "probe", persona.index, k)
        topics = rng.sample(liked, min(ctx.config.dialogue.probe_topics, len(liked)))
        rows = []
        for topic in topics:
            result = await probe_user(ctx.user_client, persona, t, topic, ctx.catalog, default_embedder())
            rows.append(ConsistencyProbeRow(
                run_id=ctx.run_id, probe_id=f"{session_id(persona.id, k)}/probe/{topic}", persona_id=persona.id,
                session_index=k, time=t, **result.model_dump(),
            ))
        return rows


# -- rows ----------------------------------------------------------------------------------------

def turn_row(run_id: str, persona_id: str, k: int, r: TurnRecord) -> TurnRow:
    """A turn record as a store row (the leakage columns are filled per round by the shard)."""
    return TurnRow(
        run_id=run_id, turn_id=turn_id(persona_id, k, r.index), session_id=session_id(persona_id, k),
        persona_id=persona_id, session_index=k, turn_index=r.index, role=r.role, text=r.text, time=r.time,
        tokens=r.tokens, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
        revealed_preference_id=r.reveal.preference_id if r.reveal else None,
        reveal_mode=r.reveal.mode if r.reveal else None,
        hint_kind=r.reveal.hint_kind if r.reveal else None,
        forget_preference_id=r.forget.preference_id if r.forget else None,
        leak_similarity=None, leaked=None, filler=r.filler,
    )


def drift_rows(run_id: str, persona: Persona, events: list[DriftEvent]) -> list[DriftEventRow]:
    return [
        DriftEventRow(
            run_id=run_id, event_id=e.id, persona_id=persona.id, time=e.time, cause=e.cause, topic=e.topic,
            old_preference_id=e.old.id if e.old else None, new_preference_id=e.new.id if e.new else None,
            kind=e.kind,
        )
        for e in events
    ]


# -- memory feeding, shared with loaders of stored histories -------------------------------------

class Message(Protocol):
    """Anything with a role, a text and a time: a turn record, or a stored turn row."""

    role: str
    text: str
    time: datetime


async def feed_memories(memories: Iterable[PersonaMemory], messages: Sequence[Message], end: datetime) -> None:
    """One session's messages into each memory, in order, then the session closed at ``end``.

    Every strategy sees the same messages in the same shape, which is what makes them comparable."""
    for memory in memories:
        for m in messages:
            await memory.add(message_content(m.role, m.text, m.time))
        await memory.end_session(end)


def memory_snapshot_rows(run_id: str, persona_id: str, k: int, memories: Mapping[str, PersonaMemory],
                         time: datetime) -> list[MemorySnapshotRow]:
    """Each strategy's state after session ``k``: one snapshot row per strategy."""
    return [
        MemorySnapshotRow(
            run_id=run_id, snapshot_id=snapshot_id(persona_id, k, name), persona_id=persona_id, session_index=k,
            strategy=name, time=time, text=snap.text, items=snap.items, tokens=snap.tokens,
        )
        for name, memory in memories.items()
        for snap in [memory.snapshot()]
    ]


async def replay_into_memories(
    run_id: str, sessions: list[SessionRow], turns: list[TurnRow], secrets: Mapping[str, list[str]],
    strategies: list[str], settings: MemorySettings, chatbot_client: Any = None,
) -> list[MemorySnapshotRow]:
    """A stored history (each persona's sessions, in order) into fresh memories; one snapshot
    per strategy at each session's end. For histories no simulated user spoke (a loaded dataset).

    ``system`` turns are skipped: a dataset's system prompt states the persona outright, which
    would make every memory trivially right. ``chatbot_client`` (for strategies that rewrite with
    a model) defaults to the offline scripted backend."""
    if chatbot_client is None:
        from personasim.agents.backends import BackendConfig
        from personasim.personas.catalog import load_topic_catalog

        chatbot_client = create_client(BackendConfig(), load_topic_catalog())
    by_session: dict[str, list[TurnRow]] = {}
    for t in sorted(turns, key=lambda t: (t.session_id, t.turn_index)):
        by_session.setdefault(t.session_id, []).append(t)
    by_persona: dict[str, list[SessionRow]] = {}
    for s in sorted(sessions, key=lambda s: (s.persona_id, s.session_index)):
        by_persona.setdefault(s.persona_id, []).append(s)
    rows: list[MemorySnapshotRow] = []
    for pid, persona_sessions in by_persona.items():
        memories = {n: create_memory(n, settings, chatbot_client, redact_values=list(secrets.get(pid, [])))
                    for n in strategies}
        for s in persona_sessions:
            said = [t for t in by_session.get(s.session_id, []) if t.role != "system"]
            await feed_memories(memories.values(), said, s.ended_at)
            rows += memory_snapshot_rows(run_id, pid, s.session_index, memories, s.ended_at)
    return rows
