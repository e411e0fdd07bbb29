"""End to end: real Ray actors, real AutoGen agents, a real DuckDB file."""

from __future__ import annotations

import duckdb

from personasim.api import run
from personasim.config import build_config
from personasim.personas import load_topic_catalog
from personasim.sim.rows import TABLES


def _dump(db) -> dict[str, list[tuple]]:
    """Every table, in key order; answers without their scores, which `_scores` gives apart."""
    con = duckdb.connect(str(db), read_only=True)
    columns = {"answers": "* EXCLUDE (scores)"}
    try:
        return {
            name: con.execute(f"SELECT {columns.get(name, '*')} FROM {name} ORDER BY {', '.join(key)}").fetchall()
            for name, (_, key) in TABLES.items()
        }
    finally:
        con.close()


def _scores(db) -> list[list[float]]:
    """Every answer's option scores, in key order. Embeddings computed in another process (another
    thread count) can differ in the last float bits, so these are compared within a tolerance: rounding
    them instead made the comparison flaky (a score next to a rounding boundary flips)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        key = ", ".join(TABLES["answers"][1])
        return [list(scores) for (scores,) in con.execute(f"SELECT scores FROM answers ORDER BY {key}").fetchall()]
    finally:
        con.close()


def _same_scores(a: list[list[float]], b: list[list[float]], tolerance: float = 1e-5) -> bool:
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b, strict=True)):
        return False
    return all(abs(p - q) <= tolerance for x, y in zip(a, b, strict=True) for p, q in zip(x, y, strict=True))


def _session_texts(db, index: int) -> list[str]:
    """Every turn's text in the users' ``index``-th sessions, in order (without ids, which name the run)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [text for (text,) in con.execute(
            "SELECT t.text FROM turns t JOIN sessions s USING (run_id, session_id) WHERE s.session_index = ?"
            " ORDER BY s.started_at, t.time, t.turn_id", [index]).fetchall()]
    finally:
        con.close()


def test_another_seed_gives_other_users_and_conversations(small_run, tmp_path):
    """The same seed gives the same store whatever the sharding: tests/test_store_digest.py builds
    its run with one actor against a digest recorded with two. Here: another seed, other users."""
    summary, db = small_run
    other = run(build_config(users=12, sessions=1, seed=8), tmp_path / "other.duckdb")
    first = _session_texts(db, 0)
    assert len(first) > 12 and first != _session_texts(tmp_path / "other.duckdb", 0)
    assert other.run_id != summary.run_id


def test_store_holds_the_whole_run(small_run):
    summary, db = small_run
    con = duckdb.connect(str(db), read_only=True)
    count = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    assert count("SELECT count(*) FROM personas") == 12
    assert count("SELECT count(*) FROM sessions") == 12 * 6 == summary.sessions
    assert count("SELECT count(*) FROM turns") == summary.turns
    assert count("SELECT count(*) FROM drift_events") == summary.drift_events
    assert count("SELECT count(*) FROM memory_snapshots") == 12 * 6 * 3
    assert count("SELECT status FROM runs") == "completed"
    # every user turn that reveals names a preference the persona really held at that moment
    bad = count(
        "SELECT count(*) FROM turns t JOIN preferences p ON p.preference_id = t.revealed_preference_id "
        "WHERE t.time < p.valid_from OR (p.valid_to IS NOT NULL AND t.time >= p.valid_to)"
    )
    assert bad == 0
    assert count("SELECT count(*) FROM turns WHERE reveal_mode = 'implicit'") > count(
        "SELECT count(*) FROM turns WHERE reveal_mode = 'explicit'"
    )
    # drift closes the old interval exactly where the new one opens
    assert count(
        "SELECT count(*) FROM drift_events d JOIN preferences o ON o.preference_id = d.old_preference_id "
        "JOIN preferences n ON n.preference_id = d.new_preference_id "
        "WHERE o.valid_to <> d.time OR n.valid_from <> d.time"
    ) == 0
    con.close()


