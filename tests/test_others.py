"""Others' preferences (PersonaMem-v2's ``who = others``): people in the user's life, their
preferences revealed in conversation, and ``others_preference`` questions about them."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from personasim.agents.user import DialogueConfig, plan_session, user_system_prompt
from personasim.personas.generator import PopulationConfig
from personasim.personas.models import SELF, owner_of_id
from personasim.personas.population import DEFAULT_START, PopulationBuilder
from personasim.personas.seeding import derive_seed, rng_for
from personasim.personas.timeline import PersonaTimeline
from personasim.sim.store import SCHEMA_VERSION, TrajectoryStore, table_ddl
from personasim.worlds.scenarios import load_scenario_catalog


@pytest.fixture(scope="module")
def builders():
    with_people = PopulationBuilder(PopulationConfig(), seed=11)
    without = PopulationBuilder(PopulationConfig(min_people=0, max_people=0), seed=11)
    return with_people, without


def test_people_leave_the_users_own_persona_byte_identical(builders):
    with_people, without = builders
    for index in range(25):
        a, b = with_people.generator.generate(index, DEFAULT_START), without.generator.generate(index, DEFAULT_START)
        assert b.people == [] and b.others_preferences == []
        assert [p.as_dict() for p in a.preferences] == [p.as_dict() for p in b.preferences]
        assert a.demographics == b.demographics and a.sensitive_facts == b.sensitive_facts
        assert 2 <= len(a.people) <= 3
        owners = {p.owner for p in a.people}
        assert len(owners) == len(a.people)
        for pref in a.others_preferences:
            assert pref.owner in owners and pref.owner != SELF and owner_of_id(pref.id) == pref.owner
            assert pref.id.startswith(f"{a.id}/@{pref.owner}/") and pref.polarity.value == "likes"
        assert all(p.owner == SELF for p in a.preferences)
        assert len({p.id for p in a.preferences + a.others_preferences}) == len(a.preferences + a.others_preferences)


def test_others_are_never_in_the_users_timeline(builders):
    persona = builders[0].persona(3, months=3)  # aged by drift: drift must leave others alone
    timeline = PersonaTimeline.of(persona)
    t = DEFAULT_START.replace(month=3)
    assert timeline.at(t) and all(p.owner == SELF for p in timeline.at(t))
    others = timeline.others_at(t)
    assert others and all(p.owner != SELF for p in others)
    assert {p.id for p in others} == {p.id for p in persona.others_preferences}
    owner = others[0].owner
    assert all(p.owner == owner for p in timeline.others_at(t, owner=owner))
    # mixed into one list (as a reader of the store may pass them), they are still kept apart
    mixed = PersonaTimeline(persona.preferences + persona.others_preferences, persona.drift_events)
    assert [p.id for p in mixed.at(t)] == [p.id for p in timeline.at(t)]
    assert persona.drift_events and all(e.old is None or e.old.owner == SELF for e in persona.drift_events)
    assert all(p.valid_to is None for p in persona.others_preferences)


def test_a_planned_others_reveal_names_the_person_and_changes_nothing_else(builders):
    from personasim.agents.scripted import ScriptedChatCompletionClient

    builder = builders[0]
    scenarios = load_scenario_catalog()
    persona = builder.persona(5)
    t = datetime(2025, 2, 1, 10, 0)
    found = 0
    for k in range(12):
        def plan(probability: float, k: int = k):
            config = DialogueConfig(others_mention_probability=probability)
            return plan_session(persona, t, {}, scenarios, builder.catalog, config, rng_for(1, "plan", 5, k),
                                derive_seed(1, "dialogue", 5, k))

        before, after = plan(0.0), plan(1.0)
        changed = [i for i, (x, y) in enumerate(zip(before.directive.turns, after.directive.turns, strict=True))
                   if x != y]
        assert before.scenario == after.scenario and len(changed) <= 1
        if not changed:
            continue
        found += 1
        reveal = after.directive.turns[changed[0]].reveal
        assert reveal is not None and reveal.person is not None and changed[0] > 0
        pref = next(p for p in persona.others_preferences if p.id == reveal.preference_id)
        assert pref.owner == reveal.owner == reveal.person.owner
        prompt = user_system_prompt(persona, after, builder.catalog)
        assert f"your {reveal.person.mention}" in prompt
        text = _scripted_user_turn(ScriptedChatCompletionClient(builder.catalog), prompt, changed[0])
        assert reveal.person.name in text and reveal.person.title in text.lower()
    assert found >= 6  # a person to talk about is nearly always there


def _scripted_user_turn(client, prompt: str, turn: int) -> str:
    import asyncio

    from autogen_core.models import AssistantMessage, SystemMessage, UserMessage

    messages = [SystemMessage(content=prompt)]
    for _ in range(turn):
        messages += [UserMessage(content="...", source="user"), AssistantMessage(content="ok", source="assistant")]
    return asyncio.run(client.create(messages)).content


def test_a_version_7_store_gets_the_owner_column(tmp_path):
    assert SCHEMA_VERSION >= 8
    path = tmp_path / "v7.duckdb"
    TrajectoryStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE preferences")
    ddl = "\n".join(ln for ln in table_ddl("preferences").splitlines() if not ln.strip().startswith("owner "))
    con.execute(ddl)
    con.execute("UPDATE schema_info SET value = '7' WHERE key = 'schema_version'")
    con.execute("INSERT INTO preferences BY NAME SELECT 'r' AS run_id, 'p/t/o#0' AS preference_id, 'p' AS persona_id,"
                " 'd' AS domain, 't' AS topic, 'o' AS option, 's' AS statement, 'likes' AS polarity, 0.5 AS strength,"
                " false AS sensitive, TIMESTAMP '2025-01-01' AS valid_from, NULL AS valid_to, NULL AS sensitivity,"
                " 'neutral' AS stereotype")
    con.close()
    with TrajectoryStore(path) as store:
        version = store.con.execute("SELECT value FROM schema_info WHERE key = 'schema_version'").fetchall()
        assert version == [(str(SCHEMA_VERSION),)]
        assert store.con.execute("SELECT owner FROM preferences").fetchall() == [("self",)]


@pytest.fixture(scope="module")
def others_run(tmp_path_factory, ray_session):
    from personasim.sim.config import RunConfig
    from personasim.sim.engine import run_simulation

    db = Path(tmp_path_factory.mktemp("others")) / "others.duckdb"
    config = RunConfig.model_validate({
        "seed": 2, "population": {"users": 8}, "schedule": {"sessions": 4},
        "dialogue": {"others_mention_probability": 0.5},
        "memory": {"strategies": ["none"], "chatbot": "none"},
    })
    with TrajectoryStore(db) as store:  # the simulation of `personasim.api.run`, without its (slow) evaluation
        run_simulation(config, store)
    con = duckdb.connect(str(db), read_only=True)
    yield con, config
    con.close()


def test_the_store_holds_others_with_their_owner_and_turns_name_them(others_run):
    con, config = others_run
    owners = dict(con.execute("SELECT preference_id, owner FROM preferences WHERE run_id = ?",
                              [config.run_id]).fetchall())
    assert any(o == SELF for o in owners.values()) and any(o != SELF for o in owners.values())
    assert all(owner_of_id(pid) == owner for pid, owner in owners.items())
    turns = con.execute("SELECT text, revealed_preference_id FROM turns WHERE run_id = ? AND role = 'user'"
                        " AND revealed_preference_id LIKE '%/@%'", [config.run_id]).fetchall()
    assert len(turns) >= 5
    for text, pid in turns:
        relation, name = owners[pid].split(":")
        assert name in text and ("kid" if relation == "child" else relation) in text.lower()


def _others_questions(con, config, **settings):
    """The run's ``others_preference`` questions, through the one question generator."""
    from personasim.analysis.questions import QuestionConfig, generate_questions

    settings = {"types": ["others_preference"], "balance_profile": False, **settings}
    return generate_questions(con, config.run_id, config.seed, config=QuestionConfig(**settings))


