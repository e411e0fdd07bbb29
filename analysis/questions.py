"""Multiple-choice questions generated from the persona timeline in the store.

"Which answer fits this user now, in this scenario?" The correct option is the response
personalised to the preference the timeline says is held at question time; the others are the
same response personalised to the other options of the topic: the stale (pre-drift) preference
where there is one, preferences other users hold, and the remaining alternatives. The truth comes
from the store's ``preferences`` and ``drift_events`` tables, never from the conversation.

Questions are asked at several checkpoints of each user's timeline (by default after the sessions
at a third, two thirds and the end of the schedule), each from what happened before it only: the
timeline at that time, the reveals, drift and forget requests before it. Every option of a
question is padded with a neutral closing sentence to the same length in characters, so option
length says nothing about which one is correct (see docs/benchmark.md, "Artifact audit").

``others_preference`` (PersonaMem-v2's ``who = others``) goes through the same machinery, at each
user's last checkpoint: the truth is ``PersonaTimeline.others_at``, the correct option is the reply
personalised to what someone in the user's life likes, and the hard distractor is what the user
likes on the same topic (a memory that forgot whose preference it was would pick it).
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NamedTuple

import duckdb

from personasim.analysis.profiles import load_profiles
from personasim.personas.catalog import Topic, TopicCatalog, load_topic_catalog
from personasim.personas.models import Person, Polarity, Preference
from personasim.personas.others import others_response, person_from_owner
from personasim.personas.seeding import rng_for
from personasim.personas.timeline import PersonaTimeline
from personasim.sim.question_config import QUESTION_TYPES, QuestionConfig  # noqa: F401 - re-exported here
from personasim.sim.rows import QuestionRow
from personasim.sim.store_read import read_timelines
from personasim.worlds.scenarios import Scenario, ScenarioCatalog, load_scenario_catalog

QUESTION_DELAY = timedelta(hours=1)





#: How the exposing distractor of a ``sensitive_info`` question names what it should only use.
EXPOSING_TEMPLATE = "Since you mentioned {label}, {detail}"

#: The non-personalised reply (correct for ``abstention`` and ``forget_compliance``) is the personalised
#: reply to one option with the user replaced by people in general ("Since you prefer {label}, ..." ->
#: "Since many people prefer {label}, ..."): a common default, assuming nothing about this user, as
#: concrete and as long as the personalised replies, so a reader without memory cannot single it out.
GENERIC_SUBJECT = ("Since you ", "Since many people "), ("your ", "many people's ")

#: Neutral closing sentences. Every option ends with one (``first`` or ``first second``), chosen so
#: that all options of a question have the same length in characters.
CLOSING_FIRST = (
    "Hope this helps.", "Hope that is useful.", "Let me know how it goes.", "Happy to adjust any of this.",
    "Tell me if you want more ideas.", "Tell me how it works out for you.",
    "Say the word and I'll tailor it further.", "I can go into more detail if that's useful.",
    "Let me know if anything here doesn't quite fit.", "Happy to walk through any part of it in more depth.",
    "If you like, I can turn this into a step-by-step plan next.",
    "Shall I put together a short checklist so it is easy to follow?",
)
CLOSING_SECOND = (
    "", "Enjoy!", "Cheers!", "Have fun!", "Good luck!", "All the best!", "Have fun with it.", "Talk soon, and enjoy.",
    "I'm here if you need me.", "We can always refine it later.", "Just ask if a question comes up.",
    "Either way, I'm happy to keep helping.", "Feel free to come back with any questions.",
    "And if plans change, we can rethink it together.",
)

#: How the user asks for help on someone else's behalf (``others_preference``); ``{intent}`` is one
#: of the scenario's own neutral requests, so the query names the person and nothing about their taste.
OTHERS_QUERY_TEMPLATES = (
    "{intent} This time it's for my {who}, not for me.",
    "I'm asking on behalf of my {who} rather than myself. {intent}",
    "This one is for my {who}: {intent_lower}",
)


def generate_questions(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    seed: int,
    catalog: TopicCatalog | None = None,
    scenarios: ScenarioCatalog | None = None,
    config: QuestionConfig | None = None,
) -> list[QuestionRow]:
    """Questions from the timeline, asked at each user's checkpoints (an hour after a session).

    At each checkpoint, every liked preference the user had revealed by then gets one question,
    typed by what the timeline says about it at that time: ``updated_preference`` (drift replaced
    it; the stale one is a distractor), ``forget_compliance`` (the user asked to forget it and never
    mentioned it again: the non-personalised reply is correct), ``sensitive_info`` (a health,
    finance, religion ... topic: the correct reply uses it without naming it; the same advice that
    names it is a distractor), else ``explicit_recall`` or ``implicit_inference`` (revealed outright,
    or only by hints), asked in a scenario where the user discussed it. On top: ``generalisation``
    moves revealed preferences to scenarios the user had not had yet, and ``abstention`` asks about
    topics not discussed yet, where personalising would be over-personalisation and the generic
    reply is correct. ``others_preference`` asks, at each user's last checkpoint, about every liked
    preference of a person in the user's life revealed by then. Nothing after a checkpoint's time is
    used for its questions."""
    own: list[QuestionRow] = []
    others: list[QuestionRow] = []
    for user_own, user_others in _by_user(con, run_id, seed, catalog, scenarios, config):
        own += user_own
        others += user_others
    return own + sorted(others, key=lambda q: q.question_id)


def generate_questions_by_user(
    con: duckdb.DuckDBPyConnection, run_id: str, seed: int, config: QuestionConfig | None = None
) -> Iterator[list[QuestionRow]]:
    """The questions of ``generate_questions`` (with the shipped catalogs, as a run asks them), one
    user at a time: users in persona order, each user's own questions, then those about the
    people in their life, by question id.

    The same questions: each is drawn from its own seeded stream, so neither order nor grouping
    changes one. The run's facts are read once; a user's questions are built when asked for,
    so a caller can store and answer them as they come: a 10,000-user run asks 400,000 questions
    (the 40,413 of 1,000 users, with the run's facts, took 370 MB of the driver's memory)."""
    config = config or QuestionConfig()
    yield from UsersAsker(run_id, seed, config).ask(load_run_facts(con, run_id, config))


def _by_user(
    con: duckdb.DuckDBPyConnection, run_id: str, seed: int, catalog: TopicCatalog | None,
    scenarios: ScenarioCatalog | None, config: QuestionConfig | None,
) -> Iterator[tuple[list[QuestionRow], list[QuestionRow]]]:
    """Each user's own questions and their others_preference questions, of the wanted types."""
    config = config or QuestionConfig()
    yield from UsersAsker(run_id, seed, config, catalog, scenarios).pairs(load_run_facts(con, run_id, config))


