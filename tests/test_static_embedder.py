"""The static embedder option (issue 17): distilled and trained locally from a BERT folder,
selectable per run.

Built here from a tiny random BERT with the bundled MiniLM's folder layout, trained on the small
run's store (the real build is the same code on MiniLM with a corpus run of its own, a few
minutes, measured by bench/engine_bench.py embedders)."""

from __future__ import annotations

import shutil

import duckdb
import numpy as np
import pytest

from personasim.agents import embedding, static_embedding, static_training
from personasim.agents.minilm import MiniLM
from personasim.agents.static_embedding import (
    CORPUS_SEED,
    StaticEmbedder,
    StaticModelMissingError,
    distil,
    static_model_file,
)
from personasim.agents.static_training import corpus_texts, train
from personasim.analysis import static_build
from personasim.config import ConfigError, build_config
from tests.tiny_models import WORDS, build_tiny_bert


@pytest.fixture()
def tiny_bert(tmp_path, monkeypatch, small_run):
    """A tiny BERT as "MiniLM", whose corpus run is the small run's store (no second simulation)."""
    folder = build_tiny_bert(tmp_path / "bert")
    monkeypatch.setenv("PERSONASIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(static_embedding, "_minilm_path", lambda: folder)
    monkeypatch.setattr(static_build, "run_corpus", lambda db: shutil.copy(small_run[1], db))
    monkeypatch.setattr(static_training, "EPOCHS", 3)
    return folder


def test_distilling_gives_one_weighted_row_per_word_and_none_for_special_tokens(tiny_bert):
    vectors = distil(tiny_bert)
    assert vectors.shape == (5 + len(WORDS), MiniLM(tiny_bert).dimension)
    assert not vectors[:5].any()  # [PAD] [UNK] [CLS] [SEP] [MASK] never count
    assert (np.linalg.norm(vectors[5:], axis=1) > 0).all()


def test_the_corpus_is_every_kind_of_text_a_run_embeds(small_run):
    _, db = small_run
    texts = corpus_texts(db)
    assert len(texts) == len(set(texts)) and all(t.strip() for t in texts)
    con = duckdb.connect(str(db), read_only=True)
    option = con.execute("SELECT options[1], query FROM questions LIMIT 1").fetchone()
    user_turn = con.execute("SELECT text FROM turns WHERE role = 'user' LIMIT 1").fetchone()[0]
    note = con.execute("SELECT items[1] FROM memory_snapshots WHERE strategy = 'agentic' AND len(items) > 0 "
                       "LIMIT 1").fetchone()[0]
    con.close()
    assert {*option, user_turn, note} <= set(texts)
    assert "music genres" in [t.lower() for t in texts]  # the topic index's descriptors too
    assert corpus_texts(db) == texts  # a stable order: the same build every time


def test_the_corpus_run_is_a_simulation_with_questions_in_a_child_process(tmp_path):
    db = tmp_path / "corpus.duckdb"
    static_build.run_corpus(db, users=2, sessions=2)
    con = duckdb.connect(str(db), read_only=True)
    seed, config = con.execute("SELECT seed, config_json FROM runs").fetchone()
    counts = con.execute("SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM questions), "
                         "(SELECT count(*) FROM answers)").fetchone()
    con.close()
    assert seed == CORPUS_SEED and '"embedder":"minilm"' in config.replace(" ", "")
    assert counts[0] == 4 and counts[1] > 0 and counts[2] == 0  # questions asked, none answered
    assert len(corpus_texts(db)) > 1000


def test_training_brings_each_text_towards_its_target():
    rng = np.random.default_rng(0)
    initial = rng.normal(size=(12, 6)).astype(np.float32)
    token_ids = [[1, 2], [2, 3, 4], [5], [6, 7, 1], [8, 9], [10, 11, 3]]
    targets = rng.normal(size=(len(token_ids), 6)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)

    def cosines(table):
        sums = np.stack([table[ids].sum(axis=0) for ids in token_ids])
        return (sums / np.linalg.norm(sums, axis=1, keepdims=True) * targets).sum(axis=1)

    trained = train(initial, token_ids, targets, epochs=200, learning_rate=0.05, batch_size=4)
    assert cosines(trained).mean() > 0.95 > cosines(initial).mean()
    assert np.array_equal(trained[0], initial[0])  # a token no text uses keeps its start
    assert np.array_equal(train(initial, token_ids, targets, epochs=200, learning_rate=0.05, batch_size=4),
                          trained)  # seeded: the same vectors every build


def test_a_text_is_the_unit_sum_of_its_token_vectors_and_the_model_is_built_once(tiny_bert):
    with pytest.raises(StaticModelMissingError, match="python -m personasim.analysis.static_build"):
        StaticEmbedder()  # loading never builds: it says how to
    static_build.prepare_embedder("minilm")
    assert not static_model_file(tiny_bert).exists()  # MiniLM has nothing to build
    static_build.prepare_embedder("minilm-static")
    embedder = StaticEmbedder()
    path = embedder.model_path
    assert path == static_model_file(tiny_bert) and path.exists()
    built = path.stat().st_mtime_ns
    vectors = np.load(path).astype(np.float32)
    assert not np.allclose(vectors, distil(tiny_bert), atol=1e-3)  # trained, not only distilled
    ids = [5 + WORDS.index(w) for w in ("i", "like", "music")]
    expected = vectors[ids].mean(axis=0)
    got = embedder.encode(["i like music", "i like music", "qwertyuiop"])
    assert np.allclose(got[0], expected / np.linalg.norm(expected), atol=1e-6)
    assert np.array_equal(got[0], got[1])
    assert np.allclose(np.linalg.norm(got[:2], axis=1), 1.0, atol=1e-6)
    static_build.prepare_embedder("minilm-static")
    assert StaticEmbedder().model_path.stat().st_mtime_ns == built  # reused, not built again


def test_a_kept_vector_is_the_one_computing_it_again_gives(tiny_bert, monkeypatch):
    """Vectors are kept by text: the same bits as a text embedded alone in a fresh embedder,
    whatever batch it came in, and the kept set stays within its bound."""
    static_build.prepare_embedder("minilm-static")
    texts = [" ".join(WORDS[i:i + 3]) for i in range(30)]
    fresh = StaticEmbedder()
    alone = []
    for text in texts:
        fresh.clear_cache()
        alone.append(fresh.encode([text])[0])
    embedder = StaticEmbedder()
    assert np.array_equal(embedder.encode(texts), np.stack(alone))
    monkeypatch.setattr(static_embedding, "TEXT_CACHE_SIZE", 10)
    again = embedder.encode([*reversed(texts), *texts[:5]])  # all kept: given, then trimmed to ten
    assert np.array_equal(again, np.stack([*reversed(alone), *alone[:5]]))
    assert len(embedder._vectors) == 10
    assert embedder.encode([]).shape == (0, embedder.dimension)


def test_an_actor_never_builds(tiny_bert, monkeypatch):
    monkeypatch.setattr(static_build, "in_ray_worker", lambda: True)
    static_build.prepare_embedder("minilm-static")
    assert not static_model_file(tiny_bert).exists()


def test_the_embedder_is_a_run_setting_outside_the_default_run_id(tiny_bert):
    default = build_config(users=2, sessions=2)
    static = build_config(users=2, sessions=2, config=None, base={"embedder": "minilm-static"})
    assert default.embedder == "minilm" and static.run_id != default.run_id
    with pytest.raises(ConfigError, match="embedder"):
        build_config(base={"embedder": "word2vec"})
    with pytest.raises(ValueError, match="unknown embedder 'word2vec'; choose from minilm, minilm-bf16, minilm-static"):
        embedding.use_embedder("word2vec")
    try:
        static_build.prepare_embedder("minilm-static")
        embedding.use_embedder("minilm-static")
        assert isinstance(embedding.default_embedder(), StaticEmbedder)
    finally:
        embedding.use_embedder("minilm")
    assert embedding.default_embedder().name == "minilm"


def test_eval_with_the_static_embedder_stores_its_answers_beside_minilms(small_run, tiny_bert, tmp_path):
    from personasim.analysis.evaluate import evaluate

    _, db = small_run
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    try:
        summary = evaluate(copy, embedder="minilm-static", n_boot=20, workers=1)
    finally:
        embedding.use_embedder("minilm")
    assert summary.reader_model == "minilm-static" and summary.answers > 0
    con = duckdb.connect(str(copy), read_only=True)
    rows = dict(con.execute("SELECT coalesce(reader_model, 'minilm'), count(*) FROM answers GROUP BY 1").fetchall())
    con.close()
    assert rows["minilm-static"] == summary.answers and rows["minilm"] == summary.answers


def test_minilms_own_tokenizer_gives_the_fast_split_the_same_ids(small_run, tmp_path, monkeypatch):
    """With MiniLM's BERT tokenizer, plain ASCII text is split in Python and each word's pieces
    looked up once: the ids (and so the vectors) must be the tokenizer's, text by text."""
    monkeypatch.setenv("PERSONASIM_CACHE_DIR", str(tmp_path / "cache"))
    minilm = static_embedding._minilm_path()
    vocab = MiniLM(minilm).tokenizer.get_vocab_size()
    static_embedding.save_static_model(np.random.default_rng(0).normal(size=(vocab, 8)), minilm)
    embedder = StaticEmbedder(minilm)
    assert embedder._splits_like_bert
    con = duckdb.connect(str(small_run[1]), read_only=True)
    texts = [t for (t,) in con.execute("SELECT text FROM turns ORDER BY turn_id LIMIT 300").fetchall()]
    texts += [o for (options,) in con.execute("SELECT options FROM questions LIMIT 50").fetchall() for o in options]
    con.close()
    texts += ["Crème brûlée, naïve café", "snake_case and C++ (v2.0)!", "tab\there\r\nnew line", "bell\x07 and \x0b",
              "UPPER lower MiXeD", "", "   ", "x" * 150, "£5 or $5?", "emoji 🙂 here", "1,000.50 @home #tag ~ ` |"]
    for text in texts:
        assert embedder.token_ids(text) == embedder.tokenizer.encode(text, add_special_tokens=False).ids, text
    vectors = embedder.encode(texts)
    for text, vector in zip(texts, vectors, strict=True):
        ids = embedder.tokenizer.encode(text, add_special_tokens=False).ids
        if not ids:
            assert not vector.any()
            continue
        mean = embedder.vectors[ids].mean(axis=0)
        np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), atol=1e-6)