def test_others_questions_ask_about_the_person_with_the_users_own_taste_as_a_distractor(others_run):
    con, config = others_run
    questions = _others_questions(con, config)
    assert len(questions) >= 5
    assert _others_questions(con, config) == questions  # deterministic
    truth = {pid: (topic, option) for pid, topic, option in con.execute(
        "SELECT preference_id, topic, option FROM preferences WHERE run_id = ?", [config.run_id]).fetchall()}
    own = {(persona, topic, option) for persona, topic, option in con.execute(
        "SELECT persona_id, topic, option FROM preferences WHERE run_id = ? AND owner = 'self'"
        " AND polarity = 'likes' AND valid_to IS NULL", [config.run_id]).fetchall()}
    from personasim.personas.catalog import load_topic_catalog

    catalog = load_topic_catalog()
    with_own = 0
    for q in questions:
        assert q.question_type == "others_preference" and q.who == "others" and q.reveals >= 1
        relation, name = owner_of_id(q.preference_id).split(":")
        assert name in q.query
        topic, option = truth[q.preference_id]
        assert catalog.topic(topic).option(option).label in q.options[q.correct_index]
        assert q.option_sources.count("correct") == 1 and len(set(q.options)) == len(q.options)
        lengths = [len(o) for o in q.options]
        assert max(lengths) - min(lengths) < 0.6 * max(lengths)
        user_options = {o.id for o in catalog.topic(topic).options if (q.persona_id, topic, o.id) in own}
        if user_options - {option}:
            with_own += 1
            labels = [catalog.topic(topic).option(o).label for o in user_options - {option}]
            own_texts = [t for t, s in zip(q.options, q.option_sources, strict=True) if s == "user_own"]
            assert own_texts and any(label in t for label in labels for t in own_texts)
    assert with_own >= 1
    order = {q.question_id: q.correct_index for q in questions}
    assert len(set(order.values())) > 1, "the correct option is not always in the same slot"