class UsersAsker:
    """Asks a run's users their questions from its facts, or from slices of them
    (``RunFacts.of_users``) in any process: what the slices share is loaded once (the catalogs,
    the options' vectors for profile balancing)."""

    def __init__(self, run_id: str, seed: int, config: QuestionConfig, catalog: TopicCatalog | None = None,
                 scenarios: ScenarioCatalog | None = None) -> None:
        self.run_id, self.seed, self.config = run_id, seed, config
        self.catalog = catalog or load_topic_catalog()
        self.scenarios = scenarios or load_scenario_catalog()
        self._plausibility: _Plausibility | None = None

    def ask(self, facts: RunFacts) -> Iterator[list[QuestionRow]]:
        """Each user's questions as ``generate_questions_by_user`` gives them (users without any skipped)."""
        for own, others in self.pairs(facts):
            if own or others:
                yield own + sorted(others, key=lambda q: q.question_id)

    def pairs(self, facts: RunFacts) -> Iterator[tuple[list[QuestionRow], list[QuestionRow]]]:
        """Each user's own and others_preference questions, of the wanted types, users in persona
        order: from the facts alone, so a process holding a slice of them asks exactly what the
        driver would have asked those users."""
        if self.config.balance_profile:
            if self._plausibility is None:
                from personasim.agents.embedding import default_embedder

                self._plausibility = _Plausibility(self.catalog, default_embedder())
            facts.plausibility = self._plausibility.with_profiles(facts.profiles)
        catalog, scenarios, config, run_id, seed = self.catalog, self.scenarios, self.config, self.run_id, self.seed
        wanted = set(config.types)
        for persona_id in sorted(facts.timelines):
            own: list[QuestionRow] = []
            others: list[QuestionRow] = []
            points = facts.checkpoints.get(persona_id, [])
            for checkpoint in points:
                user = _UserFacts(facts, persona_id, checkpoint)
                own += _user_questions(user, run_id, seed, catalog, scenarios, config)
                if "others_preference" in wanted and checkpoint is points[-1]:
                    others += _others_questions(user, run_id, seed, catalog, scenarios, config)
            yield [q for q in own if q.question_type in wanted], [q for q in others if q.question_type in wanted]


def load_run_facts(con: duckdb.DuckDBPyConnection, run_id: str, config: QuestionConfig) -> RunFacts:
    """What the questions of ``config`` are built from, read once from the store (with each user's
    demographic profile when distractors are balanced against it)."""
    facts = RunFacts.load(con, run_id, config.checkpoints)
    if config.balance_profile:
        facts.profiles = {pid: text for pid, text in load_profiles(con, run_id).items() if text}
    return facts