def test_a_tokenizer_that_splits_otherwise_is_used_as_it_is(tiny_bert):
    static_embedding.save_static_model(np.ones((5 + len(WORDS), 8)))
    embedder = StaticEmbedder()
    assert not embedder._splits_like_bert  # the tiny BERT's word-level tokenizer keeps case and punctuation
    text = f"{WORDS[0].upper()}, {WORDS[1]}!"
    assert embedder.token_ids(text) == embedder.tokenizer.encode(text, add_special_tokens=False).ids


def test_audit_embeds_with_the_runs_own_embedder_or_the_one_named_as_eval_does(small_run, tiny_bert, tmp_path):
    """``personasim audit`` of a run that chose ``minilm-static`` embeds with it, as that run's
    ``personasim eval`` does, so both print the same blind readers; ``--embedder`` overrides it."""
    from personasim.analysis.audit import audit_store
    from personasim.analysis.evaluate import evaluate

    copy = _as_if_static(small_run, tmp_path)
    try:
        own = audit_store(copy)
        named = audit_store(copy, embedder="minilm-static")
        summary = evaluate(copy, n_boot=20, workers=1)
        minilm = audit_store(copy, embedder="minilm")
    finally:
        embedding.use_embedder("minilm")
    assert summary.reader_model == "minilm-static"
    assert own == named and own.model_dump() == summary.audit
    assert minilm.blind_accuracy.query_only != own.blind_accuracy.query_only  # another model, another reader
    assert minilm.blind_accuracy.longest == own.blind_accuracy.longest  # lengths need no model
    with pytest.raises(ValueError, match="unknown embedder 'word2vec'"):
        audit_store(copy, embedder="word2vec")


