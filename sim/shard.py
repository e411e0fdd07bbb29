"""A shard of simulated users, run inside one Ray actor (or directly, in tests).

A user costs kilobytes and an actor costs a process, so an actor holds many users and runs their
sessions concurrently with asyncio. Every user draws from its own seeded streams, so the rows do
not depend on which shard holds the user or in which order sessions interleave.

The shard owns what concerns the users together: which users, rounds, fault injection, Parquet
parts, the per-round leakage check (one embedding call for the whole shard) and persona rows.
Each user's session is run by its :class:`~personasim.sim.session.SimulatedUser`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from pydantic import BaseModel

from personasim.personas.others import others_statements
from personasim.sim.collector import collect_rarely_in_workers
from personasim.sim.config import RunConfig
from personasim.sim.rows import PersonaRow, PreferenceRow, SensitiveFactRow, TurnRow
from personasim.sim.session import SessionBatch, SessionContext, SimulatedUser

__all__ = ["PersonaBatch", "SessionBatch", "UserShard", "wave_bounds", "write_parts"]


def write_parts(batch: BaseModel, folder: str, name: str) -> dict[str, int]:
    """Each table of a batch as one Parquet file, written under a temporary name and renamed, so
    a reader never sees half a file. Returns rows written per table."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from personasim.sim.store import arrow_schema, row_dicts

    counts = {}
    for table, rows in batch.tables():  # type: ignore[attr-defined]
        if not rows:
            continue
        target = Path(folder) / table / f"{name}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".parquet.tmp")
        pq.write_table(pa.Table.from_pylist(row_dicts(rows), schema=arrow_schema(table)), tmp)
        tmp.rename(target)
        counts[table] = len(rows)
    return counts


def wave_bounds(users: int, wave_users: int) -> list[tuple[int, int]]:
    """(first user, users) of each wave of a shard of ``users``, at most ``wave_users`` each: the
    shard and the driver both split by this (the driver sends each round once per wave)."""
    return [(start, min(wave_users, users - start)) for start in range(0, users, wave_users)] or [(0, 0)]


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


class UserShard:
    """Many users' sessions in one process, round by round (session k of every user, concurrently).

    Users never meet, so the shard only schedules them and handles what is cheaper or only
    possible for all of them together; everything about one session is the user's runner."""

    def __init__(
        self, config: RunConfig, user_indices: list[int], shard_index: int = 0, num_shards: int = 1,
        model_servers: dict[str, Any] | None = None, run_id: str | None = None,
    ) -> None:
        """``run_id`` names the run the rows belong to (default ``config.run_id``; the online
        environment stores its episodes under its own run)."""
        collect_rarely_in_workers()  # an actor's users are half a million objects (sim/collector.py)
        self.context = SessionContext(config, run_id, concurrency_share=num_shards, model_servers=model_servers)
        self.config = config
        self.run_id = self.context.run_id
        self.catalog = self.context.catalog
        self.shard_index = shard_index
        self.users: list[SimulatedUser] = [self.context.user(index) for index in user_indices]
        self.waves = [self.users[i:i + n] for i, n in wave_bounds(len(self.users), config.engine.wave_users)]
        self.rounds_done = [0] * len(self.waves)  # per wave: a wave's users are always at the same session
        self._incarnation = f"{os.getpid()}-{uuid.uuid4().hex}"

    def incarnation(self) -> str:
        """Names this instance of the actor: a restart by Ray is a new instance with a new name.

        The driver counts restarts as the names it has seen, not as the errors it caught: a round
        sent while Ray is still bringing the actor back fails too, and counting that as a second
        death spent the restart budget of a healthy run on a loaded machine."""
        return self._incarnation

    async def run_round(
        self, session_index: int, stored: frozenset[str] = frozenset(),
        failed: dict[int, frozenset[str]] | None = None, wave: int = 0,
    ) -> SessionBatch:
        """Run session ``session_index`` of every user in the shard's ``wave``, concurrently.

        A shard's users are run in waves of at most ``engine.wave_users`` (the driver sends each
        round once per wave): what a round holds at once (every session's working state and rows)
        grows with the users run together, and 5,000 users at once took 3.3 GB per shard.
        Users in ``stored`` already have this session in the store (a resumed run): their session
        is replayed to rebuild their state, and its rows are not returned. A fresh actor (a
        restart after a crash) first replays the rounds it missed, so the driver only ever
        re-sends the round that failed. ``failed`` names, per round, sessions the store records
        as failed: a replay fails them again rather than asking the backend a second time."""
        self._maybe_fail(session_index)
        failed = failed or {}
        users = self.waves[wave]
        everyone = frozenset(u.persona_id for u in users)
        while self.rounds_done[wave] < session_index:
            k = self.rounds_done[wave]
            await self._round(users, k, everyone, failed.get(k, frozenset()))
            self.rounds_done[wave] = k + 1
        batch = await self._round(users, session_index, stored, failed.get(session_index, frozenset()))
        self.rounds_done[wave] = session_index + 1
        return batch

    async def _round(
        self, users: list[SimulatedUser], k: int, replay: frozenset[str], failed: frozenset[str]
    ) -> SessionBatch:
        results = await asyncio.gather(*(
            u.run(k, u.persona_id in replay, u.persona_id in failed) for u in users
        ))
        results = [r for r, u in zip(results, users, strict=True) if u.persona_id not in replay]
        check = self.config.dialogue.leak_check
        if check == "on" or (check == "auto" and self.config.user_backend.is_llm):
            self._leakage([t for part in results for t in part.turns])
        for user in users:
            user.hold()  # between rounds a user's persona is compressed JSON (sim/session.py)
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
        failed: dict[int, frozenset[str]] | None = None, wave: int = 0,
    ) -> SessionBatch:
        """``run_round``, but the shard writes its rows as Parquet parts itself (a cluster: no rows
        cross the network to the driver) and returns only the session rows, for bookkeeping."""
        batch = await self.run_round(session_index, stored, failed, wave)
        counts = write_parts(batch, folder, f"r{session_index:05d}-s{self.shard_index:05d}-w{wave:05d}")
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
        users = [u for u in self.users if u.persona_id in personas]
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