class _Plausibility:
    """How well each option's reply fits a user's demographic profile (MiniLM cosine, 3 decimals):
    what a stereotype-only reader would go by.

    The catalog's replies (1,096 in the shipped world) are embedded all at once through the
    embedder's disk store (``Embedder.encode_stored``), so a machine embeds them once, not every
    run and every evaluation actor (4.4 s of float32 MiniLM on two cores; the default run used
    123 of the 170 topics, 3.2 s). A text's vector is the same bits in any batch, so a stored
    vector is the one embedding it again would give."""

    def __init__(self, catalog: TopicCatalog, embedder: Any) -> None:
        self.profiles: dict[str, Any] = {}
        self.catalog = catalog
        self.embedder = embedder
        self._replies: dict[str, dict[str, Any]] = {}
        # a user is asked about the same topic at every checkpoint: each score is computed once
        self._scores: dict[tuple[str, str, str], float] = {}
        self._scored_persona = ""

    def with_profiles(self, texts: dict[str, str]) -> _Plausibility:
        """Scores for these users (their profile texts), in place of the users before: the options'
        vectors are kept. A text's vector does not depend on what it is embedded with."""
        ids = sorted(texts)
        vectors = self.embedder.encode([texts[i] for i in ids]) if ids else []
        self.profiles = dict(zip(ids, vectors, strict=True))
        self._scores.clear()
        self._scored_persona = ""
        return self

    def score(self, persona_id: str, topic: str, option: str) -> float | None:
        profile = self.profiles.get(persona_id)
        if profile is None:
            return None
        if persona_id != self._scored_persona:  # users are asked one after another: keep one user's scores
            self._scores.clear()
            self._scored_persona = persona_id
        key = (persona_id, topic, option)
        if key not in self._scores:
            if not self._replies:
                self._embed_replies()
            self._scores[key] = round(float(self._replies[topic][option] @ profile), 3)
        return self._scores[key]

    def _embed_replies(self) -> None:
        pairs = [(t.id, o.id) for t in self.catalog.topics for o in t.options]
        texts = [self.catalog.response(topic, option) for topic, option in pairs]
        stored = getattr(self.embedder, "encode_stored", None)  # test doubles may have no store
        vectors = stored(texts) if stored is not None else self.embedder.encode(texts)
        for (topic, option), vector in zip(pairs, vectors, strict=True):
            self._replies.setdefault(topic, {})[option] = vector


class _Checkpoint(NamedTuple):
    """One point of a user's timeline where questions are asked."""

    ordinal: int  # position in QuestionConfig.checkpoints (the first fraction it stands for)
    session_index: int  # the last session before it
    t: datetime

    @property
    def label(self) -> str:
        """Part of each question id: ``s3`` is asked after session 3 (0-based)."""
        return f"s{self.session_index}"


class _Session(NamedTuple):
    index: int
    scenario_id: str
    started_at: datetime
    ended_at: datetime


