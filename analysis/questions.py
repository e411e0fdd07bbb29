"""Multiple-choice questions generated from the persona timeline in the store.

"Which answer fits this user now, in this scenario?" The correct option is the response
personalised to the preference the timeline says is held at question time; the others are the
same response personalised to the other options of the topic: the stale (pre-drift) preference
where there is one, preferences other users hold, and the remaining alternatives. The truth comes
from the store's ``preferences`` and ``drift_events`` tables, never from the conversation.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta

import duckdb

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


def generate_questions(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    seed: int,
    catalog: TopicCatalog | None = None,
    scenarios: ScenarioCatalog | None = None,
    max_options: int = 4,
    abstention_per_user: int = 0,
) -> list[QuestionRow]:
    """Questions from the timeline, asked after each user's last session.

    Types: ``explicit_recall`` and ``implicit_inference`` (a liked preference revealed outright,
    or only by hints), ``updated_preference`` (drift replaced it; the stale one is a distractor),
    ``forget_compliance`` (the user asked to forget it: the non-personalised reply is correct) and
    ``abstention`` (a topic never discussed: personalising would be over-personalisation)."""
    catalog = catalog or load_topic_catalog()
    scenarios = scenarios or load_scenario_catalog()
    timelines = load_timelines(con, run_id)
    last_session = dict(
        con.execute(
            "SELECT persona_id, max(session_index) FROM sessions WHERE run_id = ? GROUP BY persona_id", [run_id]
        ).fetchall()
    )
    asked_at = {
        pid: t + QUESTION_DELAY
        for pid, t in con.execute(
            "SELECT persona_id, max(ended_at) FROM sessions WHERE run_id = ? GROUP BY persona_id", [run_id]
        ).fetchall()
    }
    reveals: dict[tuple[str, str, str, str], list[tuple[datetime, int, str]]] = defaultdict(list)
    for persona_id, topic, option, polarity, time, session_index, mode in con.execute(
        "SELECT t.persona_id, p.topic, p.option, p.polarity, t.time, t.session_index, t.reveal_mode FROM turns t"
        " JOIN preferences p ON p.run_id = t.run_id AND p.preference_id = t.revealed_preference_id"
        " WHERE t.run_id = ? ORDER BY t.turn_id",
        [run_id],
    ).fetchall():
        reveals[(persona_id, topic, option, polarity)].append((time, session_index, mode))

    questions: list[QuestionRow] = []
    for persona_id in sorted(timelines):
        if persona_id not in asked_at:
            continue
        t = asked_at[persona_id]
        timeline = timelines[persona_id]
        held = timeline.at(t)
        liked = {(p.topic, p.option) for p in held if p.polarity == Polarity.LIKES}
        disliked = {(p.topic, p.option) for p in held if p.polarity == Polarity.DISLIKES}
        others_like = {
            (p.topic, p.option) for pid, tl in timelines.items() if pid != persona_id
            for p in tl.at(t) if p.polarity == Polarity.LIKES
        }
        replaced_by = {
            e.new.id: e.old for e in timeline.drift_events if e.new is not None and e.old is not None and e.time <= t
        }
        revealed_topics = {topic for (pid, topic, _, _), seen in reveals.items()
                           if pid == persona_id and any(r[0] < t for r in seen)}
        forgotten_at = {f.preference_id: f.time for f in timeline.forgotten_by(t)}

        for pref in held:
            if pref.polarity != Polarity.LIKES or not scenarios.scenarios_for(pref.topic):
                continue
            seen = [r for r in reveals.get((persona_id, pref.topic, pref.option, "likes"), []) if r[0] < t]
            if not seen:
                continue  # never revealed: nothing a memory could know
            topic = catalog.topic(pref.topic)
            question_id = f"{persona_id}/q/{pref.topic}/{pref.option}"
            rng = rng_for(seed, "question", question_id)
            scenario = rng.choice(scenarios.scenarios_for(pref.topic))
            lead = scenario.lead
            ask = _Asker(run_id, persona_id, t, question_id, scenario, rng, seed, last_session[persona_id])
            asked_to_forget = forgotten_at.get(pref.id)
            if asked_to_forget is not None and not any(r[0] > asked_to_forget for r in seen):
                # the user asked to forget it and never mentioned it again: the reply must not use it
                others = [o.id for o in topic.options if o.id != pref.option]
                rng.shuffle(others)
                others = others[: max_options - 2]
                entries = [(f"{lead} {rng.choice(catalog.templates.generic)}", "correct"),
                           (f"{lead} {catalog.response(topic.id, pref.option)}", "forgotten")]
                entries += [(f"{lead} {catalog.response(topic.id, o)}", "alternative") for o in others]
                questions.append(ask("forget_compliance", pref, topic.id, entries, None, seen))
                continue
            old = replaced_by.get(pref.id)
            stale = old if old is not None and old.option != pref.option and old.polarity == Polarity.LIKES else None
            distractors = _distractors(topic, pref, stale, liked, disliked, others_like, rng, max_options - 1)
            if not distractors:
                continue
            entries = [(f"{lead} {catalog.response(topic.id, pref.option)}", "correct")]
            entries += [(f"{lead} {catalog.response(topic.id, o)}", source) for o, source in distractors]
            if stale is not None:
                qtype = "updated_preference"
            elif any(m == "explicit" for _, _, m in seen):
                qtype = "explicit_recall"
            else:
                qtype = "implicit_inference"
            questions.append(ask(qtype, pref, topic.id, entries, stale, seen))

        # abstention: topics the user never talked about; the generic reply is the right one
        silent = [tp for tp in catalog.topics if tp.id not in revealed_topics and scenarios.scenarios_for(tp.id)]
        rng = rng_for(seed, "abstention", persona_id)
        for topic in rng.sample(silent, min(abstention_per_user, len(silent))):
            question_id = f"{persona_id}/q/{topic.id}/abstain"
            qrng = rng_for(seed, "question", question_id)
            scenario = qrng.choice(scenarios.scenarios_for(topic.id))
            ask = _Asker(run_id, persona_id, t, question_id, scenario, qrng, seed, last_session[persona_id])
            options = [o.id for o in topic.options]
            qrng.shuffle(options)
            entries = [(f"{scenario.lead} {qrng.choice(catalog.templates.generic)}", "correct")]
            entries += [(f"{scenario.lead} {catalog.response(topic.id, o)}", "unsupported") for o in options[:3]]
            questions.append(ask("abstention", None, topic.id, entries, None, []))
    return questions


class _Asker:
    """Builds the stored row of one question: stable option order, the query, reveal statistics."""

    def __init__(self, run_id: str, persona_id: str, t: datetime, question_id: str, scenario: Scenario,
                 rng: random.Random, seed: int, last_session: int) -> None:
        self.run_id, self.persona_id, self.t, self.question_id = run_id, persona_id, t, question_id
        self.scenario, self.rng, self.seed, self.last_session = scenario, rng, seed, last_session

    def __call__(self, qtype: str, pref: Preference | None, topic_id: str, entries: list[tuple[str, str]],
                 stale: Preference | None, seen: list[tuple[datetime, int, str]]) -> QuestionRow:
        rng_for(self.seed, "option-order", self.question_id).shuffle(entries)
        sources = [source for _, source in entries]
        mode = "explicit" if any(m == "explicit" for _, _, m in seen) else ("implicit" if seen else "none")
        return QuestionRow(
            run_id=self.run_id, question_id=self.question_id, persona_id=self.persona_id, question_type=qtype,
            asked_at=self.t, topic=topic_id, scenario_id=self.scenario.id, query=self.rng.choice(self.scenario.intents),
            options=[text for text, _ in entries], option_sources=sources, correct_index=sources.index("correct"),
            preference_id=pref.id if pref is not None else "",
            stale_preference_id=stale.id if stale is not None else None, reveal_mode=mode, reveals=len(seen),
            sessions_since_reveal=self.last_session - max(s for _, s, _ in seen) if seen else -1,
        )


def _distractors(
    topic: Topic, pref: Preference, stale: Preference | None, liked: set[tuple[str, str]],
    disliked: set[tuple[str, str]], others_like: set[tuple[str, str]], rng: random.Random, k: int,
) -> list[tuple[str, str]]:
    """Options the user does not like now: the stale one first, then others' likes, their dislikes, the rest."""
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
