"""``others_preference`` questions: what does someone in the user's life like? (PersonaMem-v2's ``who = others``)

The user told the assistant, sessions ago, that their sister just went vegan; now they ask for
help with a dinner for her. The correct option is the reply personalised to what the sister
likes at question time. The hard distractor is the reply personalised to what the *user* likes
on the same topic, which a memory that forgot whose preference it was would pick; the others are
what other people in the user's life like on the topic, then the remaining options. Every option
is the same sentence about the same person ("Since your sister Anna enjoys ..., ..."), so only
its content, never its length or form, tells them apart.

The truth comes from the store alone: ``preferences`` rows whose ``owner`` is not ``self``, and
the user turns whose ``revealed_preference_id`` names one of them.
"""

from __future__ import annotations

import bisect
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb

from personasim.personas.catalog import Topic, TopicCatalog, load_topic_catalog
from personasim.personas.models import SELF, Person
from personasim.personas.others import others_response, person_from_owner
from personasim.personas.seeding import rng_for
from personasim.sim.rows import QuestionRow
from personasim.worlds.scenarios import Scenario, ScenarioCatalog, load_scenario_catalog

QUESTION_TYPE = "others_preference"
#: Same delay as ``analysis.questions``: asked an hour after the user's last session.
QUESTION_DELAY = timedelta(hours=1)
MAX_OPTIONS = 4

#: How the user asks for help on someone else's behalf; ``{intent}`` is one of the scenario's
#: own neutral requests, so the query names the person and nothing about their taste.
QUERY_TEMPLATES = (
    "{intent} This time it's for my {who}, not for me.",
    "I'm asking on behalf of my {who} rather than myself. {intent}",
    "This one is for my {who}: {intent_lower}",
)


@dataclass(frozen=True)
class _Pref:
    id: str
    persona_id: str
    topic: str
    option: str
    statement: str
    owner: str
    valid_from: datetime
    valid_to: datetime | None

    def held_at(self, t: datetime) -> bool:
        return self.valid_from <= t and (self.valid_to is None or t < self.valid_to)


@dataclass(frozen=True)
class _Reveal:
    time: datetime
    session_index: int
    mode: str


@dataclass
class _User:
    """One user at question time: what they and their people like, and what was said when."""

    persona_id: str
    asked_at: datetime
    last_session: int
    own: list[_Pref] = field(default_factory=list)
    others: list[_Pref] = field(default_factory=list)
    reveals: dict[str, list[_Reveal]] = field(default_factory=lambda: defaultdict(list))
    scenarios: dict[int, str] = field(default_factory=dict)
    times: list[datetime] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)
    ends: dict[int, datetime] = field(default_factory=dict)

    @property
    def checkpoint_session(self) -> int:
        """The last session that ended before the question: named in the id, as for every type."""
        return max((i for i, end in self.ends.items() if end <= self.asked_at), default=self.last_session)

    def own_liked(self, topic: str) -> list[str]:
        return sorted({p.option for p in self.own if p.topic == topic and p.held_at(self.asked_at)})

    def others_liked(self, topic: str, owner: str) -> set[str]:
        """What everyone else in the user's life likes on the topic."""
        return {p.option for p in self.others if p.topic == topic and p.owner != owner and p.held_at(self.asked_at)}

    def tokens_between(self, after: datetime, until: datetime) -> int:
        """Conversation tokens strictly after ``after`` and before ``until``."""
        def upto(t: datetime, inclusive: bool) -> int:
            i = bisect.bisect_right(self.times, t) if inclusive else bisect.bisect_left(self.times, t)
            return self.totals[i - 1] if i else 0

        return upto(until, inclusive=False) - upto(after, inclusive=True)


def generate_others_questions(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    seed: int,
    catalog: TopicCatalog | None = None,
    scenarios: ScenarioCatalog | None = None,
    asked_at: dict[str, datetime] | None = None,
) -> list[QuestionRow]:
    """One ``others_preference`` question per revealed preference of a person in a user's life.

    Asked an hour after the user's last session, or at ``asked_at[persona_id]`` where given (a
    persona missing from it keeps the default). Only preferences liked at question time and
    revealed before it are asked about, in a scenario about their topic: the one of the latest
    session that revealed it when it touches the topic, else a seeded choice. Rows come out in
    question-id order; the option order is seeded by (seed, question id), as for every type."""
    catalog = catalog or load_topic_catalog()
    scenarios = scenarios or load_scenario_catalog()
    users = _load_users(con, run_id, asked_at or {})
    questions = []
    for persona_id in sorted(users):
        questions += _user_questions(users[persona_id], run_id, seed, catalog, scenarios)
    return sorted(questions, key=lambda q: q.question_id)