def test_the_report_audits_once_with_the_runs_model_and_fidelity_stays_minilm(small_run, tiny_bert, tmp_path,
                                                                             monkeypatch):
    """``personasim report`` shows the audit ``personasim audit`` prints for the run (its own
    embedder), computed once; memory fidelity embeds with MiniLM whatever the process chose,
    because its threshold was calibrated on MiniLM."""
    from personasim.analysis import audit as audit_module
    from personasim.analysis.fidelity import fidelity_summary
    from personasim.analysis.report import build_report

    copy = _as_if_static(small_run, tmp_path)
    audits: list = []
    real = audit_module.audit
    monkeypatch.setattr(audit_module, "audit", lambda *a, **k: audits.append(real(*a, **k)) or audits[-1])
    with duckdb.connect(str(copy), read_only=True) as con:
        run_id = con.execute("SELECT run_id FROM runs").fetchone()[0]
        with_minilm = fidelity_summary(con, run_id)
        try:
            static_build.prepare_embedder("minilm-static")
            embedding.use_embedder("minilm-static")  # as a notebook that ran a static run would have
            build_report(con, run_id, n_boot=20)
            while_static = fidelity_summary(con, run_id)
        finally:
            embedding.use_embedder("minilm")
    assert len(audits) == 1
    monkeypatch.setattr(audit_module, "audit", real)
    try:
        assert audits[0] == audit_module.audit_store(copy)
    finally:
        embedding.use_embedder("minilm")
    assert while_static.equals(with_minilm) and len(with_minilm) > 0


def _as_if_static(small_run, tmp_path):  # type: ignore[no-untyped-def]
    """A copy of the small run's store whose run chose the static embedder."""
    import json

    _, db = small_run
    copy = tmp_path / "static.duckdb"
    shutil.copy(db, copy)
    with duckdb.connect(str(copy)) as con:
        (config,) = con.execute("SELECT config_json FROM runs").fetchone()
        static = json.dumps({**json.loads(config), "embedder": "minilm-static"})
        con.execute("UPDATE runs SET config_json = ?", [static])
    return copy