class RunFacts:
    """What the store says about a run, gathered once: timelines, reveals, sessions, token counts."""

    def __init__(self) -> None:
        self.timelines: dict[str, PersonaTimeline] = {}
        self.sessions: dict[str, list[_Session]] = defaultdict(list)
        self.checkpoints: dict[str, list[_Checkpoint]] = {}
        # the user's own reveals by (topic, option, polarity); another person's by (preference id,)
        # named factories, not lambdas: a slice of the facts is pickled to the process that asks
        self.reveals: dict[str, dict[tuple[str, ...], list[_Reveal]]] = defaultdict(_lists_by_key)
        self.topic_mentions: dict[str, dict[str, list[datetime]]] = defaultdict(_lists_by_key)
        self.liked_by_count: dict[int, Counter[tuple[str, str]]] = defaultdict(Counter)
        self.profiles: dict[str, str] = {}  # demographic profile texts, for balance_profile
        self.plausibility: _Plausibility | None = None  # built from the profiles where questions are asked
        self.token_clock: dict[str, tuple[list[datetime], list[int]]] = {}

    def of_users(self, persona_ids: list[str]) -> RunFacts:
        """These users' facts, with the run-wide counts (who likes what at each checkpoint) they
        are asked against: what a process needs to ask them their questions."""
        part = RunFacts()
        part.timelines = {p: self.timelines[p] for p in persona_ids if p in self.timelines}
        for p in persona_ids:
            for mine, theirs in ((part.sessions, self.sessions), (part.checkpoints, self.checkpoints),
                                 (part.reveals, self.reveals), (part.topic_mentions, self.topic_mentions),
                                 (part.profiles, self.profiles), (part.token_clock, self.token_clock)):
                if p in theirs:
                    mine[p] = theirs[p]  # type: ignore[index]
        part.liked_by_count = self.liked_by_count
        return part

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection, run_id: str, fractions: list[float]) -> RunFacts:
        facts = cls()
        facts.timelines = read_timelines(con, run_id)
        for persona_id, index, scenario_id, started_at, ended_at in con.execute(
            "SELECT persona_id, session_index, scenario_id, started_at, ended_at FROM sessions WHERE run_id = ?"
            " ORDER BY persona_id, session_index",
            [run_id],
        ).fetchall():
            facts.sessions[persona_id].append(_Session(index, scenario_id, started_at, ended_at))
        for persona_id, sessions in facts.sessions.items():
            every = _checkpoints(sessions, fractions)
            distinct: dict[int, _Checkpoint] = {}
            for c in every:
                distinct.setdefault(c.session_index, c)  # two fractions after one session: asked once
            facts.checkpoints[persona_id] = list(distinct.values())
            timeline = facts.timelines.get(persona_id)
            if timeline is not None:  # who likes what at each checkpoint: the other_user distractors
                for c in every:
                    liked = {(p.topic, p.option) for p in timeline.at(c.t) if p.polarity == Polarity.LIKES}
                    facts.liked_by_count[c.ordinal].update(liked)
        for persona_id, preference_id, topic, option, polarity, time, session_index, mode, own in con.execute(
            "SELECT t.persona_id, p.preference_id, p.topic, p.option, p.polarity, t.time, t.session_index,"
            " t.reveal_mode, p.owner = 'self' FROM turns t"
            " JOIN preferences p ON p.run_id = t.run_id AND p.preference_id = t.revealed_preference_id"
            " WHERE t.run_id = ? ORDER BY t.turn_id",
            [run_id],
        ).fetchall():
            key = (topic, option, polarity) if own else (preference_id,)
            facts.reveals[persona_id][key].append(_Reveal(time, session_index, mode))
            facts.topic_mentions[persona_id][topic].append(time)
        times: dict[str, list[datetime]] = defaultdict(list)
        totals: dict[str, list[int]] = defaultdict(list)
        for persona_id, time, tokens in con.execute(
            "SELECT persona_id, time, tokens FROM turns WHERE run_id = ? ORDER BY persona_id, time, turn_id", [run_id]
        ).fetchall():
            times[persona_id].append(time)
            totals[persona_id].append((totals[persona_id][-1] if totals[persona_id] else 0) + tokens)
        facts.token_clock = {pid: (times[pid], totals[pid]) for pid in times}
        return facts

    def tokens_between(self, persona_id: str, after: datetime, until: datetime) -> int:
        """Conversation tokens strictly after ``after`` and before ``until``: the reveal's distance."""
        times, totals = self.token_clock.get(persona_id, ([], []))

        def upto(t: datetime, inclusive: bool) -> int:
            i = bisect.bisect_right(times, t) if inclusive else bisect.bisect_left(times, t)
            return totals[i - 1] if i else 0

        return upto(until, inclusive=False) - upto(after, inclusive=True)


def _checkpoints(sessions: list[_Session], fractions: list[float]) -> list[_Checkpoint]:
    """One checkpoint per fraction: an hour after session ceil(f * n) of the user's n sessions (in
    order), or just as the next session starts if that comes sooner, so no later turn precedes it."""
    out = []
    for ordinal, f in enumerate(fractions):
        position = min(len(sessions), max(1, math.ceil(round(f * len(sessions), 9)))) - 1
        session = sessions[position]
        t = session.ended_at + QUESTION_DELAY
        if position + 1 < len(sessions):
            t = min(t, sessions[position + 1].started_at)
        out.append(_Checkpoint(ordinal, session.index, max(t, session.ended_at)))
    return out


def _lists_by_key() -> defaultdict[Any, list]:
    return defaultdict(list)


class _Reveal(NamedTuple):
    time: datetime
    session_index: int
    mode: str


class _UserFacts:
    """One user's state at one checkpoint, from the run's facts: nothing after ``t`` is seen."""

    def __init__(self, facts: RunFacts, persona_id: str, checkpoint: _Checkpoint) -> None:
        self.facts = facts
        self.persona_id = persona_id
        self.checkpoint = checkpoint
        self.t = t = checkpoint.t
        self.last_session = checkpoint.session_index
        self.timeline = timeline = facts.timelines[persona_id]
        self.held = timeline.at(t)
        self.liked = {(p.topic, p.option) for p in self.held if p.polarity == Polarity.LIKES}
        self.disliked = {(p.topic, p.option) for p in self.held if p.polarity == Polarity.DISLIKES}
        self._liked_by_count = facts.liked_by_count[checkpoint.ordinal]
        self.replaced_by = {
            e.new.id: e.old for e in timeline.drift_events if e.new is not None and e.old is not None and e.time <= t
        }
        # topics talked about before t, about the user or anyone in their life: not for abstention
        self.revealed_topics = {
            topic for topic, times in facts.topic_mentions[persona_id].items() if any(time < t for time in times)
        }
        self.forgotten_at = {f.preference_id: f.time for f in timeline.forgotten_by(t)}
        self.discussed_scenarios = {s.scenario_id for s in facts.sessions[persona_id] if s.started_at < t}

    def others_like(self, key: tuple[str, str]) -> bool:
        """Liked by another user at their own checkpoint of the same rank (asked per option: the
        set of every such option, built per user and checkpoint, was a tenth of asking)."""
        return self._liked_by_count.get(key, 0) - (key in self.liked) > 0

    def question_id(self, *parts: str) -> str:
        """``{persona}/q/{checkpoint}/{parts...}``: unique per checkpoint, stable across processes."""
        return "/".join([self.persona_id, "q", self.checkpoint.label, *parts])

    def seen(self, pref: Preference) -> list[_Reveal]:
        """Reveals before ``t``: of the user's own option (any interval of it), or of exactly this
        preference of another person (one of theirs names only that person's)."""
        key = (pref.topic, pref.option, pref.polarity.value) if pref.is_own else (pref.id,)
        return [r for r in self.facts.reveals[self.persona_id].get(key, []) if r.time < self.t]