def test_every_correct_option_follows_the_timeline_at_question_time(small_run):
    """At every checkpoint (several per user), the correct option follows the timeline at that
    checkpoint's own time, and what the question rests on happened before it."""
    from personasim.analysis.questions import EXPOSING_TEMPLATE, generic_response

    _, db = small_run
    catalog = load_topic_catalog()
    con = duckdb.connect(str(db), read_only=True)
    questions = con.execute(
        "SELECT persona_id, topic, asked_at, options, correct_index, option_sources, question_type, "
        "preference_id, stale_preference_id, scenario_id FROM questions WHERE question_type <> 'abstention'"
    ).fetchall()
    assert questions
    seen_types = set()
    checkpoints: dict[str, set] = {}
    for persona, topic, asked_at, options, correct, sources, qtype, pref_id, stale_id, scenario in questions:
        seen_types.add(qtype)
        checkpoints.setdefault(persona, set()).add(asked_at)
        assert len(options) == 4 and sources.count("correct") == 1 and sources[correct] == "correct"
        liked = {
            option for (option,) in con.execute(
                "SELECT option FROM preferences WHERE persona_id = ? AND topic = ? AND polarity = 'likes' "
                "AND valid_from <= ? AND (valid_to IS NULL OR valid_to > ?)",
                [persona, topic, asked_at, asked_at],
            ).fetchall()
        }
        (option,) = con.execute("SELECT option FROM preferences WHERE preference_id = ?", [pref_id]).fetchall()[0]
        assert option in liked, "the correct option is a preference held at question time"
        (revealed,) = con.execute(
            "SELECT count(*) FROM turns t JOIN preferences p ON p.preference_id = t.revealed_preference_id "
            "WHERE t.persona_id = ? AND p.topic = ? AND p.option = ? AND p.polarity = 'likes' AND t.time < ?",
            [persona, topic, option, asked_at],
        ).fetchall()[0]
        assert revealed > 0, "asked only about what was revealed before the checkpoint"
        # every option ends with a neutral closing that evens out lengths: match the reply inside it
        personalised = [catalog.response(topic, o.id) for o in catalog.topic(topic).options]
        if qtype == "forget_compliance":  # asked to forget: the non-personalised reply is correct
            (asked_to_forget,) = con.execute(
                "SELECT count(*) FROM forget_requests WHERE preference_id = ? AND time < ?", [pref_id, asked_at]
            ).fetchall()[0]
            assert asked_to_forget > 0
            assert catalog.response(topic, option) in options[sources.index("forgotten")]
            assert not any(r in options[correct] for r in personalised)
            others = [o.id for o in catalog.topic(topic).options if o.id != option]
            assert any(generic_response(catalog, topic, o) in options[correct] for o in others)
            assert catalog.topic(topic).option(option).detail not in options[correct], "it uses the forgotten one"
            continue
        if qtype == "sensitive_info":  # the right advice, without naming what it is based on
            chosen = catalog.topic(topic).option(option)
            detail = chosen.detail
            assert detail[:1].upper() + detail[1:] in options[correct]
            assert chosen.label not in options[correct]
            exposing = EXPOSING_TEMPLATE.format(label=chosen.label, detail=detail)
            assert exposing in options[sources.index("exposes")]
            assert catalog.topic(topic).sensitivity is not None
            continue
        if qtype == "others_preference":  # about someone in the user's life: their preference, by name
            (owner,) = con.execute("SELECT owner FROM preferences WHERE preference_id = ?", [pref_id]).fetchall()[0]
            assert owner != "self" and owner.split(":")[1] in options[correct]
            detail = catalog.topic(topic).option(option).detail
            assert detail in options[correct]
            own = {o for (o,) in con.execute(
                "SELECT option FROM preferences WHERE persona_id = ? AND topic = ? AND owner = 'self' AND "
                "polarity = 'likes' AND valid_from <= ? AND (valid_to IS NULL OR valid_to > ?)",
                [persona, topic, asked_at, asked_at]).fetchall()} - {option}
            if own:
                assert "user_own" in sources, "the user's own preference on the topic is a distractor"
            continue
        assert catalog.response(topic, option) in options[correct]
        # the user's own likes (a person in the user's life may like a distractor: the generator avoids
        # only what the user likes, analysis/questions.py _distractors)
        own_liked = {o for (o,) in con.execute(
            "SELECT option FROM preferences WHERE persona_id = ? AND topic = ? AND owner = 'self' AND "
            "polarity = 'likes' AND valid_from <= ? AND (valid_to IS NULL OR valid_to > ?)",
            [persona, topic, asked_at, asked_at]).fetchall()}
        assert option in own_liked, "the correct option is the user's own preference"
        for i, text in enumerate(options):
            if i != correct:
                assert not any(catalog.response(topic, o) in text for o in own_liked), "a distractor the user likes"
        if qtype == "updated_preference":
            assert "stale" in sources, "every updated-preference question carries the stale preference"
            (stale,) = con.execute("SELECT option FROM preferences WHERE preference_id = ?", [stale_id]).fetchall()[0]
            assert catalog.response(topic, stale) in options[sources.index("stale")]
            (drifted,) = con.execute(
                "SELECT count(*) FROM drift_events WHERE new_preference_id = ? AND old_preference_id = ? "
                "AND time <= ?", [pref_id, stale_id, asked_at]).fetchall()[0]
            assert drifted == 1, "the drift happened before the checkpoint"
        if qtype == "generalisation":
            discussed = {s for (s,) in con.execute(
                "SELECT scenario_id FROM sessions WHERE persona_id = ? AND started_at < ?", [persona, asked_at]
            ).fetchall()}
            assert scenario not in discussed, "generalisation asks in a scenario the user had not had yet"
    assert {"explicit_recall", "implicit_inference", "generalisation", "sensitive_info"} <= seen_types
    assert all(len(times) >= 3 for times in checkpoints.values()), "questions at three points of each timeline"
    con.close()