def test_others_questions_are_asked_at_the_last_checkpoint_from_what_was_revealed_by_then(others_run):
    con, config = others_run
    ends = {(persona, index): end for persona, index, end in con.execute(
        "SELECT persona_id, session_index, ended_at FROM sessions WHERE run_id = ?", [config.run_id]).fetchall()}
    last = {persona: max(i for p, i in ends if p == persona) for persona, _ in ends}
    questions = _others_questions(con, config)  # the default checkpoints end after the last session
    assert questions and all(f"/q/s{last[q.persona_id]}/others/" in q.question_id for q in questions)
    assert all(q.asked_at > ends[(q.persona_id, last[q.persona_id])] for q in questions)
    early = _others_questions(con, config, checkpoints=[0.25])  # after the first of 4 sessions
    assert early and len(early) < len(questions)
    for q in early:
        assert "/q/s0/others/" in q.question_id and q.asked_at < ends[(q.persona_id, 1)]
        (revealed,) = con.execute("SELECT min(time) FROM turns WHERE run_id = ? AND revealed_preference_id = ?",
                                  [config.run_id, q.preference_id]).fetchone()
        assert revealed < q.asked_at  # nothing after the checkpoint is used


def test_others_distractors_shuffle_every_group_while_the_users_own_stop_once_full():
    """The two distractor streams the stored questions depend on (analysis.questions._pick_distractors)."""
    from personasim.analysis.questions import _pick_distractors

    groups = [("near", ["a", "b", "c", "d"]), ("far", ["e", "f", "g"])]
    stop, every = random.Random(0), random.Random(0)
    assert _pick_distractors(groups, stop, 3) == _pick_distractors(groups, every, 3, shuffle_every_group=True)
    assert stop.random() != every.random()  # only others_preference shuffled "far" too
