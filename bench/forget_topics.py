"""Forgetting by topic: recall and collateral on the catalog's implicit-hint bank.

    python bench/forget_topics.py [--cache /tmp/forget_hint_vectors.npz] [--quick]

Every implicit hint of the catalog (all topics, options, polarities and hint kinds; 96k sentences)
plays a memory note that never names its topic. For each topic, the request "Please forget what I
told you about my {topic name}." goes through ``forget_subject`` and ``TopicIndex.resolve``; a note
is deleted when ``PersonaMemory.forget`` would delete it: its similarity to the subject reaches
``forget_threshold`` (the rule on main), or one of its sentences ranks the resolved topic among its
``k`` best topics within ``margin`` of its best (``TopicIndex.about``).

    recall     = share of hints deleted by the request naming their own topic
    collateral = mean over requests of the share of OTHER topics' hints deleted

Reported for the similarity rule alone (main) and for the two rules together, over a grid of k
and margin, for two descriptor sets: ``advice`` (the default: names, labels, keywords, statements
and the chatbot's advice per option) and ``open`` (without the advice). For each: the setting
with the lowest collateral at recall >= 0.95, the best recall at collateral <= 0.03, and, at the
``MemorySettings`` defaults, recall by hint kind and polarity, the worst topics, and recall on
the hints that share no content word with their option's advice. Hints are never used to build
descriptors, but the advice was written from the same cues as the hints (most hints share a word
with it), so ``advice`` recall overstates what to expect from an LLM user's own hints; the
``open`` figures and the no-shared-word subset bound that from below. Also measured: the rules on
non-preference sentences (the scenarios' task details and assistant points: deleting those is
collateral too), subject resolution of every topic name, and the time to classify 1,000 items.
Writes bench/results/forget_topics.json. Embedding the bank takes ~10 min on 2 CPU cores;
``--cache`` keeps the vectors between runs, ``--quick`` uses every 10th hint.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "forget_topics.json"
K_GRID = [1, 3, 5, 6, 7, 8, 9, 10, 12, 15]
MARGIN_GRID = [0.05, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.3, 1.0]
TARGET_RECALL = 0.95
TARGET_COLLATERAL = 0.03
_STOP = {"with", "from", "into", "your", "that", "this", "them", "they", "have", "than", "then", "when", "what",
         "were", "will", "just", "some", "more", "most", "over", "only", "also", "each", "every", "about", "after",
         "before", "like", "very", "much", "many", "other", "their", "there", "these", "those", "which", "while",
         "would", "could", "should", "where", "been", "does", "keep", "take"}


def _hints(quick: bool) -> list[tuple[int, str, str, str, str]]:
    """(topic position, option, polarity, kind, text) of every hint in the catalog."""
    from personasim.personas.catalog import load_topic_catalog

    catalog = load_topic_catalog()
    rows = []
    for i, topic in enumerate(catalog.topics):
        for option in topic.options:
            for polarity in ("likes",) if topic.likes_only else ("likes", "dislikes"):
                for hint in catalog.hints(topic.id, option.id, polarity):  # type: ignore[arg-type]
                    rows.append((i, option.id, polarity, hint.kind, hint.text))
    return rows[::10] if quick else rows


def _encode(embedder, texts: list[str], cache: Path | None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Vectors of ``texts`` (unique), through an optional on-disk cache keyed by text."""
    known: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        stored = np.load(cache, allow_pickle=False)
        known = dict(zip(stored["texts"].tolist(), stored["vectors"], strict=True))
    missing = [t for t in texts if t not in known]
    for start in range(0, len(missing), 4096):
        chunk = missing[start:start + 4096]
        vectors = embedder.model.encode(chunk, batch_size=64)
        known.update(zip(chunk, vectors.astype(np.float32), strict=True))
        print(f"  embedded {start + len(chunk)}/{len(missing)}", flush=True)
    if cache is not None and missing:
        keys = sorted(known)
        np.savez(cache, texts=np.array(keys), vectors=np.stack([known[k] for k in keys]))
    return np.stack([known[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)


def _rank_gap(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (text, topic): its rank among the text's topics (0 = best) and its distance to the best."""
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.empty(scores.shape, dtype=np.int16)
    np.put_along_axis(rank, order, np.arange(scores.shape[1], dtype=np.int16)[None, :], axis=1)
    return rank, scores.max(axis=1, keepdims=True) - scores


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3} - _STOP


def _rates(deleted: np.ndarray, topic_of: np.ndarray) -> tuple[float, float, np.ndarray]:
    """deleted: (hints, requests) -> recall, mean collateral, recall per topic."""
    n_topics = deleted.shape[1]
    own = deleted[np.arange(len(topic_of)), topic_of]
    per_topic_total = np.bincount(topic_of, minlength=n_topics)
    per_topic_recall = np.bincount(topic_of, weights=own, minlength=n_topics) / np.maximum(per_topic_total, 1)
    deleted_per_request = deleted.sum(axis=0) - np.bincount(topic_of, weights=own, minlength=n_topics)
    collateral = deleted_per_request / (len(topic_of) - per_topic_total)
    return float(own.mean()), float(collateral.mean()), per_topic_recall


def _evaluate(index, vectors: np.ndarray, sentence_rows: list[int], topic_of: np.ndarray,  # type: ignore[no-untyped-def]
              similar: np.ndarray, resolved: np.ndarray) -> tuple[list[dict[str, float]], object]:
    """The grid of (k, margin) for one index; returns it and the deletion rule (k, margin) -> mask."""
    rank, gap = _rank_gap(index.scores_of_vectors(vectors))
    starts = np.flatnonzero(np.r_[True, np.diff(np.asarray(sentence_rows)) != 0])

    def rule(k: int, margin: float) -> np.ndarray:
        hit = (rank[:, resolved] < k) & (gap[:, resolved] <= margin) & (resolved >= 0)
        return np.logical_or.reduceat(hit, starts, axis=0) | similar

    grid = []
    for k in K_GRID:
        for margin in MARGIN_GRID:
            recall, collateral, _ = _rates(rule(k, margin), topic_of)
            grid.append({"k": k, "margin": margin, "recall": round(recall, 4), "collateral": round(collateral, 4)})
    return grid, rule


def _choose(grid: list[dict[str, float]]) -> dict[str, object]:
    """Lowest collateral with recall >= TARGET_RECALL; and best recall with collateral <= TARGET_COLLATERAL."""
    passing = [g for g in grid if g["recall"] >= TARGET_RECALL]
    capped = [g for g in grid if g["collateral"] <= TARGET_COLLATERAL]
    return {
        f"min_collateral_at_recall_{TARGET_RECALL}": min(passing, key=lambda g: (g["collateral"], -g["recall"]))
        if passing else None,
        f"max_recall_at_collateral_{TARGET_COLLATERAL}": max(capped, key=lambda g: (g["recall"], -g["collateral"]))
        if capped else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=None, help="npz file keeping the hint vectors between runs")
    parser.add_argument("--quick", action="store_true", help="every 10th hint only (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    from personasim.agents.embedding import default_embedder
    from personasim.agents.memory.base import MemorySettings, forget_subject
    from personasim.agents.memory.topics import TopicIndex, item_sentences, topic_hits
    from personasim.personas.catalog import HINT_KINDS, load_topic_catalog
    from personasim.worlds.scenarios import load_scenario_catalog

    catalog = load_topic_catalog()
    embedder = default_embedder()
    settings = MemorySettings()
    t0 = time.perf_counter()
    index = TopicIndex(catalog, embedder, advice=settings.forget_topic_advice)
    index._ensure()
    descriptor_s = time.perf_counter() - t0
    open_index = TopicIndex(catalog, embedder, advice=False)

    # -- subjects: every topic name, in both scripted phrasings --------------------------------
    requests = {t.id: f"Please forget what I told you about my {t.name}." for t in catalog.topics}
    resolved_ok = sum(index.resolve(forget_subject(r)).topics == (tid,) for tid, r in requests.items())
    resolved_ok_2 = sum(index.resolve(forget_subject(f"Please forget my preference about {t.name}.")).topics
                        == (t.id,) for t in catalog.topics)
    subjects = [forget_subject(requests[t]) for t in index.topic_ids]
    subject_vectors = embedder.encode(subjects)
    resolved = np.asarray([index.topic_ids.index(m.topics[0]) if m.topics else -1
                           for m in (index.resolve(s) for s in subjects)])

    # -- the hint bank ------------------------------------------------------------------------
    rows = _hints(args.quick)
    topic_of = np.asarray([r[0] for r in rows])
    texts = [r[4] for r in rows]
    sentence_rows, sentence_texts = item_sentences(texts)
    unique = sorted(set(texts) | set(sentence_texts))
    print(f"{len(rows)} hints, {len(sentence_texts)} sentences, {len(unique)} distinct texts", flush=True)
    t1 = time.perf_counter()
    from_cache = args.cache is not None and args.cache.exists()
    vectors = _encode(embedder, unique, args.cache)
    embed_s = time.perf_counter() - t1
    position = {t: i for i, t in enumerate(unique)}
    item_vectors = vectors[[position[t] for t in texts]]
    sentence_vectors = vectors[[position[t] for t in sentence_texts]]
    # the rule on main: similarity of the (bare) item to the subject
    similar = (item_vectors @ subject_vectors.T) >= settings.forget_threshold  # (hints, requests)
    recall_sim, collateral_sim, _ = _rates(similar, topic_of)

    # hints that share no content word (beyond the template's) with their option's advice text
    template_words = {w for by_kind in catalog.templates.hints.values() for ts in by_kind.values() for t in ts
                      for w in _content_words(t)}
    disjoint = np.asarray([not ((_content_words(r[4]) - template_words)
                                & _content_words(catalog.topic(index.topic_ids[r[0]]).option(r[1]).detail))
                           for r in rows])

    results: dict[str, object] = {}
    rules = {}
    for name, idx in (("advice", index), ("open", open_index)):
        grid, rule = _evaluate(idx, sentence_vectors, sentence_rows, topic_of, similar, resolved)
        rules[name] = rule
        deleted = rule(settings.forget_topic_k, settings.forget_topic_margin)
        own = deleted[np.arange(len(rows)), topic_of]
        recall, collateral, per_topic = _rates(deleted, topic_of)
        worst = np.argsort(per_topic)[:8]
        results[name] = {
            "descriptors": len(idx._descriptors),
            "at_defaults": {"k": settings.forget_topic_k, "margin": settings.forget_topic_margin,
                            "recall": round(recall, 4), "collateral": round(collateral, 4),
                            "recall_on_hints_sharing_no_word_with_advice": round(float(own[disjoint].mean()), 4),
                            "recall_by_kind": {k: round(float(own[[r[3] == k for r in rows]].mean()), 4)
                                               for k in HINT_KINDS},
                            "recall_by_polarity": {p: round(float(own[[r[2] == p for r in rows]].mean()), 4)
                                                   for p in ("likes", "dislikes")},
                            "worst_topics": {idx.topic_ids[i]: round(float(per_topic[i]), 4) for i in worst}},
            **_choose(grid),
            "grid": grid,
        }
        print(name, {k: v for k, v in results[name].items() if k != "grid"}, flush=True)

    # -- non-preference sentences: the scenarios' task details (user) and points (assistant) -------
    scenarios = load_scenario_catalog().scenarios
    generic: dict[str, list[str]] = {
        "task_details_user": sorted({d for sc in scenarios for d in sc.details}),
        "task_points_assistant": sorted({p for sc in scenarios for p in sc.points}),
    }
    generic_deleted: dict[str, float] = {}
    for kind, sentences_ in generic.items():
        kind_vectors = _encode(embedder, sentences_, args.cache)
        kind_scores = index.scores_of_vectors(kind_vectors)
        deleted = (kind_vectors @ subject_vectors.T) >= settings.forget_threshold
        for j, column in enumerate(resolved):
            if column >= 0:
                deleted[:, j] |= topic_hits(kind_scores, [int(column)], settings.forget_topic_k,
                                            settings.forget_topic_margin)
        generic_deleted[kind] = round(float(deleted.mean()), 4)

    # -- time: classifying 1,000 new items, and 100 long raw messages ---------------------------
    timing_items = [f"[2025-01-{1 + i % 28:02d}] {texts[(i * 7919) % len(texts)]} (note {i})" for i in range(1000)]
    embedder.clear_cache()
    index._ensure()
    t2 = time.perf_counter()
    index.about(timing_items, ["drinks"], settings.forget_topic_k, settings.forget_topic_margin)
    classify_s = time.perf_counter() - t2
    points = generic["task_points_assistant"]
    long_messages = [f"[2025-01-06T09:00] assistant: {' '.join(points[(i * 8 + j) % len(points)] for j in range(8))}"
                     for i in range(100)]
    t3 = time.perf_counter()
    index.about(long_messages, ["drinks"], settings.forget_topic_k, settings.forget_topic_margin)
    long_s = time.perf_counter() - t3

    result = {
        "command": "python bench/forget_topics.py" + (" --quick" if args.quick else "")
                   + (f" --cache {args.cache}" if args.cache else ""),
        "hints": len(rows), "hint_sentences": len(sentence_texts), "topics": len(index.topic_ids),
        "hints_sharing_no_word_with_advice": int(disjoint.sum()),
        "request": "Please forget what I told you about my {topic name}.",
        "forget_threshold": settings.forget_threshold,
        "subject_resolution": {"topic_names": len(requests), "resolved_right_what_i_told_you": resolved_ok,
                               "resolved_right_my_preference_about": resolved_ok_2},
        "similarity_rule_only": {"recall": round(recall_sim, 4), "collateral": round(collateral_sim, 4)},
        "non_preference_sentences_deleted_per_request_at_defaults": generic_deleted,
        "hint_vectors_from_cache": from_cache,
        "seconds": {"descriptor_vectors": round(descriptor_s, 2), "embed_hint_bank": round(embed_s, 1),
                    "classify_1000_items": round(classify_s, 2), "classify_100_long_messages": round(long_s, 2)},
        "cpu_threads": torch.get_num_threads(),
        "target": {"recall": TARGET_RECALL, "collateral": TARGET_COLLATERAL},
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("advice", "open")}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