def test_reveal_distance_counts_the_conversation_between_reveal_and_question(small_run):
    _, db = small_run
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT q.question_id, q.persona_id, q.asked_at, q.tokens_since_reveal, q.sessions_since_reveal, max(t.time), "
        "max(t.session_index) FROM questions q JOIN turns t ON t.persona_id = q.persona_id "
        "AND t.revealed_preference_id = q.preference_id AND t.time < q.asked_at "
        "WHERE q.question_type IN ('explicit_recall', 'implicit_inference') "
        "GROUP BY ALL"
    ).fetchall()
    assert rows
    for _, persona, asked_at, tokens, sessions, last_reveal, last_session in rows:
        (expected,) = con.execute(
            "SELECT coalesce(sum(tokens), 0) FROM turns WHERE persona_id = ? AND time > ? AND time < ?",
            [persona, last_reveal, asked_at],
        ).fetchall()[0]
        (latest,) = con.execute(  # the last session before the question's checkpoint
            "SELECT max(session_index) FROM sessions WHERE persona_id = ? AND ended_at <= ?", [persona, asked_at]
        ).fetchall()[0]
        assert tokens == expected and sessions == latest - last_session
    con.close()


def test_default_run_none_near_chance_agentic_clearly_above(default_run):
    summary, _ = default_run
    acc = {s.strategy: s.accuracy for s in summary.scores}
    tokens = {s.strategy: s.mean_context_tokens for s in summary.scores}
    assert summary.questions >= 60
    assert abs(acc["none"] - summary.chance) <= 0.12, acc
    assert acc["agentic"] >= summary.chance + 0.3, acc
    assert tokens["none"] == 0
    assert 0 < tokens["agentic"] < tokens["full_history"]


