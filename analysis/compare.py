"""Paired comparisons of two strategies, readers or backends on the same questions.

Two accuracies measured on the same questions are not independent samples: a question that is
easy for one strategy is usually easy for the other. Comparing them with two separate intervals
wastes that pairing and reads noise as a result. ``compare`` pairs the answers of ``a`` and ``b``
question by question and reports

* the accuracy difference with a paired percentile-bootstrap interval (questions resampled with
  replacement, both answers of a question kept together), and
* McNemar's exact test: under "no difference", a question answered right by exactly one side is
  equally likely to favour either, so the count of ``a``-only wins among the discordant questions
  is Binomial(discordant, 1/2). The two-sided p-value is twice the smaller tail (at most 1).

``significant`` is ``p_value < alpha``; the verdict spells the result out in words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import duckdb
import numpy as np
import pandas as pd

from personasim.analysis.metrics import backend_labels, select_answers

__all__ = ["COMPARABLE", "compare", "mcnemar_exact", "paired_bootstrap_ci"]

COMPARABLE = ("strategy", "reader", "reader_model", "backend")
_COLUMNS = {
    "run_id": "a.run_id",
    "question_id": "a.question_id",
    "question_type": "q.question_type",
    "strategy": "a.strategy",
    "reader": "a.reader",
    "reader_model": "a.reader_model",
    "correct": "a.correct",
}


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (a right & b wrong, the reverse).

    ``p = min(1, 2 * P[X <= min(a_only, b_only)])`` with ``X ~ Binomial(a_only + b_only, 1/2)``;
    1.0 when there is no discordant pair."""
    if a_only < 0 or b_only < 0:
        raise ValueError("discordant counts cannot be negative")
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    try:
        from scipy.stats import binomtest

        return float(binomtest(k, n, 0.5, alternative="two-sided").pvalue)
    except ImportError:  # pragma: no cover - scipy is optional
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
        return min(1.0, 2 * tail)


