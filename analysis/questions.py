"""Multiple-choice questions generated from the persona timeline in the store.

"Which answer fits this user now, in this scenario?" The correct option is the response
personalised to the preference the timeline says is held at question time; the others are the
same response personalised to the other options of the topic: the stale (pre-drift) preference
where there is one, preferences other users hold, and the remaining alternatives. The truth comes
from the store's ``preferences`` and ``drift_events`` tables, never from the conversation.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import duckdb

from personasim.personas.catalog import TopicCatalog, load_topic_catalog
from personasim.personas.models import DriftEvent, Polarity, Preference
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
        " valid_from, valid_to FROM preferences WHERE run_id = ? ORDER BY preference_id",
        [run_id],
    ).fetchall()
    for r in rows:
        prefs[r[0]] = Preference(
            id=r[0], persona_id=r[1], domain=r[2], topic=r[3], option=r[4], statement=r[5],
            polarity=Polarity(r[6]), strength=r[7], sensitive=r[8], valid_from=r[9], valid_to=r[10],
        )
    events: dict[str, list[DriftEvent]] = defaultdict(list)
    for e in con.execute(
        "SELECT event_id, persona_id, time, cause, topic, old_preference_id, new_preference_id"
        " FROM drift_events WHERE run_id = ? ORDER BY event_id",
        [run_id],
    ).fetchall():
        events[e[1]].append(
            DriftEvent(id=e[0], persona_id=e[1], time=e[2], cause=e[3], topic=e[4], old=prefs[e[5]], new=prefs[e[6]])
        )
    by_persona: dict[str, list[Preference]] = defaultdict(list)
    for p in prefs.values():
        by_persona[p.persona_id].append(p)
    return {pid: PersonaTimeline(ps, events.get(pid, [])) for pid, ps in by_persona.items()}


def generate_questions(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    seed: int,
    catalog: TopicCatalog | None = None,
    scenarios: ScenarioCatalog | None = None,
) -> list[QuestionRow]:
    """One question per revealed, currently held preference of every user, asked after the last session."""
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
    reveals: dict[str, list[tuple[datetime, int, str]]] = defaultdict(list)
    for pref_id, time, session_index, mode in con.execute(
        "SELECT revealed_preference_id, time, session_index, reveal_mode FROM turns"
        " WHERE run_id = ? AND revealed_preference_id IS NOT NULL ORDER BY turn_id",
        [run_id],
    ).fetchall():
        reveals[pref_id].append((time, session_index, mode))

    questions: list[QuestionRow] = []
    for persona_id in sorted(timelines):
        if persona_id not in asked_at:
            continue
        t = asked_at[persona_id]
        timeline = timelines[persona_id]
        others_hold = {
            (p.topic, p.option) for pid, tl in timelines.items() if pid != persona_id for p in tl.at(t)
        }
        for pref in timeline.at(t):
            seen = [r for r in reveals.get(pref.id, []) if r[0] < t]
            if not seen:
                continue  # never revealed: nothing a memory could know
            stale = timeline.previous_on(pref.topic, t)
            question_id = f"{persona_id}/q/{pref.topic}"
            rng = rng_for(seed, "question", question_id)
            scenario = rng.choice(scenarios.scenarios_for(pref.topic))
            topic = catalog.topic(pref.topic)
            entries = []
            for option in topic.options:
                if option.id == pref.option:
                    source = "correct"
                elif stale is not None and option.id == stale.option:
                    source = "stale"
                elif (topic.id, option.id) in others_hold:
                    source = "other_user"
                else:
                    source = "alternative"
                entries.append((f"{scenario.lead} {option.response}", source))
            rng_for(seed, "option-order", question_id).shuffle(entries)
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
                    option_sources=[source for _, source in entries],
                    correct_index=[source for _, source in entries].index("correct"),
                    preference_id=pref.id,
                    stale_preference_id=stale.id if stale is not None else None,
                    reveal_mode="explicit" if any(m == "explicit" for _, _, m in seen) else "implicit",
                    reveals=len(seen),
                    sessions_since_reveal=last_session[persona_id] - max(s for _, s, _ in seen),
                )
            )
    return questions
