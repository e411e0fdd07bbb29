"""The static embedder option (issue 17): distilled locally from a BERT folder, selectable per run.

Distilled here from a tiny random BERT with the bundled MiniLM's folder layout (the real
distillation is the same code on MiniLM, about a minute, measured by bench/engine_bench.py
embedders)."""

from __future__ import annotations

import shutil

import duckdb
import numpy as np
import pytest

from personasim.agents import embedding, static_embedding
from personasim.agents.static_embedding import StaticEmbedder, distil, static_model_file
from personasim.config import ConfigError, build_config
from tests.tiny_models import WORDS, build_tiny_bert

PCA = 8


@pytest.fixture()
def tiny_bert(tmp_path, monkeypatch):
    folder = build_tiny_bert(tmp_path / "bert")
    monkeypatch.setenv("PERSONASIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(static_embedding, "_minilm_path", lambda: folder)
    monkeypatch.setattr(static_embedding, "PCA_DIMS", PCA)
    monkeypatch.setattr(StaticEmbedder.__init__, "__defaults__", (None, PCA))
    return folder


def test_distilling_gives_one_weighted_row_per_word_and_none_for_special_tokens(tiny_bert):
    vectors = distil(tiny_bert, PCA)
    assert vectors.shape == (5 + len(WORDS), PCA)
    assert not vectors[:5].any()  # [PAD] [UNK] [CLS] [SEP] [MASK] never count
    assert (np.linalg.norm(vectors[5:], axis=1) > 0).all()


def test_a_text_is_the_unit_mean_of_its_token_vectors_and_the_model_is_built_once(tiny_bert):
    embedder = StaticEmbedder()
    path = embedder.model_path
    assert path == static_model_file(tiny_bert, PCA) and path.exists()
    built = path.stat().st_mtime_ns
    vectors = np.load(path).astype(np.float32)
    ids = [5 + WORDS.index(w) for w in ("i", "like", "music")]
    expected = vectors[ids].mean(axis=0)
    got = embedder.encode(["i like music", "i like music", "qwertyuiop"])
    assert np.allclose(got[0], expected / np.linalg.norm(expected), atol=1e-6)
    assert np.array_equal(got[0], got[1])
    assert not got[2].any()  # no known token: a zero row, not NaN
    assert np.allclose(np.linalg.norm(got[:2], axis=1), 1.0, atol=1e-6)
    assert StaticEmbedder().model_path.stat().st_mtime_ns == built  # reused, not distilled again


def test_the_embedder_is_a_run_setting_outside_the_default_run_id(tiny_bert):
    default = build_config(users=2, sessions=2)
    static = build_config(users=2, sessions=2, config=None, base={"embedder": "minilm-static"})
    assert default.embedder == "minilm" and static.run_id != default.run_id
    with pytest.raises(ConfigError, match="embedder"):
        build_config(base={"embedder": "word2vec"})
    with pytest.raises(ValueError, match="unknown embedder 'word2vec'; choose from minilm, minilm-static"):
        embedding.use_embedder("word2vec")
    try:
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
