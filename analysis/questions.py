"""Multiple-choice questions generated from the persona timeline in the store.

"Which answer fits this user now, in this scenario?" The correct option is the response
personalised to the preference the timeline says is held at question time; the others are the
same response personalised to the other options of the topic: the stale (pre-drift) preference
where there is one, preferences other users hold, and the remaining alternatives. The truth comes
from the store's ``preferences`` and ``drift_events`` tables, never from the conversation.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import NamedTuple

import duckdb
from pydantic import BaseModel, ConfigDict, Field, field_validator

from personasim.personas.catalog import Topic, TopicCatalog, load_topic_catalog
from personasim.personas.models import DriftEvent, ForgetRequest, Polarity, Preference
from personasim.personas.seeding import rng_for
from personasim.personas.timeline import PersonaTimeline
from personasim.sim.rows import QuestionRow
from personasim.worlds.scenarios import Scenario, ScenarioCatalog, load_scenario_catalog

QUESTION_DELAY = timedelta(hours=1)


def load_timelines(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, PersonaTimeline]:
    """Rebuild every persona's timeline from the store alone."""
    prefs: dict[str, Preference] = {}
    rows = con.execute(
        "SELECT preference_id, persona_id, domain, topic, option, statement, polarity, strength, sensitive,"
        " sensitivity, stereotype, valid_from, valid_to FROM preferences WHERE run_id = ? ORDER BY preference_id",
        [run_id],
    ).fetchall()
    for r in rows:
        prefs[r[0]] = Preference(
            id=r[0], persona_id=r[1], domain=r[2], topic=r[3], option=r[4], statement=r[5],
            polarity=Polarity(r[6]), strength=r[7], sensitive=r[8], sensitivity=r[9], stereotype=r[10],
            valid_from=r[11], valid_to=r[12],
        )
    events: dict[str, list[DriftEvent]] = defaultdict(list)
    for e in con.execute(
        "SELECT event_id, persona_id, time, kind, cause, topic, old_preference_id, new_preference_id"
        " FROM drift_events WHERE run_id = ? ORDER BY event_id",
        [run_id],
    ).fetchall():
        events[e[1]].append(DriftEvent(
            id=e[0], persona_id=e[1], time=e[2], kind=e[3], cause=e[4], topic=e[5],
            old=prefs[e[6]] if e[6] else None, new=prefs[e[7]] if e[7] else None,
        ))
    forgets: dict[str, list[ForgetRequest]] = defaultdict(list)
    for f in con.execute(
        "SELECT request_id, persona_id, time, preference_id, topic FROM forget_requests WHERE run_id = ?"
        " ORDER BY request_id",
        [run_id],
    ).fetchall():
        forgets[f[1]].append(ForgetRequest(id=f[0], persona_id=f[1], time=f[2], preference_id=f[3], topic=f[4]))
    by_persona: dict[str, list[Preference]] = defaultdict(list)
    for p in prefs.values():
        by_persona[p.persona_id].append(p)
    return {pid: PersonaTimeline(ps, events.get(pid, []), forgets.get(pid, [])) for pid, ps in by_persona.items()}


QUESTION_TYPES = (
    "explicit_recall",
    "implicit_inference",
    "updated_preference",
    "generalisation",
    "sensitive_info",
    "forget_compliance",
    "abstention",
)

#: How the exposing distractor of a ``sensitive_info`` question names what it should only use.
EXPOSING_TEMPLATE = "Since you mentioned {label}, {detail}"


class QuestionConfig(BaseModel):
    """Which questions to ask. Per-user counts bound the types that could otherwise ask about everything."""

    model_config = ConfigDict(extra="forbid")

    types: list[str] = Field(default_factory=lambda: list(QUESTION_TYPES))
    generalisation_per_user: int = Field(
        default=2, ge=0, description="Questions per user that move a revealed preference to a scenario never discussed."
    )
    abstention_per_user: int = Field(
        default=1, ge=0, description="Questions per user about a topic never discussed (generic reply correct)."
    )
    max_options: int = Field(default=4, ge=2, le=8)

    @field_validator("types")
    @classmethod
    def _known_types(cls, types: list[str]) -> list[str]:
        unknown = [t for t in types if t not in QUESTION_TYPES]
        if unknown:
            listed = ", ".join(map(repr, unknown))
            raise ValueError(f"unknown question type {listed}; choose from {', '.join(QUESTION_TYPES)}")
        return types


