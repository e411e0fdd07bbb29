"""Training the static embedder on the framework's own texts, so it reads them as MiniLM does.

A static model distilled token by token (``distil``: each vocabulary token through MiniLM alone)
knows what words mean out of context and nothing about which words matter in a sentence; on the
default run its reader scored 25 points under MiniLM's. This framework's texts come from finite
banks (hints, task replies, notes, question options), so the gap can be closed where it matters:
the token vectors are trained, tokenlearn-style, so that the normalised sum of a text's token
vectors points where MiniLM's vector of the whole text does, over a corpus that a small simulated
run produces (every memory line and its sentences, user turn, question and option, and the topic
index's descriptors). The run uses a seed of its own, so the default run (seed 0) is not in it.

Everything is offline and deterministic: the corpus run is the scripted default world with
MiniLM, the targets are MiniLM's vectors, and training is seeded. It takes minutes (17 on this
2-core machine beside a test run), once per machine: ``analysis/static_build.py`` makes the
corpus run and saves the result where ``agents/static_embedding.py`` loads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Training: SparseAdam on the token table, cosine loss against MiniLM's vectors.
EPOCHS = 10
LEARNING_RATE = 0.01
BATCH_SIZE = 256
TRAIN_SEED = 0


def corpus_texts(db: str | Path) -> list[str]:
    """Every text of a run's store that an embedder is asked about: memory lines and their
    sentences as forgetting sees them, user turns and their sentences, question queries and
    options; and the topic index's descriptors. Distinct, in a stable order."""
    import duckdb

    from personasim.agents.memory.topics import item_sentences, topic_descriptors
    from personasim.personas.catalog import load_topic_catalog

    con = duckdb.connect(str(db), read_only=True)
    try:
        items = [r[0] for r in con.execute(
            "SELECT DISTINCT unnest(items) AS t FROM memory_snapshots ORDER BY t").fetchall()]
        users = [r[0] for r in con.execute(
            "SELECT DISTINCT text FROM turns WHERE role = 'user' ORDER BY text").fetchall()]
        options = [r[0] for r in con.execute(
            "SELECT DISTINCT unnest(options) AS t FROM questions ORDER BY t").fetchall()]
        queries = [r[0] for r in con.execute("SELECT DISTINCT query FROM questions ORDER BY query").fetchall()]
    finally:
        con.close()
    catalog = load_topic_catalog()
    descriptors = [d for topic in catalog.topics for d in topic_descriptors(catalog, topic.id)]
    texts = [*items, *item_sentences(items)[1], *users, *item_sentences(users)[1], *options, *queries, *descriptors]
    return [t for t in dict.fromkeys(texts) if t.strip()]


def train(initial: np.ndarray, token_ids: list[list[int]], targets: np.ndarray,
          epochs: int = EPOCHS, learning_rate: float = LEARNING_RATE, batch_size: int = BATCH_SIZE,
          seed: int = TRAIN_SEED, log: Callable[[str], None] | None = None) -> np.ndarray:
    """Token vectors, starting from ``initial``, trained so that each text's normalised sum of
    token vectors has cosine 1 with its target (unit rows). Tokens no text uses keep their start."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    table = torch.nn.EmbeddingBag(initial.shape[0], initial.shape[1], mode="sum", sparse=True)
    with torch.no_grad():
        table.weight.copy_(torch.from_numpy(np.ascontiguousarray(initial, dtype=np.float32)))
    optimiser = torch.optim.SparseAdam(table.parameters(), lr=learning_rate)
    wanted = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
    rows = [i for i, ids in enumerate(token_ids) if ids]
    for epoch in range(epochs):
        order = torch.randperm(len(rows), generator=generator).tolist()
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = [rows[i] for i in order[start:start + batch_size]]
            flat = torch.tensor([t for i in batch for t in token_ids[i]])
            offsets = torch.tensor(np.cumsum([0] + [len(token_ids[i]) for i in batch[:-1]]))
            vectors = torch.nn.functional.normalize(table(flat, offsets), dim=1)
            loss = (1.0 - (vectors * wanted[batch]).sum(dim=1)).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        if log:
            log(f"epoch {epoch + 1}/{epochs}: mean cosine distance {total / max(len(rows), 1):.4f}")
    return table.weight.detach().numpy().copy()


def trained_vectors(minilm: Path, initial: np.ndarray, corpus_db: Path,
                    log: Callable[[str], None] | None = None) -> np.ndarray:
    """``initial`` trained on the corpus of the run stored in ``corpus_db``."""
    from personasim.agents.minilm import MiniLM

    log = log or (lambda line: None)
    texts = corpus_texts(corpus_db)
    model = MiniLM(minilm)
    log(f"MiniLM targets for {len(texts):,} texts")
    started = time.perf_counter()
    targets = model.encode(texts, batch_size=64)
    log(f"targets in {time.perf_counter() - started:.0f} s; training")
    tokenizer = model.tokenizer
    tokenizer.no_padding()
    tokenizer.no_truncation()
    token_ids = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return train(initial, token_ids, targets, epochs=EPOCHS, log=log)