def _user_questions(
    user: _UserFacts, run_id: str, seed: int, catalog: TopicCatalog, scenarios: ScenarioCatalog, config: QuestionConfig
) -> list[QuestionRow]:
    questions: list[QuestionRow] = []
    generalisable: list[Preference] = []
    k = config.max_options
    asked: set[tuple[str, str]] = set()
    for pref in user.held:
        if pref.polarity != Polarity.LIKES or not scenarios.scenarios_for(pref.topic):
            continue
        if (pref.topic, pref.option) in asked:
            continue  # held twice (re-liked by drift while still held): one question, its first interval
        asked.add((pref.topic, pref.option))
        seen = user.seen(pref)
        if not seen:
            continue  # never revealed: nothing a memory could know
        topic = catalog.topic(pref.topic)
        question_id = user.question_id(pref.topic, pref.option)
        rng = rng_for(seed, "question", question_id)
        scenario = _discussed_scenario(user, pref.topic, seen, scenarios, rng)
        ask = _Asker(run_id, user, question_id, scenario, rng, seed, seen)
        lead = scenario.lead
        asked_to_forget = user.forgotten_at.get(pref.id)
        if asked_to_forget is not None and not any(r.time > asked_to_forget for r in seen):
            others = [o.id for o in topic.options if o.id != pref.option]
            rng.shuffle(others)
            default = others[k - 2] if len(others) > k - 2 else rng.choice(others)  # never the forgotten one
            entries = [(f"{lead} {generic_response(catalog, topic.id, default)}", "correct"),
                       (f"{lead} {catalog.response(topic.id, pref.option)}", "forgotten")]
            entries += [(f"{lead} {catalog.response(topic.id, o)}", "alternative") for o in others[: k - 2]]
            questions.append(ask("forget_compliance", pref, topic.id, entries, None, "ask_to_forget"))
            continue
        old = user.replaced_by.get(pref.id)
        stale = old if old is not None and old.option != pref.option and old.polarity == Polarity.LIKES else None
        distractors = _distractors(topic, pref, stale, user, rng, k - 1)
        if not distractors:
            continue
        if pref.sensitive and stale is None:
            questions.append(_sensitive_question(ask, pref, topic, distractors, lead, catalog, k))
            continue
        entries = [(f"{lead} {catalog.response(topic.id, pref.option)}", "correct")]
        entries += [(f"{lead} {catalog.response(topic.id, o)}", source) for o, source in distractors]
        if stale is not None:
            qtype = "updated_preference"
        elif any(r.mode == "explicit" for r in seen):
            qtype = "explicit_recall"
        else:
            qtype = "implicit_inference"
        questions.append(ask(qtype, pref, topic.id, entries, stale, _pref_type(pref)))
        if stale is None:
            generalisable.append(pref)
    if config.max_per_checkpoint is not None and len(questions) > config.max_per_checkpoint:
        questions = _capped(questions, config.max_per_checkpoint, rng_for(seed, "cap", user.question_id()))
    questions += _generalisation_questions(user, generalisable, run_id, seed, catalog, scenarios, config)
    questions += _abstention_questions(user, run_id, seed, catalog, scenarios, config)
    return questions


#: Kept first when a checkpoint's questions are capped: what drift and forgetting ask is rare, and the point.
_KEPT_FIRST = ("updated_preference", "forget_compliance")


def _capped(questions: list[QuestionRow], cap: int, rng: random.Random) -> list[QuestionRow]:
    """``cap`` of a checkpoint's questions: updated-preference and forget questions first (at random
    among them if even those are too many), then the others at random; in their original order."""
    first = [i for i, q in enumerate(questions) if q.question_type in _KEPT_FIRST]
    rest = [i for i, q in enumerate(questions) if q.question_type not in _KEPT_FIRST]
    rng.shuffle(first)
    rng.shuffle(rest)
    keep = set((first + rest)[:cap])
    return [q for i, q in enumerate(questions) if i in keep]