def generate_questions(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    seed: int,
    catalog: TopicCatalog | None = None,
    scenarios: ScenarioCatalog | None = None,
    config: QuestionConfig | None = None,
) -> list[QuestionRow]:
    """Questions from the timeline, asked an hour after each user's last session.

    Every liked preference the user revealed gets one question, typed by what the timeline says
    about it: ``updated_preference`` (drift replaced it; the stale one is a distractor),
    ``forget_compliance`` (the user asked to forget it and never mentioned it again: the
    non-personalised reply is correct), ``sensitive_info`` (a health, finance, religion ... topic:
    the correct reply uses it without naming it; the same advice that names it is a distractor),
    else ``explicit_recall`` or ``implicit_inference`` (revealed outright, or only by hints), asked
    in a scenario where the user discussed it. On top: ``generalisation`` moves revealed preferences
    to scenarios the user never had, and ``abstention`` asks about topics never discussed, where
    personalising would be over-personalisation and the generic reply is correct."""
    catalog = catalog or load_topic_catalog()
    scenarios = scenarios or load_scenario_catalog()
    config = config or QuestionConfig()
    facts = _RunFacts.load(con, run_id)
    questions: list[QuestionRow] = []
    for persona_id in sorted(facts.timelines):
        if persona_id in facts.asked_at:
            user = _UserFacts(facts, persona_id)
            questions += _user_questions(user, run_id, seed, catalog, scenarios, config)
    wanted = set(config.types)
    return [q for q in questions if q.question_type in wanted]


class _RunFacts:
    """What the store says about a run, gathered once: timelines, reveals, sessions, token counts."""

    def __init__(self) -> None:
        self.timelines: dict[str, PersonaTimeline] = {}
        self.asked_at: dict[str, datetime] = {}
        self.last_session: dict[str, int] = {}
        self.session_scenarios: dict[str, dict[int, str]] = defaultdict(dict)
        self.reveals: dict[str, dict[tuple[str, str, str], list[_Reveal]]] = defaultdict(lambda: defaultdict(list))
        self.liked_by_count: Counter[tuple[str, str]] = Counter()
        self.token_clock: dict[str, tuple[list[datetime], list[int]]] = {}

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection, run_id: str) -> _RunFacts:
        facts = cls()
        facts.timelines = load_timelines(con, run_id)
        for persona_id, index, scenario_id, ended_at in con.execute(
            "SELECT persona_id, session_index, scenario_id, ended_at FROM sessions WHERE run_id = ?"
            " ORDER BY persona_id, session_index",
            [run_id],
        ).fetchall():
            facts.session_scenarios[persona_id][index] = scenario_id
            facts.last_session[persona_id] = index
            facts.asked_at[persona_id] = max(facts.asked_at.get(persona_id, ended_at), ended_at + QUESTION_DELAY)
        for persona_id, topic, option, polarity, time, session_index, mode in con.execute(
            "SELECT t.persona_id, p.topic, p.option, p.polarity, t.time, t.session_index, t.reveal_mode FROM turns t"
            " JOIN preferences p ON p.run_id = t.run_id AND p.preference_id = t.revealed_preference_id"
            " WHERE t.run_id = ? ORDER BY t.turn_id",
            [run_id],
        ).fetchall():
            facts.reveals[persona_id][(topic, option, polarity)].append(_Reveal(time, session_index, mode))
        for persona_id, t in facts.asked_at.items():
            timeline = facts.timelines.get(persona_id)
            if timeline is not None:
                liked = {(p.topic, p.option) for p in timeline.at(t) if p.polarity == Polarity.LIKES}
                facts.liked_by_count.update(liked)
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


class _Reveal(NamedTuple):
    time: datetime
    session_index: int
    mode: str