def paired_bootstrap_ci(
    correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int, alpha: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval of mean(a) - mean(b), resampling pairs (questions) with replacement."""
    diff = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    n = diff.size
    if n == 0:
        raise ValueError("no pairs to bootstrap")
    if n == 1:
        return float(diff[0]), float(diff[0])
    stats = np.empty(n_boot)
    block = max(1, (1 << 22) // n)
    for start in range(0, n_boot, block):
        rows = min(block, n_boot - start)
        stats[start:start + rows] = diff[rng.integers(0, n, size=(rows, n))].mean(axis=1)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _load(con: duckdb.DuckDBPyConnection, run_id: str | None) -> pd.DataFrame:
    frame = select_answers(con, run_id, _COLUMNS)
    frame["backend"] = frame["run_id"].map(backend_labels(con, frame["run_id"].unique()))
    return frame


def _format_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _span(low: float, high: float) -> str:
    sep = "–" if low >= 0 else " to "
    return f"{low * 100:.1f}{sep}{high * 100:.1f}"


def _verdict(a: str, b: str, diff: float, low: float, high: float, p: float, significant: bool, alpha: float) -> str:
    level = round((1 - alpha) * 100)
    if significant:
        winner, loser = (a, b) if diff > 0 else (b, a)
        lo, hi = (low, high) if diff > 0 else (-high, -low)
        return (f"{winner} beats {loser} by {abs(diff) * 100:.1f} points "
                f"({level}% CI {_span(lo, hi)}, McNemar {_format_p(p)})")
    return (f"no significant difference between {a} and {b} ({diff * 100:+.1f} points, "
            f"{level}% CI {_span(low, high)}, McNemar {_format_p(p)})")


def compare(
    con: duckdb.DuckDBPyConnection,
    run_id: str | None,
    a: str,
    b: str,
    by: str = "strategy",
    reader: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    per_type: bool = False,
    where: Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """Compare ``a`` and ``b`` (two values of ``by``) on the questions both answered.

    ``by`` is ``strategy``, ``reader``, ``reader_model`` or ``backend`` (the run's chatbot backend
    as ``kind`` or ``kind:model``, labelled as in analysis/metrics.py; pass ``run_id=None`` to pool
    the runs being compared, whose questions are then paired by ``question_id``). ``reader`` keeps
    only that reader's answers; ``where`` fixes other columns (``{"strategy": "agentic"}`` when
    comparing readers). Answers are paired on (run_id, question_id), or on question_id alone for
    backends; each side must have one answer per question after filtering, otherwise the call
    fails and names the column to fix.

    Returns one row (``per_type=True``: a row ``question_type == "all"`` then one per question
    type) with ``by, a, b, [question_type], n_pairs, acc_a, acc_b, diff (acc_a - acc_b), ci_low,
    ci_high`` (paired bootstrap, ``1 - alpha`` level), ``a_only``/``b_only`` (discordant pairs),
    ``p_value`` (exact McNemar), ``significant`` (``p_value < alpha``) and ``verdict``.
    """
    if by not in COMPARABLE:
        raise ValueError(f"by must be one of {', '.join(COMPARABLE)}, got {by!r}")
    if a == b:
        raise ValueError(f"a and b are both {a!r}; compare two different {by} values")
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError("n_boot must be >= 1 and alpha strictly between 0 and 1")
    frame = _load(con, run_id)
    filters = dict(where or {})
    if reader is not None:
        filters["reader"] = reader
    for column, value in filters.items():
        if column not in frame.columns:
            raise ValueError(f"cannot filter on {column!r}; columns: {', '.join(frame.columns)}")
        values = [value] if isinstance(value, str) or not hasattr(value, "__iter__") else list(value)
        frame = frame[frame[column].isin(values)]
    scope = f"run {run_id!r}" if run_id is not None else "the store"
    key = ["question_id"] if by == "backend" else ["run_id", "question_id"]
    sides = {}
    for name in (a, b):
        side = frame[frame[by] == name]
        if side.empty:
            available = sorted(map(str, frame[by].dropna().unique()))
            raise ValueError(
                f"no answers with {by} == {name!r} in {scope}; available: {', '.join(available) or 'none'}"
            )
        duplicated = side.duplicated(key)
        if duplicated.any():
            others = [c for c in ("strategy", "reader", "reader_model", "backend", "run_id")
                      if c != by and side[c].nunique(dropna=False) > 1]
            raise ValueError(
                f"{by} == {name!r} has several answers per question (they differ in {', '.join(others) or 'nothing'});"
                " pick one with reader= or where={...}"
            )
        sides[name] = side.set_index(key)
    pairs = sides[a][["question_type", "correct"]].join(sides[b][["correct"]], how="inner", lsuffix="_a", rsuffix="_b")
    if pairs.empty:
        raise ValueError(f"{by} {a!r} and {b!r} share no questions in {scope}; nothing to compare")

    groups: list[tuple[str | None, pd.DataFrame]] = [(None, pairs)]
    if per_type:
        groups = [("all", pairs), *((str(t), g) for t, g in pairs.groupby("question_type", sort=True))]
    rows = []
    for question_type, group in groups:
        ca = group["correct_a"].to_numpy(dtype=bool)
        cb = group["correct_b"].to_numpy(dtype=bool)
        rng = np.random.default_rng([seed, len(rows)])
        low, high = paired_bootstrap_ci(ca, cb, n_boot, alpha, rng)
        a_only, b_only = int((ca & ~cb).sum()), int((~ca & cb).sum())
        p = mcnemar_exact(a_only, b_only)
        diff = float(ca.mean() - cb.mean())
        significant = bool(p < alpha)
        row: dict[str, object] = {"by": by, "a": a, "b": b}
        if per_type:
            row["question_type"] = question_type
        row |= {
            "n_pairs": int(ca.size), "acc_a": float(ca.mean()), "acc_b": float(cb.mean()), "diff": diff,
            "ci_low": low, "ci_high": high, "a_only": a_only, "b_only": b_only, "p_value": p,
            "significant": significant, "verdict": _verdict(a, b, diff, low, high, p, significant, alpha),
        }
        rows.append(row)
    return pd.DataFrame(rows)