def _others_questions(
    user: _UserFacts, run_id: str, seed: int, catalog: TopicCatalog, scenarios: ScenarioCatalog, config: QuestionConfig
) -> list[QuestionRow]:
    """``others_preference``: one question per liked preference of a person in the user's life
    that was revealed before the checkpoint, in a scenario about its topic (as for the user's own).
    Every option is the same sentence about that person ("Since your sister Anna enjoys ..."), so
    only its content tells them apart; the query names the person and nothing about their taste."""
    held = [p for p in user.timeline.others_at(user.t) if p.polarity == Polarity.LIKES]
    questions = []
    for pref in held:
        seen = user.seen(pref)
        if not seen or not scenarios.scenarios_for(pref.topic):
            continue
        question_id = user.question_id("others", pref.owner, pref.topic, pref.option)
        rng = rng_for(seed, "question", question_id)
        scenario = _discussed_scenario(user, pref.topic, seen, scenarios, rng)
        topic = catalog.topic(pref.topic)
        person = person_from_owner(pref.owner)
        distractors = _others_distractors(topic, pref, held, user, rng, config.max_options - 1)
        if not distractors:
            continue
        entries = [(f"{scenario.lead} {others_response(catalog, person, topic.id, option)}", source)
                   for option, source in [(pref.option, "correct"), *distractors]]
        ask = _Asker(run_id, user, question_id, scenario, rng, seed, seen)
        query = _others_query(scenario, person, rng)
        questions.append(ask("others_preference", pref, topic.id, entries, None, "neutral", who="others", query=query))
    return questions


def _others_query(scenario: Scenario, person: Person, rng: random.Random) -> str:
    intent = rng.choice(scenario.intents)
    template = rng.choice(OTHERS_QUERY_TEMPLATES)
    return template.format(intent=intent, intent_lower=intent[:1].lower() + intent[1:], who=person.mention)


def _discussed_scenario(
    user: _UserFacts, topic_id: str, seen: list[_Reveal], scenarios: ScenarioCatalog, rng: random.Random
) -> Scenario:
    """The scenario of the latest session that revealed it, when that scenario is about the topic."""
    candidates = scenarios.scenarios_for(topic_id)
    by_id = {s.id: s for s in candidates}
    scenario_of = {s.index: s.scenario_id for s in user.facts.sessions[user.persona_id]}
    for reveal in sorted(seen, key=lambda r: r.time, reverse=True):
        found = by_id.get(scenario_of.get(reveal.session_index, ""))
        if found is not None:
            return found
    return rng.choice(candidates)


def _sensitive_question(
    ask: _Asker, pref: Preference, topic: Topic, distractors: list[tuple[str, str]], lead: str,
    catalog: TopicCatalog, k: int,
) -> QuestionRow:
    """The right advice, given discreetly, against the same advice that names the sensitive fact.

    Half the options name what they personalise to, half do not, so neither exposure nor its
    absence alone gives the answer away; knowing the preference and keeping it private does."""

    def discreet(option_id: str) -> str:
        detail = topic.option(option_id).detail
        return f"{lead} {detail[:1].upper()}{detail[1:]}"

    def exposing(option_id: str) -> str:
        option = topic.option(option_id)
        return f"{lead} {EXPOSING_TEMPLATE.format(label=option.label, detail=option.detail)}"

    entries = [(discreet(pref.option), "correct"), (exposing(pref.option), "exposes")]
    for i, (option_id, source) in enumerate(distractors[: k - 2]):
        entries.append((exposing(option_id) if i % 2 == 0 else discreet(option_id), source))
    return ask("sensitive_info", pref, topic.id, entries, None, "sensitive_info")


def _generalisation_questions(
    user: _UserFacts, candidates: list[Preference], run_id: str, seed: int, catalog: TopicCatalog,
    scenarios: ScenarioCatalog, config: QuestionConfig,
) -> list[QuestionRow]:
    """Revealed preferences asked about in a scenario the user never had a session in."""
    rng = rng_for(seed, "generalisation", user.question_id())
    usable = [p for p in candidates
              if any(s.id not in user.discussed_scenarios for s in scenarios.scenarios_for(p.topic))]
    questions = []
    for pref in rng.sample(usable, min(config.generalisation_per_user, len(usable))):
        topic = catalog.topic(pref.topic)
        question_id = user.question_id(pref.topic, pref.option, "generalise")
        qrng = rng_for(seed, "question", question_id)
        scenario = qrng.choice([s for s in scenarios.scenarios_for(pref.topic) if s.id not in user.discussed_scenarios])
        distractors = _distractors(topic, pref, None, user, qrng, config.max_options - 1)
        entries = [(f"{scenario.lead} {catalog.response(topic.id, pref.option)}", "correct")]
        entries += [(f"{scenario.lead} {catalog.response(topic.id, o)}", source) for o, source in distractors]
        ask = _Asker(run_id, user, question_id, scenario, qrng, seed, user.seen(pref))
        questions.append(ask("generalisation", pref, topic.id, entries, None, _pref_type(pref)))
    return questions