class _UserFacts:
    """One user's state at question time, from the run's facts."""

    def __init__(self, facts: _RunFacts, persona_id: str) -> None:
        self.facts = facts
        self.persona_id = persona_id
        self.t = t = facts.asked_at[persona_id]
        self.timeline = timeline = facts.timelines[persona_id]
        self.held = timeline.at(t)
        self.liked = {(p.topic, p.option) for p in self.held if p.polarity == Polarity.LIKES}
        self.disliked = {(p.topic, p.option) for p in self.held if p.polarity == Polarity.DISLIKES}
        # liked by another user at their own question time (all users are asked at the end of the run)
        self.others_like = {key for key, n in facts.liked_by_count.items() if n - (key in self.liked) > 0}
        self.replaced_by = {
            e.new.id: e.old for e in timeline.drift_events if e.new is not None and e.old is not None and e.time <= t
        }
        self.revealed_topics = {
            topic for (topic, _, _), seen in facts.reveals[persona_id].items() if any(r.time < t for r in seen)
        }
        self.forgotten_at = {f.preference_id: f.time for f in timeline.forgotten_by(t)}
        self.discussed_scenarios = set(facts.session_scenarios[persona_id].values())

    def seen(self, pref: Preference) -> list[_Reveal]:
        key = (pref.topic, pref.option, pref.polarity.value)
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
        question_id = f"{user.persona_id}/q/{pref.topic}/{pref.option}"
        rng = rng_for(seed, "question", question_id)
        scenario = _discussed_scenario(user, pref.topic, seen, scenarios, rng)
        ask = _Asker(run_id, user, question_id, scenario, rng, seed, seen)
        lead = scenario.lead
        asked_to_forget = user.forgotten_at.get(pref.id)
        if asked_to_forget is not None and not any(r.time > asked_to_forget for r in seen):
            others = [o.id for o in topic.options if o.id != pref.option]
            rng.shuffle(others)
            entries = [(f"{lead} {rng.choice(catalog.templates.generic)}", "correct"),
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
    questions += _generalisation_questions(user, generalisable, run_id, seed, catalog, scenarios, config)
    questions += _abstention_questions(user, run_id, seed, catalog, scenarios, config)
    return questions


def _discussed_scenario(
    user: _UserFacts, topic_id: str, seen: list[_Reveal], scenarios: ScenarioCatalog, rng: random.Random
) -> Scenario:
    """The scenario of the latest session that revealed it, when that scenario is about the topic."""
    candidates = scenarios.scenarios_for(topic_id)
    by_id = {s.id: s for s in candidates}
    for reveal in sorted(seen, key=lambda r: r.time, reverse=True):
        found = by_id.get(user.facts.session_scenarios[user.persona_id].get(reveal.session_index, ""))
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
    rng = rng_for(seed, "generalisation", user.persona_id)
    usable = [p for p in candidates
              if any(s.id not in user.discussed_scenarios for s in scenarios.scenarios_for(p.topic))]
    questions = []
    for pref in rng.sample(usable, min(config.generalisation_per_user, len(usable))):
        topic = catalog.topic(pref.topic)
        question_id = f"{user.persona_id}/q/{pref.topic}/{pref.option}/generalise"
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
    rng = rng_for(seed, "abstention", user.persona_id)
    questions = []
    for topic in rng.sample(silent, min(config.abstention_per_user, len(silent))):
        question_id = f"{user.persona_id}/q/{topic.id}/abstain"
        qrng = rng_for(seed, "question", question_id)
        scenario = qrng.choice(scenarios.scenarios_for(topic.id))
        options = [o.id for o in topic.options]
        qrng.shuffle(options)
        entries = [(f"{scenario.lead} {qrng.choice(catalog.templates.generic)}", "correct")]
        entries += [(f"{scenario.lead} {catalog.response(topic.id, o)}", "unsupported")
                    for o in options[: config.max_options - 1]]
        ask = _Asker(run_id, user, question_id, scenario, qrng, seed, [])
        row = ask("abstention", None, topic.id, entries, None, "irrelevant")
        row.preference_statement = f"The user never mentioned their {topic.name}."
        questions.append(row)
    return questions


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
                 stale: Preference | None, pref_type: str) -> QuestionRow:
        rng_for(self.seed, "option-order", self.question_id).shuffle(entries)
        sources = [source for _, source in entries]
        seen, user = self.seen, self.user
        mode = "explicit" if any(r.mode == "explicit" for r in seen) else ("implicit" if seen else "none")
        last = max(seen, key=lambda r: r.time) if seen else None
        return QuestionRow(
            run_id=self.run_id, question_id=self.question_id, persona_id=user.persona_id, question_type=qtype,
            asked_at=user.t, topic=topic_id, scenario_id=self.scenario.id, query=self.rng.choice(self.scenario.intents),
            options=[text for text, _ in entries], option_sources=sources, correct_index=sources.index("correct"),
            preference_id=pref.id if pref is not None else "",
            stale_preference_id=stale.id if stale is not None else None, reveal_mode=mode, reveals=len(seen),
            sessions_since_reveal=user.facts.last_session[user.persona_id] - last.session_index if last else -1,
            tokens_since_reveal=user.facts.tokens_between(user.persona_id, last.time, user.t) if last else -1,
            preference_statement=pref.statement if pref is not None else "",
            stale_statement=stale.statement if stale is not None else None,
            pref_type=pref_type,
        )


def _distractors(
    topic: Topic, pref: Preference, stale: Preference | None, user: _UserFacts, rng: random.Random, k: int,
) -> list[tuple[str, str]]:
    """Options the user does not like now: the stale one first, then others' likes, their dislikes, the rest."""
    liked, disliked, others_like = user.liked, user.disliked, user.others_like
    free = [o.id for o in topic.options if (topic.id, o.id) not in liked]
    groups: list[tuple[str, list[str]]] = [
        ("stale", [o for o in free if stale is not None and o == stale.option]),
        ("other_user", [o for o in free if (topic.id, o) in others_like]),
        ("disliked", [o for o in free if (topic.id, o) in disliked]),
        ("alternative", list(free)),
    ]
    chosen: list[tuple[str, str]] = []
    taken: set[str] = set()
    for source, options in groups:
        options = [o for o in options if o not in taken]
        rng.shuffle(options)
        for o in options:
            if len(chosen) == k:
                return chosen
            chosen.append((o, source))
            taken.add(o)
    return chosen


def load_questions(con: duckdb.DuckDBPyConnection, run_id: str) -> list[QuestionRow]:
    """The run's stored questions, in id order, as the rows they were written from."""
    cursor = con.execute("SELECT * FROM questions WHERE run_id = ? ORDER BY question_id", [run_id])
    names = [d[0] for d in cursor.description]
    return [QuestionRow.model_validate(dict(zip(names, r, strict=True))) for r in cursor.fetchall()]