def _load_users(con: duckdb.DuckDBPyConnection, run_id: str, asked_at: dict[str, datetime]) -> dict[str, _User]:
    users: dict[str, _User] = {}
    for persona_id, index, scenario_id, ended_at in con.execute(
        "SELECT persona_id, session_index, scenario_id, ended_at FROM sessions WHERE run_id = ?"
        " ORDER BY persona_id, session_index",
        [run_id],
    ).fetchall():
        user = users.get(persona_id)
        if user is None:
            user = users[persona_id] = _User(persona_id, ended_at + QUESTION_DELAY, index)
        user.scenarios[index] = scenario_id
        user.ends[index] = ended_at
        user.last_session = index
        user.asked_at = max(user.asked_at, ended_at + QUESTION_DELAY)
    for persona_id, t in asked_at.items():
        if persona_id in users:
            users[persona_id].asked_at = t
    by_id: dict[str, _Pref] = {}
    for row in con.execute(
        "SELECT preference_id, persona_id, topic, option, statement, owner, valid_from, valid_to FROM preferences"
        " WHERE run_id = ? AND polarity = 'likes' ORDER BY preference_id",
        [run_id],
    ).fetchall():
        pref = _Pref(*row)
        user = users.get(pref.persona_id)
        if user is not None:
            (user.own if pref.owner == SELF else user.others).append(pref)
            by_id[pref.id] = pref
    for persona_id, pid, time, session_index, mode in con.execute(
        "SELECT persona_id, revealed_preference_id, time, session_index, reveal_mode FROM turns"
        " WHERE run_id = ? AND revealed_preference_id IS NOT NULL ORDER BY turn_id",
        [run_id],
    ).fetchall():
        pref = by_id.get(pid)
        if pref is not None and pref.owner != SELF:
            users[persona_id].reveals[pid].append(_Reveal(time, session_index, mode))
    for persona_id, time, tokens in con.execute(
        "SELECT persona_id, time, tokens FROM turns WHERE run_id = ? ORDER BY persona_id, time, turn_id", [run_id]
    ).fetchall():
        user = users.get(persona_id)
        if user is not None:
            user.times.append(time)
            user.totals.append((user.totals[-1] if user.totals else 0) + tokens)
    return users


def _user_questions(
    user: _User, run_id: str, seed: int, catalog: TopicCatalog, scenarios: ScenarioCatalog
) -> list[QuestionRow]:
    questions = []
    for pref in user.others:
        seen = [r for r in user.reveals.get(pref.id, []) if r.time < user.asked_at]
        candidates = scenarios.scenarios_for(pref.topic)
        if not seen or not candidates or not pref.held_at(user.asked_at):
            continue
        question_id = f"{user.persona_id}/q/s{user.checkpoint_session}/others/{pref.owner}/{pref.topic}/{pref.option}"
        rng = rng_for(seed, "question", question_id)
        scenario = _scenario(user, seen, candidates, rng)
        topic = catalog.topic(pref.topic)
        person = person_from_owner(pref.owner)
        entries = [(f"{scenario.lead} {others_response(catalog, person, topic.id, pref.option)}", "correct")]
        entries += [(f"{scenario.lead} {others_response(catalog, person, topic.id, o)}", source)
                    for o, source in _distractors(topic, pref, user, rng, MAX_OPTIONS - 1)]
        if len(entries) < 2:
            continue
        rng_for(seed, "option-order", question_id).shuffle(entries)
        questions.append(_row(run_id, user, question_id, pref, scenario, person, entries, seen, rng))
    return questions


def _scenario(user: _User, seen: list[_Reveal], candidates: list[Scenario], rng: random.Random) -> Scenario:
    """The scenario of the latest revealing session when it is about the topic, else a seeded one."""
    by_id = {s.id: s for s in candidates}
    for reveal in sorted(seen, key=lambda r: r.time, reverse=True):
        found = by_id.get(user.scenarios.get(reveal.session_index, ""))
        if found is not None:
            return found
    return rng.choice(candidates)


def _distractors(topic: Topic, pref: _Pref, user: _User, rng: random.Random, k: int) -> list[tuple[str, str]]:
    """The user's own liked options first (``user_own``), then other people's (``other_person``),
    then the rest (``alternative``); never an option this person likes."""
    theirs = {p.option for p in user.others if p.owner == pref.owner and p.topic == topic.id
              and p.held_at(user.asked_at)}
    free = [o.id for o in topic.options if o.id not in theirs]
    own = user.own_liked(topic.id)
    groups = [
        ("user_own", [o for o in free if o in own]),
        ("other_person", [o for o in free if o in user.others_liked(topic.id, pref.owner)]),
        ("alternative", list(free)),
    ]
    chosen: list[tuple[str, str]] = []
    taken: set[str] = set()
    for source, options in groups:
        options = [o for o in options if o not in taken]
        rng.shuffle(options)
        for o in options[: k - len(chosen)]:
            chosen.append((o, source))
            taken.add(o)
    return chosen


def _query(scenario: Scenario, person: Person, rng: random.Random) -> str:
    intent = rng.choice(scenario.intents)
    template = rng.choice(QUERY_TEMPLATES)
    return template.format(intent=intent, intent_lower=intent[:1].lower() + intent[1:], who=person.mention)


def _row(
    run_id: str, user: _User, question_id: str, pref: _Pref, scenario: Scenario, person: Person,
    entries: list[tuple[str, str]], seen: list[_Reveal], rng: random.Random,
) -> QuestionRow:
    sources = [source for _, source in entries]
    last = max(seen, key=lambda r: r.time)
    return QuestionRow(
        run_id=run_id, question_id=question_id, persona_id=user.persona_id, question_type=QUESTION_TYPE,
        asked_at=user.asked_at, topic=pref.topic, scenario_id=scenario.id, query=_query(scenario, person, rng),
        options=[text for text, _ in entries], option_sources=sources, correct_index=sources.index("correct"),
        preference_id=pref.id, stale_preference_id=None,
        reveal_mode="explicit" if any(r.mode == "explicit" for r in seen) else "implicit", reveals=len(seen),
        sessions_since_reveal=user.checkpoint_session - last.session_index,
        tokens_since_reveal=user.tokens_between(last.time, user.asked_at),
        preference_statement=pref.statement, stale_statement=None, pref_type="neutral", who="others",
    )
