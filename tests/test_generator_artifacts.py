"""The question generator leaves no artifact a reader without memory could exploit (issue 10, part 2).

Options of one question have the same length (a neutral closing sentence evens them out), the
non-personalised reply is as concrete as the personalised ones, and on the default run no blind
reader (longest option, query only, demographic profile only) beats chance by more than the
audit's flag margins, overall or for any question type.
"""

from __future__ import annotations

import random

import duckdb
import pytest

from personasim.analysis.audit import BLIND_FLAG_MARGIN, LENGTH_FLAG_MARGIN, audit
from personasim.analysis.questions import (
    CLOSING_FIRST,
    CLOSING_SECOND,
    QuestionConfig,
    equalise_lengths,
)
from personasim.sim.store_read import read_questions


def test_equalise_lengths_gives_every_option_the_same_length_with_a_neutral_closing():
    rng = random.Random(3)
    for _ in range(200):
        entries = [("x" * rng.randint(120, 190), f"source{i}") for i in range(4)]
        out = equalise_lengths(list(entries), rng)
        assert len({len(text) for text, _ in out}) == 1
        assert [s for _, s in out] == [s for _, s in entries], "the order and sources are kept"
        for (before, _), (after, _) in zip(entries, out, strict=True):
            closing = after[len(before) + 1:]
            assert after.startswith(before + " ")
            assert any(closing == (f"{a} {b}" if b else a) for a in CLOSING_FIRST for b in CLOSING_SECOND)
    far = equalise_lengths([("x" * 10, "a"), ("x" * 400, "b")], rng)  # further apart than closings reach
    assert len(far[0][0]) < len(far[1][0]), "no exact match: the closest, never a crash"


def test_checkpoints_are_validated():
    assert QuestionConfig().checkpoints == [1 / 3, 2 / 3, 1.0]
    assert QuestionConfig(checkpoints=[1.0, 0.5, 0.5]).checkpoints == [0.5, 1.0]
    for bad in ([], [0.0], [1.5]):
        with pytest.raises(ValueError):
            QuestionConfig(checkpoints=bad)


def test_options_of_every_generated_question_have_the_same_length(small_run):
    _, db = small_run
    con = duckdb.connect(str(db), read_only=True)
    (run_id,) = con.execute("SELECT run_id FROM runs").fetchone()
    questions = read_questions(con, run_id)
    con.close()
    uneven = [q.question_id for q in questions if len({len(o) for o in q.options}) > 1]
    assert len(uneven) <= len(questions) // 50, uneven  # only where options are further apart than closings span


def _default_audit(default_run):
    _, db = default_run
    con = duckdb.connect(str(db), read_only=True)
    (run_id,) = con.execute("SELECT run_id FROM runs").fetchone()
    report = audit(con, run_id)
    con.close()
    # types with fewer than 10 questions are too small to judge: one question moves them by more than the margin
    return report, {"all": report, **{t: f for t, f in report.by_type.items() if f.questions >= 10}}


def test_default_run_has_no_artifact_above_the_flag_margins(default_run):
    """Issue 10's thresholds on the default run: the correct option strictly longest (or shortest) in
    no more than chance + 5 points of questions, and the blind readers longest and query_only within
    chance + 8 points, overall and per question type (n >= 10)."""
    report, groups = _default_audit(default_run)
    assert {"explicit_recall", "implicit_inference", "generalisation", "sensitive_info", "abstention"} <= set(groups)
    for name, f in groups.items():
        assert f.correct_longest_share <= f.chance + LENGTH_FLAG_MARGIN, (name, f)
        assert f.correct_shortest_share <= f.chance + LENGTH_FLAG_MARGIN, (name, f)
        for reader in ("longest", "query_only"):
            assert getattr(f.blind_accuracy, reader) <= f.chance + BLIND_FLAG_MARGIN, (name, reader, f)
    assert report.blind_accuracy.persona_prior <= report.chance + BLIND_FLAG_MARGIN
    for f in report.by_type.values():  # the small types are length-matched all the same
        assert f.correct_longest_share <= f.chance + LENGTH_FLAG_MARGIN
        assert f.correct_shortest_share <= f.chance + LENGTH_FLAG_MARGIN


def test_default_run_persona_prior_within_the_margin_for_every_type(default_run):
    """Distractors as plausible for the user's profile as the correct reply (QuestionConfig.balance_profile):
    without it, explicit_recall's persona_prior reached 34.8% on the default run."""
    _, groups = _default_audit(default_run)
    for name, f in groups.items():
        assert f.blind_accuracy.persona_prior <= f.chance + BLIND_FLAG_MARGIN, (name, f)


def test_profile_plausibility_embeds_the_catalog_replies_once_per_machine(tmp_path, monkeypatch):
    """The distractors' plausibility embeds every reply of the catalog in one call through the
    embedder's disk store, so the next run (or evaluation actor) reads them back instead of running
    MiniLM over them; the scores are those of embedding each reply alone."""
    from personasim.agents.embedding import Embedder
    from personasim.analysis.questions import _Plausibility
    from personasim.personas.catalog import load_topic_catalog

    monkeypatch.setenv("PERSONASIM_CACHE_DIR", str(tmp_path))
    catalog = load_topic_catalog()
    embedder = Embedder()  # its own: the process's embedder keeps what other tests embedded, untouched
    stored_calls: list[int] = []

    class Recording:
        def encode(self, texts):  # type: ignore[no-untyped-def]
            return embedder.encode(texts)

        def encode_stored(self, texts):  # type: ignore[no-untyped-def]
            stored_calls.append(len(texts))
            return embedder.encode_stored(texts)

    profile = "A 34-year-old nurse from Leeds, United Kingdom."
    picked = [(t.id, o.id) for t in catalog.topics[::40] for o in t.options[:2]]
    first = _Plausibility(catalog, Recording()).with_profiles({"p1": profile})
    scores = [first.score("p1", topic, option) for topic, option in picked]
    replies = sum(len(t.options) for t in catalog.topics)
    assert stored_calls == [replies] and len(list(tmp_path.glob("embeddings-*.npy"))) == 1
    profile_vector = embedder.encode([profile])[0]
    assert scores == [round(float(embedder.encode([catalog.response(t, o)])[0] @ profile_vector), 3)
                      for t, o in picked]

    embedder.clear_cache()  # as in a new process: nothing embedded yet but the profile
    embedder.encode([profile])
    monkeypatch.setattr(embedder.model, "encode", lambda *a, **k: pytest.fail("replies embedded again"))
    again = _Plausibility(catalog, Recording()).with_profiles({"p1": profile})
    assert [again.score("p1", topic, option) for topic, option in picked] == scores