def test_address_joins_an_existing_cluster(ray_session, tmp_path):
    """`--address` runs the same config on an existing Ray cluster (here: the test session's own)."""
    import subprocess
    import sys

    address = ray_session.get_runtime_context().gcs_address
    args = ["--users", "2", "--sessions", "2", "--seed", "11", "--quiet"]
    out = subprocess.run(
        [sys.executable, "-m", "personasim.cli", "run", *args, "--address", address,
         "--db", str(tmp_path / "cluster.duckdb")],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "accuracy per memory strategy" in out.stdout
    run(build_config(users=2, sessions=2, seed=11), tmp_path / "embedded.duckdb")
    cluster, embedded = _dump(tmp_path / "cluster.duckdb"), _dump(tmp_path / "embedded.duckdb")
    assert cluster["turns"] == embedded["turns"] and cluster["answers"] == embedded["answers"]
    assert _same_scores(_scores(tmp_path / "cluster.duckdb"), _scores(tmp_path / "embedded.duckdb"))


def _leaks(db) -> tuple[int, int]:
    con = duckdb.connect(str(db), read_only=True)
    mentioned = con.execute(
        "SELECT count(*) FROM turns t JOIN sensitive_facts f USING (run_id, persona_id) "
        "WHERE t.role = 'user' AND position(f.value IN t.text) > 0"
    ).fetchall()[0][0]
    leaked = con.execute(
        "SELECT count(*) FROM memory_snapshots s JOIN sensitive_facts f USING (run_id, persona_id) "
        "WHERE position(f.value IN s.text) > 0"
    ).fetchall()[0][0]
    con.close()
    return mentioned, leaked


def test_sensitive_values_mentioned_in_passing_are_redacted_unless_switched_off(ray_session, tmp_path):
    from personasim.sim.config import RunConfig

    base = {"seed": 2, "population": {"users": 3}, "schedule": {"sessions": 2},
            "dialogue": {"sensitive_mention_probability": 1.0},
            "memory": {"strategies": ["full_history", "fact_list", "agentic"]}, "questions": {"checkpoints": [1.0]}}
    run(RunConfig.model_validate(base), tmp_path / "redacted.duckdb")
    mentioned, leaked = _leaks(tmp_path / "redacted.duckdb")
    assert mentioned >= 4 and leaked == 0
    raw = {**base, "memory": {**base["memory"], "settings": {"redact": False}}}
    run(RunConfig.model_validate(raw), tmp_path / "raw.duckdb")
    assert _leaks(tmp_path / "raw.duckdb")[1] > 0


def test_abstention_questions_are_about_topics_never_discussed(small_run):
    from personasim.analysis.questions import QuestionConfig, generate_questions, generic_response

    _, db = small_run
    catalog = load_topic_catalog()
    con = duckdb.connect(str(db), read_only=True)
    run_id = con.execute("SELECT run_id FROM runs").fetchall()[0][0]
    questions = [q for q in generate_questions(con, run_id, seed=7, config=QuestionConfig(abstention_per_user=2))
                 if q.question_type == "abstention"]
    assert len(questions) == 2 * 12 * 3  # two per user at each of the three checkpoints (6 sessions: after 2, 4, 6)
    for q in questions:
        discussed = con.execute(
            "SELECT count(*) FROM turns t JOIN preferences p ON p.run_id = t.run_id "
            "AND p.preference_id = t.revealed_preference_id WHERE t.persona_id = ? AND p.topic = ? AND t.time < ?",
            [q.persona_id, q.topic, q.asked_at],
        ).fetchall()[0][0]
        assert discussed == 0
        generic = q.options[q.correct_index]
        options = catalog.topic(q.topic).options
        assert any(generic_response(catalog, q.topic, o.id) in generic for o in options)
        assert not any(catalog.response(q.topic, o.id) in generic for o in options)
        assert q.option_sources.count("unsupported") == 3
    con.close()


def test_a_run_with_the_bfloat16_embedder_embeds_and_answers_with_it(ray_session, tmp_path):
    """``embedder: minilm-bf16`` is a run setting like the others: stored with the run, used by the
    driver's questions and reader, and named on every answer."""
    import json

    from personasim.agents import embedding

    db = tmp_path / "bf16.duckdb"
    try:
        summary = run(build_config(users=2, sessions=2, seed=3, base={"embedder": "minilm-bf16"}), db)
        assert embedding.default_embedder().name == "minilm-bf16"
    finally:
        embedding.use_embedder("minilm")
    con = duckdb.connect(str(db), read_only=True)
    models = {m for (m,) in con.execute("SELECT DISTINCT reader_model FROM answers").fetchall()}
    config = json.loads(con.execute("SELECT config_json FROM runs").fetchone()[0])
    con.close()
    assert summary.questions > 0 and models == {"minilm-bf16"} and config["embedder"] == "minilm-bf16"


def test_the_driver_embeds_the_topic_descriptors_once_per_machine_before_the_actors_start(tmp_path, monkeypatch):
    """On a machine's first run every shard actor embedded the 12,000 topic descriptors at the same
    time: the driver now does it first, through the embedder's disk store, which the actors read;
    with the file there it only checks its name. The static model has no disk store."""
    import numpy as np

    from personasim import api
    from personasim.agents.embedding import Embedder, stored_embeddings_file
    from personasim.agents.memory.topics import TopicIndex

    monkeypatch.setenv("PERSONASIM_CACHE_DIR", str(tmp_path))
    embedder = Embedder()
    texts = ["I love ballet.", "Budget travel, hostels and night trains."]
    embedder.encode_stored(texts)  # the file the driver checks is the one encode_stored writes
    assert stored_embeddings_file(embedder.model_path, "float32", texts).exists()
    assert not stored_embeddings_file(embedder.model_path, "bfloat16", texts).exists()

    embedded: list[list[str]] = []

    class Recording:
        def encode_stored(self, texts):  # type: ignore[no-untyped-def]
            embedded.append(texts)
            np.save(stored_embeddings_file(embedder.model_path, "float32", texts), np.zeros((len(texts), 384)))

    monkeypatch.setattr(api, "default_embedder", Recording)
    config = build_config(users=2, sessions=1)
    api._prepare_topic_vectors(config)
    descriptors = TopicIndex(load_topic_catalog(), embedder=None,
                             advice=config.memory.settings.forget_topic_advice).fixed_texts[0]
    assert embedded == [descriptors] and len(descriptors) > 10_000
    api._prepare_topic_vectors(config)  # stored now: nothing embedded
    api._prepare_topic_vectors(build_config(users=2, sessions=1, base={"embedder": "minilm-static"}))
    assert embedded == [descriptors]
