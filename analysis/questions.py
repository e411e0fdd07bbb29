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
from personasim.worlds.scenarios import ScenarioCatalog, load_scenario_catalog

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
) -> list[QuestionRow]:
    """One question per revealed, currently liked (and not forgotten) preference, after the last session."""
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
        forgotten = {f.preference_id for f in timeline.forgotten_by(t)}
        others_like = {
            (p.topic, p.option) for pid, tl in timelines.items() if pid != persona_id
            for p in tl.at(t) if p.polarity == Polarity.LIKES
        }
        replaced_by = {
            e.new.id: e.old for e in timeline.drift_events if e.new is not None and e.old is not None and e.time <= t
        }
        for pref in held:
            if pref.polarity != Polarity.LIKES or pref.id in forgotten:
                continue
            seen = [r for r in reveals.get((persona_id, pref.topic, pref.option, "likes"), []) if r[0] < t]
            if not seen or not scenarios.scenarios_for(pref.topic):
                continue  # never revealed: nothing a memory could know
            old = replaced_by.get(pref.id)
            stale = old if old is not None and old.option != pref.option and old.polarity == Polarity.LIKES else None
            question_id = f"{persona_id}/q/{pref.topic}/{pref.option}"
            rng = rng_for(seed, "question", question_id)
            topic = catalog.topic(pref.topic)
            distractors = _distractors(topic, pref, stale, liked, disliked, others_like, rng, max_options - 1)
            if not distractors:
                continue
            scenario = rng.choice(scenarios.scenarios_for(pref.topic))
            entries = [(f"{scenario.lead} {catalog.response(topic.id, pref.option)}", "correct")]
            entries += [(f"{scenario.lead} {catalog.response(topic.id, o)}", source) for o, source in distractors]
            rng_for(seed, "option-order", question_id).shuffle(entries)
            sources = [source for _, source in entries]
            questions.append(
                QuestionRow(
                    run_id=run_id,
                    question_id=question_id,
                    persona_id=persona_id,
                    question_type="updated_preference" if stale is not None else "current_preference",
                    asked_at=t,
                    topic=pref.topic,
                    scenario_id=scenario.id,
                    query=rng.choice(scenario.intents),
                    options=[text for text, _ in entries],
                    option_sources=sources,
                    correct_index=sources.index("correct"),
                    preference_id=pref.id,
                    stale_preference_id=stale.id if stale is not None else None,
                    reveal_mode="explicit" if any(m == "explicit" for _, _, m in seen) else "implicit",
                    reveals=len(seen),
                    sessions_since_reveal=last_session[persona_id] - max(s for _, s, _ in seen),
                )
            )
    return questions


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
