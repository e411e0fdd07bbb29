"""Calibrate the memory-fidelity matching threshold on the scripted backend.

    python bench/calibrate_fidelity.py [--users 20] [--seed 0] [--db existing.duckdb]

Runs (or reads) a scripted run with the strategies that keep user statements (full_history,
fact_list, temporal, agentic) and links every distinct memory item to the user turn it was copied
from (the part before any ``[REDACTED]`` is a substring of exactly that turn). An item from a
revealing turn has a known source preference; an item from a turn that reveals nothing (small talk,
requests) must match no preference. For each threshold on a grid, an item is *matched* when its best
cosine is at or above the threshold, and the match is *right* when the best preference is the source:

    precision = right matches / matches, recall = right matches / items with a source, F1.

Pair-level Youden's J is reported too (positives: an item's score for its source; negatives: its
best score for any other preference, and the best score of items without a source). Both matching
modes are scored: ``statement`` (the preference's explicit statement only) and
``statement+reveals`` (also the user's own revealing turns up to the snapshot, the mode
``memory_fidelity`` uses). The chosen threshold maximises Youden's J in ``statement+reveals`` mode:
it keeps the rate at which a wrong preference (or small talk) clears the threshold near 5%, at a
small cost in recall (max-F1 thresholds are lower and let half of the wrong best scores through).
Writes bench/results/fidelity_threshold.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "fidelity_threshold.json"
STRATEGIES = ["none", "full_history", "fact_list", "temporal", "agentic"]
GRID = [round(float(x), 2) for x in np.arange(0.20, 0.96, 0.05)]


def _items(con, run_id):  # type: ignore[no-untyped-def]
    """(persona, time, text, source key or None, reveal mode or None) per distinct (persona, item)."""
    from personasim.analysis.fidelity import _key, _load_personas, _load_truth, normalise_item

    truth = _load_truth(con, run_id)
    personas = _load_personas(con, run_id, [r[0] for r in con.execute(
        "SELECT persona_id FROM personas WHERE run_id = ? ORDER BY 1", [run_id]).fetchall()])
    # keyed as the truth keys them: another person's preference carries its owner (analysis/fidelity.py)
    key_of = {pid: _key(t, o, p, owner)
              for pid, t, o, p, owner in con.execute(
                  "SELECT preference_id, topic, option, polarity, owner FROM preferences WHERE run_id = ?",
                  [run_id]).fetchall()}
    turns = con.execute(
        "SELECT persona_id, text, revealed_preference_id, reveal_mode FROM turns WHERE run_id = ? AND role = 'user'"
        " ORDER BY time", [run_id]).fetchall()
    by_persona: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for persona, text, pid, mode in turns:
        by_persona.setdefault(persona, []).append((text, pid, mode))
    seen, rows = set(), []
    for persona, t, items in con.execute(
        "SELECT persona_id, time, items FROM memory_snapshots WHERE run_id = ? ORDER BY time", [run_id]
    ).fetchall():
        for item in items:
            text = normalise_item(item)
            if not text or (persona, text) in seen:
                continue
            seen.add((persona, text))
            probe = text.split("[REDACTED]")[0].strip()
            sources = [s for s in by_persona.get(persona, []) if probe and probe in s[0]]
            if not sources:
                continue  # not copied from one of the user's turns: no known truth
            _, pid, mode = sources[0]
            rows.append((persona, t, text, key_of.get(pid) if pid else None, mode))
    return truth, personas, rows


def calibrate(con, run_id) -> dict:  # type: ignore[no-untyped-def]
    from personasim.agents.embedding import default_embedder

    truth, personas, rows = _items(con, run_id)
    embedder = default_embedder()
    key_index = {k: i for i, k in enumerate(truth.keys)}
    statements = embedder.encode(truth.statements)
    items = embedder.encode([r[2] for r in rows])
    reveal_texts = sorted({r[4] for p in personas.values() for r in p.reveals})
    reveal_vec = dict(zip(reveal_texts, embedder.encode(reveal_texts), strict=True))
    results = {}
    for mode in ("statement", "statement+reveals"):
        best, best_score, source_score, other_score = [], [], [], []
        for row, vector in zip(rows, items, strict=True):
            persona, t, _, source, _ = row
            scores = statements @ vector
            if mode == "statement+reveals":
                for rt, _, key, _, text, _ in personas[persona].reveals:
                    if rt <= t:
                        scores[key_index[key]] = max(scores[key_index[key]], float(reveal_vec[text] @ vector))
            b = int(scores.argmax())
            best.append(truth.keys[b])
            best_score.append(float(scores[b]))
            if source is not None:
                s = key_index[source]
                source_score.append(float(scores[s]))
                other_score.append(float(np.delete(scores, s).max()))
            else:
                other_score.append(float(scores.max()))
        sourced = np.array([r[3] is not None for r in rows])
        right = np.array([r[3] is not None and b == r[3] for r, b in zip(rows, best, strict=True)])
        scores_arr = np.array(best_score)
        grid = []
        for threshold in GRID:
            matched = scores_arr >= threshold
            hits = int((matched & right).sum())
            precision = hits / matched.sum() if matched.sum() else float("nan")
            recall = hits / sourced.sum()
            f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
            tpr = float(np.mean(np.array(source_score) >= threshold))
            fpr = float(np.mean(np.array(other_score) >= threshold))
            grid.append({"threshold": threshold, "precision": round(float(precision), 4),
                         "recall": round(float(recall), 4), "f1": round(float(f1), 4),
                         "tpr": round(tpr, 4), "fpr": round(fpr, 4), "youden_j": round(tpr - fpr, 4)})
        top = max(grid, key=lambda g: (g["f1"], g["threshold"]))
        results[mode] = {
            "best_f1": top, "best_youden": max(grid, key=lambda g: (g["youden_j"], g["threshold"])),
            "argmax_accuracy": round(float(right[sourced].mean()), 4), "grid": grid,
        }
    modes = [r[4] for r in rows if r[3] is not None]
    return {
        "items": len(rows), "items_with_source": int(sum(r[3] is not None for r in rows)),
        "explicit": modes.count("explicit"), "implicit": modes.count("implicit"),
        "items_without_source": int(sum(r[3] is None for r in rows)),
        "chosen_threshold": results["statement+reveals"]["best_youden"]["threshold"],
        "rule": "max pair-level Youden's J in statement+reveals mode (ties: the higher threshold)",
        "modes": results,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", type=Path, default=None, help="score this store's first run instead of running")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import duckdb

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        db = args.db
        if db is None:
            from personasim import build_config, run

            db = Path(tmp) / "calibrate.duckdb"
            run(build_config(users=args.users, sessions=args.sessions, seed=args.seed, memory=",".join(STRATEGIES)), db)
        con = duckdb.connect(str(db), read_only=True)
        run_id = con.execute("SELECT run_id FROM runs ORDER BY run_id LIMIT 1").fetchone()[0]
        figures = calibrate(con, run_id)
        con.close()
    figures |= {"users": args.users, "sessions": args.sessions, "seed": args.seed, "backend": "scripted",
                "strategies": STRATEGIES, "wall_seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    for mode, result in figures["modes"].items():
        print(mode, "best F1", result["best_f1"], "best J", result["best_youden"])
    print("chosen threshold", figures["chosen_threshold"], "->", args.out)
    return figures


if __name__ == "__main__":
    main()