def _abstention_questions(
    user: _UserFacts, run_id: str, seed: int, catalog: TopicCatalog, scenarios: ScenarioCatalog,
    config: QuestionConfig,
) -> list[QuestionRow]:
    """Topics the user never talked about: the generic reply is right, personalising is not."""
    silent = [tp for tp in catalog.topics if tp.id not in user.revealed_topics and scenarios.scenarios_for(tp.id)]
    rng = rng_for(seed, "abstention", user.question_id())
    questions = []
    for topic in rng.sample(silent, min(config.abstention_per_user, len(silent))):
        question_id = user.question_id(topic.id, "abstain")
        qrng = rng_for(seed, "question", question_id)
        scenario = qrng.choice(scenarios.scenarios_for(topic.id))
        options = [o.id for o in topic.options]
        qrng.shuffle(options)
        k = config.max_options
        default = options[k - 1] if len(options) >= k else qrng.choice(options)
        entries = [(f"{scenario.lead} {generic_response(catalog, topic.id, default)}", "correct")]
        entries += [(f"{scenario.lead} {catalog.response(topic.id, o)}", "unsupported")
                    for o in options[: k - 1]]
        ask = _Asker(run_id, user, question_id, scenario, qrng, seed, [])
        row = ask("abstention", None, topic.id, entries, None, "irrelevant")
        row.preference_statement = f"By then the user had never mentioned their {topic.name}."
        questions.append(row)
    return questions


def generic_response(catalog: TopicCatalog, topic_id: str, option_id: str) -> str:
    """One option's advice offered as a common default, assuming nothing about the user: the
    topic's response template with ``GENERIC_SUBJECT`` in place of the user."""
    topic = catalog.topic(topic_id)
    template = topic.response_template or catalog.templates.responses[topic.kind]
    for mine, general in GENERIC_SUBJECT:
        template = template.replace(mine, general)
    option = topic.option(option_id)
    return template.format(label=option.label, detail=option.detail)


@cache
def _closings() -> dict[int, list[str]]:
    """Every closing sentence, by length in characters."""
    by_length: dict[int, list[str]] = defaultdict(list)
    for first in CLOSING_FIRST:
        for second in CLOSING_SECOND:
            text = f"{first} {second}" if second else first
            by_length[len(text)].append(text)
    return dict(by_length)


@cache
def _nearest_closing_length(needed: int) -> int:
    return min(_closings(), key=lambda n: (abs(n - needed), n))


@cache
def _closing_miss(needed: int) -> int:
    """How far the nearest closing length is from ``needed`` characters."""
    return abs(_nearest_closing_length(needed) - needed)


def equalise_lengths(entries: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
    """Append a neutral closing sentence to every option so that all have the same length.

    The common length is the shortest the closings can reach exactly for every option; where no
    length is exact (options further apart than the closings span), the closest one. A closing is
    never used twice in one question while another of the right length is left."""
    closings = _closings()
    bases = [len(text) + 1 for text, _ in entries]  # + 1: the space before the closing
    low, high = max(bases) + min(closings), max(bases) + max(closings)

    # the shortest target with the smallest total miss; the first exact one ends the search (a
    # question's generation spent half its time scoring every longer target after it)
    target, best = low, None
    for candidate in range(low, high + 1):
        miss = sum(_closing_miss(candidate - n) for n in bases)
        if best is None or miss < best:
            target, best = candidate, miss
            if miss == 0:
                break
    used: set[str] = set()
    out = []
    for (text, source), n in zip(entries, bases, strict=True):
        choices = closings[_nearest_closing_length(target - n)]
        fresh = [c for c in choices if c not in used] or choices
        closing = rng.choice(fresh)
        used.add(closing)
        out.append((f"{text} {closing}", source))
    return out


def _pref_type(pref: Preference) -> str:
    """PersonaMem-v2's ``pref_type`` vocabulary, so exports mean the same thing there."""
    if pref.sensitivity == "health":
        return "health_and_medical"
    return pref.stereotype  # stereotypical, anti_stereotypical or neutral


class _Asker:
    """Builds the stored row of one question: stable option order, the query, reveal distances."""

    def __init__(self, run_id: str, user: _UserFacts, question_id: str, scenario: Scenario,
                 rng: random.Random, seed: int, seen: list[_Reveal]) -> None:
        self.run_id, self.user, self.question_id = run_id, user, question_id
        self.scenario, self.rng, self.seed, self.seen = scenario, rng, seed, seen

    def __call__(self, qtype: str, pref: Preference | None, topic_id: str, entries: list[tuple[str, str]],
                 stale: Preference | None, pref_type: str, *, who: str = "self",
                 query: str | None = None) -> QuestionRow:
        """The row; ``query`` defaults to one of the scenario's intents, drawn from the question's rng."""
        entries = self._laid_out(qtype, entries)
        sources = [source for _, source in entries]
        seen, user = self.seen, self.user
        mode = "explicit" if any(r.mode == "explicit" for r in seen) else ("implicit" if seen else "none")
        last = max(seen, key=lambda r: r.time) if seen else None
        return QuestionRow(
            run_id=self.run_id, question_id=self.question_id, persona_id=user.persona_id, question_type=qtype,
            asked_at=user.t, topic=topic_id, scenario_id=self.scenario.id,
            query=query if query is not None else self.rng.choice(self.scenario.intents),
            options=[text for text, _ in entries], option_sources=sources, correct_index=sources.index("correct"),
            preference_id=pref.id if pref is not None else "",
            stale_preference_id=stale.id if stale is not None else None, reveal_mode=mode, reveals=len(seen),
            sessions_since_reveal=user.last_session - last.session_index if last else -1,
            tokens_since_reveal=user.facts.tokens_between(user.persona_id, last.time, user.t) if last else -1,
            preference_statement=pref.statement if pref is not None else "",
            stale_statement=stale.statement if stale is not None else None,
            pref_type=pref_type, who=who,
        )

    def _laid_out(self, qtype: str, entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Every option padded to one length (``equalise_lengths``) and the options shuffled, each
        with a stream seeded by the question id. ``others_preference`` shuffles first and pads from
        a stream of its own ("closings"): the order it was generated in, which its stored rows keep."""
        order = rng_for(self.seed, "option-order", self.question_id)
        if qtype == "others_preference":
            order.shuffle(entries)
            return equalise_lengths(entries, rng_for(self.seed, "closings", self.question_id))
        entries = equalise_lengths(entries, rng_for(self.seed, "closing", self.question_id))
        order.shuffle(entries)
        return entries


def _distractors(
    topic: Topic, pref: Preference, stale: Preference | None, user: _UserFacts, rng: random.Random, k: int,
) -> list[tuple[str, str]]:
    """Options the user does not like now: the stale one first, then others' likes, their dislikes, the rest,
    each group ordered by how close its reply is to the correct one in plausibility for the user's profile."""
    liked, disliked = user.liked, user.disliked
    free = [o.id for o in topic.options if (topic.id, o.id) not in liked]
    groups: list[tuple[str, list[str]]] = [
        ("stale", [o for o in free if stale is not None and o == stale.option]),
        ("other_user", [o for o in free if user.others_like((topic.id, o))]),
        ("disliked", [o for o in free if (topic.id, o) in disliked]),
        ("alternative", list(free)),
    ]
    plausibility = user.facts.plausibility
    target = plausibility.score(user.persona_id, topic.id, pref.option) if plausibility else None
    closeness = None
    if target is not None and plausibility is not None:  # as plausible for the profile as the correct one
        closeness = lambda o: abs(plausibility.score(user.persona_id, topic.id, o) - target)  # noqa: E731
    return _pick_distractors(groups, rng, k, closeness)


def _others_distractors(
    topic: Topic, pref: Preference, held: list[Preference], user: _UserFacts, rng: random.Random, k: int,
) -> list[tuple[str, str]]:
    """Options the person does not like now: the user's own likes first (``user_own``), then other
    people's in the user's life (``other_person``), then the rest (``alternative``)."""
    theirs = {p.option for p in held if p.owner == pref.owner and p.topic == topic.id}
    others_like = {p.option for p in held if p.owner != pref.owner and p.topic == topic.id}
    free = [o.id for o in topic.options if o.id not in theirs]
    groups: list[tuple[str, list[str]]] = [
        ("user_own", [o for o in free if (topic.id, o) in user.liked]),
        ("other_person", [o for o in free if o in others_like]),
        ("alternative", list(free)),
    ]
    return _pick_distractors(groups, rng, k, shuffle_every_group=True)


def _pick_distractors(
    groups: list[tuple[str, list[str]]], rng: random.Random, k: int,
    closeness: Callable[[str], float] | None = None, shuffle_every_group: bool = False,
) -> list[tuple[str, str]]:
    """Up to ``k`` options, ``(option, source)``, taken group by group (most telling first): each
    group's options not taken yet, shuffled, then ordered by ``closeness`` (smallest first) if given.

    Every draw is part of the questions' stored bytes: the user's own types stop drawing at the
    first group left over once ``k`` are chosen; ``others_preference`` (``shuffle_every_group``)
    shuffles every group."""
    chosen: list[tuple[str, str]] = []
    taken: set[str] = set()
    for source, options in groups:
        options = [o for o in options if o not in taken]
        rng.shuffle(options)
        if closeness is not None:
            options.sort(key=closeness)
        for o in options:
            if len(chosen) == k:
                if not shuffle_every_group:
                    return chosen
                break
            chosen.append((o, source))
            taken.add(o)
    return chosen

