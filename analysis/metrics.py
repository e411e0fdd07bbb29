"""Benchmark metrics as pandas DataFrames, with percentile-bootstrap confidence intervals.

``score_by_strategy`` (analysis/evaluate.py) gives one point estimate per strategy. Comparing
memory strategies honestly needs more: breakdowns by question type, reveal mode and distance to
the reveal, and an interval around every accuracy so that a 2-point gap on 40 questions is not
read as a win. This module joins ``answers`` with ``questions`` (and ``runs`` for the chatbot
backend), groups in pandas and bootstraps in numpy.

Bootstrap choices, and why:

* Percentile bootstrap: it needs no normal approximation, stays inside [0, 1], and gives the
  degenerate interval (1, 1) for an all-correct group instead of a nonsensical one.
* By default the answer rows of a group are resampled (i.i.d. answers). This is the usual
  benchmark convention, but answers of one simulated user share a memory and a persona, so they
  are correlated and the interval is then too narrow. ``cluster="persona"`` resamples personas
  instead (cluster bootstrap: draw personas with replacement and pool all their answers), which
  is the honest interval when the question is "would this hold for other users?".
* Every group gets its own generator, seeded from ``seed`` and the group's key, so a group's
  interval does not change when other groups are filtered away or added.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Literal

import duckdb
import numpy as np
import pandas as pd

from personasim.sim.store_runs import read_runs

__all__ = [
    "ALLOWED_DIMENSIONS",
    "SESSION_BUCKET_EDGES",
    "SESSION_BUCKET_LABELS",
    "TOKEN_BUCKET_EDGES",
    "TOKEN_BUCKET_LABELS",
    "accuracy_table",
    "bootstrap_ci",
    "cluster_bootstrap_ci",
    "session_bucket",
    "summary_tables",
    "token_bucket",
]

# Distance buckets: each edge is the inclusive lower bound of its label; -1 (never revealed) is "n/a".
# Roughly doubling widths, because recall decays with distance on a log scale, not a linear one. The
# token buckets double from 4k up to 128k so that both of PersonaMem-v2's windows are resolved: its
# 32k histories put the median reveal ~19k tokens before the question, its 128k ones ~64k (see
# analysis/distance.py), and a bucket spanning 16k-64k would lump the two regimes together.
SESSION_BUCKET_EDGES: tuple[int, ...] = (0, 1, 2, 4, 8)
SESSION_BUCKET_LABELS: tuple[str, ...] = ("0", "1", "2-3", "4-7", "8+")
TOKEN_BUCKET_EDGES: tuple[int, ...] = (0, 1_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000)
TOKEN_BUCKET_LABELS: tuple[str, ...] = (
    "<1k", "1k-4k", "4k-8k", "8k-16k", "16k-32k", "32k-64k", "64k-128k", "128k+",
)
NOT_REVEALED = "n/a"

# Stored columns a table can be grouped or filtered by, and the SQL expression that reads each.
_STORED_DIMENSIONS: dict[str, str] = {
    "run_id": "a.run_id",
    "strategy": "a.strategy",
    "reader": "a.reader",
    "reader_model": "a.reader_model",
    "persona_id": "a.persona_id",
    "question_type": "q.question_type",
    "reveal_mode": "q.reveal_mode",
    "pref_type": "q.pref_type",
    "who": "q.who",
    "source": "q.source",
    "topic": "q.topic",
}
# Derived dimensions: computed in pandas from these stored columns.
_DERIVED_DIMENSIONS: dict[str, tuple[str, str]] = {
    "backend": ("run_id", "a.run_id"),
    "sessions_since_reveal_bucket": ("sessions_since_reveal", "q.sessions_since_reveal"),
    "tokens_since_reveal_bucket": ("tokens_since_reveal", "q.tokens_since_reveal"),
}
ALLOWED_DIMENSIONS: tuple[str, ...] = tuple(_STORED_DIMENSIONS) + tuple(_DERIVED_DIMENSIONS)
# Columns added by schema version 5, read as their migration defaults when a store older than that
# is opened read-only (only a writing TrajectoryStore migrates in place).
_OLD_STORE_DEFAULTS: dict[str, str] = {
    "q.tokens_since_reveal": "-1",
    "q.pref_type": "''",
    "q.who": "'self'",
    "q.source": "'generated'",
    "a.reader_model": "NULL::VARCHAR",
}

# Bootstrap index draws are made in blocks of at most this many cells, so memory stays bounded for
# large groups. Consecutive blocks give exactly the indices of one (n_boot, n) matrix.
_MAX_DRAWS_PER_BLOCK = 1 << 24

_RESULT_COLUMNS = ("answers", "accuracy", "ci_low", "ci_high", "mean_context_tokens")

ClusterBy = Literal["persona"] | None


# ----------------------------------------------------------------------------------- bootstrap


def _check_bootstrap_args(n_boot: int, confidence: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _resample_indices(n: int, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield blocks of the (n_boot, n) matrix of indices drawn with replacement from range(n)."""
    rows_per_block = max(1, _MAX_DRAWS_PER_BLOCK // n)
    for start in range(0, n_boot, rows_per_block):
        yield rng.integers(0, n, size=(min(rows_per_block, n_boot - start), n))


def _percentile_interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(stats, [alpha / 2, 1.0 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(
    correct: np.ndarray, n_boot: int, confidence: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile-bootstrap interval for the accuracy of i.i.d. 0/1 outcomes.

    Resamples ``correct`` with replacement ``n_boot`` times and takes the (1 - confidence)/2 and
    1 - (1 - confidence)/2 quantiles of the resampled accuracies. A resample's hit count, n draws
    with replacement from outcomes of which k are hits, is exactly Binomial(n, k/n), so it is drawn
    as that: the same bootstrap without the (n_boot, n) index matrix (121,239 answers: 5 s of the
    6 s summary tables, now milliseconds), and an interval that depends on the outcomes, not on
    the order the store returns them in. A single outcome has no spread to resample, so its
    interval is the point itself.
    """
    _check_bootstrap_args(n_boot, confidence)
    outcomes = np.asarray(correct, dtype=bool).ravel()
    n = outcomes.size
    if n == 0:
        raise ValueError("cannot bootstrap an empty group")
    if n == 1:
        point = float(outcomes[0])
        return point, point
    hits = rng.binomial(n, outcomes.sum() / n, size=n_boot)
    return _percentile_interval(hits / n, confidence)


def cluster_bootstrap_ci(
    correct: np.ndarray, clusters: np.ndarray, n_boot: int, confidence: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval from a cluster bootstrap: resample clusters, pool their outcomes.

    Answers of one persona are correlated (same memory, same preferences), so treating them as
    independent understates the uncertainty. Here whole clusters are drawn with replacement and
    the accuracy of each resample is (hits of the drawn clusters) / (answers of the drawn clusters).
    With a single cluster there is nothing to resample and the interval is the point estimate.
    """
    _check_bootstrap_args(n_boot, confidence)
    outcomes = np.asarray(correct, dtype=bool).ravel()
    labels = np.asarray(clusters).ravel()
    if outcomes.size == 0:
        raise ValueError("cannot bootstrap an empty group")
    if labels.size != outcomes.size:
        raise ValueError(f"{labels.size} cluster labels for {outcomes.size} outcomes")
    _, codes = np.unique(labels, return_inverse=True)
    hits_per_cluster = np.bincount(codes, weights=outcomes)
    size_per_cluster = np.bincount(codes).astype(float)
    n_clusters = size_per_cluster.size
    if n_clusters == 1:
        point = float(outcomes.mean())
        return point, point
    accuracies = [
        hits_per_cluster[block].sum(axis=1) / size_per_cluster[block].sum(axis=1)
        for block in _resample_indices(n_clusters, n_boot, rng)
    ]
    return _percentile_interval(np.concatenate(accuracies), confidence)


# ------------------------------------------------------------------------------- dimensions


def _bucket(values: pd.Series, edges: Sequence[int], labels: Sequence[str]) -> pd.Categorical:
    """Map distances to ordered bucket labels; negative or missing means never revealed ("n/a")."""
    distances = pd.to_numeric(values, errors="coerce").fillna(-1).to_numpy(dtype=np.int64)
    names = np.array([*labels, NOT_REVEALED], dtype=object)
    positions = np.searchsorted(np.asarray(edges), distances, side="right") - 1
    positions[distances < 0] = len(labels)
    return pd.Categorical(names[positions], categories=[*labels, NOT_REVEALED], ordered=True)


def session_bucket(sessions_since_reveal: Sequence[int] | pd.Series) -> pd.Categorical:
    """Bucket labels ("0", "1", "2-3", "4-7", "8+", "n/a") for sessions since the last reveal."""
    return _bucket(pd.Series(sessions_since_reveal), SESSION_BUCKET_EDGES, SESSION_BUCKET_LABELS)


def token_bucket(tokens_since_reveal: Sequence[int] | pd.Series) -> pd.Categorical:
    """Bucket labels ("<1k" ... "128k+", "n/a") for conversation tokens since the last reveal."""
    return _bucket(pd.Series(tokens_since_reveal), TOKEN_BUCKET_EDGES, TOKEN_BUCKET_LABELS)


def backend_labels(con: duckdb.DuckDBPyConnection, run_ids: Collection[str]) -> dict[str, str]:
    """``kind:model`` of each run's chatbot backend; "external" for loaded benchmark runs."""
    runs = {r.run_id: r for r in read_runs(con)}
    return {run: runs[run].chatbot_label if run in runs else "external" for run in run_ids}


def _check_dimensions(names: Collection[str], what: str) -> None:
    unknown = [name for name in names if name not in ALLOWED_DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown {what} dimension(s) {unknown}; allowed: {', '.join(ALLOWED_DIMENSIONS)}")


# ----------------------------------------------------------------------------------- loading


def _stored_columns(dimensions: Collection[str], cluster: ClusterBy) -> dict[str, str]:
    """The stored columns (name -> SQL expression) needed to group, filter and cluster."""
    columns = {"correct": "a.correct", "context_tokens": "a.context_tokens"}
    if cluster == "persona":
        columns |= {"run_id": "a.run_id", "persona_id": "a.persona_id"}
    for name in dimensions:
        if name in _DERIVED_DIMENSIONS:
            source, expression = _DERIVED_DIMENSIONS[name]
            columns[source] = expression
        else:
            columns[name] = _STORED_DIMENSIONS[name]
    return columns


def _present_columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    """``a.<column>`` / ``q.<column>`` for every column the store's answers and questions tables have."""
    rows = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_name IN ('answers', 'questions')"
    ).fetchall()
    alias = {"answers": "a", "questions": "q"}
    return {f"{alias[table]}.{column}" for table, column in rows}


def _load_answers(
    con: duckdb.DuckDBPyConnection, run_id: str | None, dimensions: Collection[str], cluster: ClusterBy
) -> pd.DataFrame:
    """One row per answer, joined with its question, holding only the columns the table needs."""
    return select_answers(con, run_id, _stored_columns(dimensions, cluster))


def select_answers(con: duckdb.DuckDBPyConnection, run_id: str | None, columns: dict[str, str]) -> pd.DataFrame:
    """``columns`` (name -> ``a.<column>`` / ``q.<column>``) of every answer joined with its question,
    for one run or all (``run_id=None``); a column an older store lacks reads as its default."""
    present = _present_columns(con)
    select = ", ".join(
        f"{expression if expression in present else _OLD_STORE_DEFAULTS.get(expression, expression)} AS {name}"
        for name, expression in columns.items()
    )
    sql = (
        f"SELECT {select} FROM answers a"
        " LEFT JOIN questions q ON q.run_id = a.run_id AND q.question_id = a.question_id"
    )
    params: list[object] = []
    if run_id is not None:
        sql += " WHERE a.run_id = ?"
        params.append(run_id)
    return con.execute(sql, params).df()


def _add_derived(frame: pd.DataFrame, con: duckdb.DuckDBPyConnection, dimensions: Collection[str]) -> pd.DataFrame:
    if "backend" in dimensions:
        frame["backend"] = frame["run_id"].map(backend_labels(con, frame["run_id"].unique())).astype(object)
    if "sessions_since_reveal_bucket" in dimensions:
        frame["sessions_since_reveal_bucket"] = session_bucket(frame["sessions_since_reveal"])
    if "tokens_since_reveal_bucket" in dimensions:
        frame["tokens_since_reveal_bucket"] = token_bucket(frame["tokens_since_reveal"])
    return frame


def _apply_where(frame: pd.DataFrame, where: Mapping[str, object]) -> pd.DataFrame:
    """Keep rows whose dimension equals the value, or is in it when the value is a collection."""
    mask = np.ones(len(frame), dtype=bool)
    for name, wanted in where.items():
        column = frame[name].astype(object)
        if isinstance(wanted, Collection) and not isinstance(wanted, str | bytes):
            mask &= column.isin(list(wanted)).to_numpy()
        else:
            mask &= (column == wanted).to_numpy()
    return frame[mask]


# ----------------------------------------------------------------------------------- tables


def _group_rng(seed: int, key: tuple[object, ...]) -> np.random.Generator:
    """A generator that depends on the seed and the group's key only, so adding or filtering
    other groups never changes this group's interval. (Python's ``hash`` is salted per process.)"""
    digest = hashlib.blake2b("\x1f".join(map(str, key)).encode(), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")])


def _group_row(
    group: pd.DataFrame, key: tuple[object, ...], n_boot: int, confidence: float, seed: int, cluster: ClusterBy
) -> dict[str, object]:
    correct = group["correct"].to_numpy(dtype=bool)
    rng = _group_rng(seed, key)
    if cluster == "persona":
        personas = (group["run_id"].astype(str) + "\x1f" + group["persona_id"].astype(str)).to_numpy()
        low, high = cluster_bootstrap_ci(correct, personas, n_boot, confidence, rng)
    else:
        low, high = bootstrap_ci(correct, n_boot, confidence, rng)
    return {
        "answers": int(correct.size),
        "accuracy": float(correct.mean()),
        "ci_low": low,
        "ci_high": high,
        "mean_context_tokens": float(group["context_tokens"].mean()),
    }


def _empty_table(by: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=object) for name in (*by, *_RESULT_COLUMNS)})


def accuracy_table(
    con: duckdb.DuckDBPyConnection,
    run_id: str | None = None,
    by: Sequence[str] = ("strategy",),
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    where: dict[str, object] | None = None,
    cluster: ClusterBy = None,
) -> pd.DataFrame:
    """Accuracy per group of answers, with a percentile-bootstrap confidence interval.

    Returns one row per group, sorted by the ``by`` columns, with columns ``*by``, ``answers``
    (number of answer rows), ``accuracy``, ``ci_low``, ``ci_high`` and ``mean_context_tokens``.

    ``by`` and the keys of ``where`` must be in ``ALLOWED_DIMENSIONS``: stored columns of answers
    (run_id, strategy, reader, reader_model, persona_id) and questions (question_type, reveal_mode,
    pref_type, who, source, topic), plus ``backend`` (the run's chatbot backend as ``kind`` or
    ``kind:model``, "external" for loaded runs without one) and the distance buckets
    ``sessions_since_reveal_bucket`` / ``tokens_since_reveal_bucket`` (ordered categoricals, so they
    sort by distance, with "n/a" last). ``where`` values are one value or a collection of accepted
    values, e.g. ``{"strategy": ["agentic", "none"]}``. ``run_id=None`` pools every run in the store.
    Missing values (e.g. ``reader_model`` of an embedding reader) form their own group.

    The interval resamples the group's *answers* with replacement (``n_boot`` times, deterministic
    for a fixed ``seed``): cheap and conventional, but it treats answers as independent. Answers of
    one user are correlated, so pass ``cluster="persona"`` for a cluster bootstrap that resamples
    personas (identified by run and persona id) and pools their answers; its interval is wider and
    more honest when few users are simulated.
    """
    by = list(by)
    where = dict(where or {})
    _check_dimensions(by, "grouping")
    _check_dimensions(where, "filter")
    if cluster not in (None, "persona"):
        raise ValueError(f"cluster must be None (resample answers) or 'persona', got {cluster!r}")
    _check_bootstrap_args(n_boot, confidence)
    if not by:
        raise ValueError("by must name at least one dimension")

    dimensions = {*by, *where}
    frame = _apply_where(_add_derived(_load_answers(con, run_id, dimensions, cluster), con, dimensions), where)
    if frame.empty:
        return _empty_table(by)
    rows = []
    for raw_key, group in frame.groupby(by, sort=True, dropna=False, observed=True):
        key = raw_key if isinstance(raw_key, tuple) else (raw_key,)
        rows.append({**dict(zip(by, key, strict=True)), **_group_row(group, key, n_boot, confidence, seed, cluster)})
    table = pd.DataFrame(rows, columns=[*by, *_RESULT_COLUMNS])
    for name in by:  # keep the distance buckets ordered by distance rather than alphabetically
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            table[name] = pd.Categorical(table[name], dtype=frame[name].dtype)
    return table.sort_values(by, na_position="last", kind="stable", ignore_index=True)


SUMMARY_BREAKDOWNS: dict[str, tuple[str, ...]] = {
    "by_strategy": ("strategy", "reader"),
    "by_type": ("strategy", "question_type"),
    "by_reveal_mode": ("strategy", "reveal_mode"),
    "by_session_distance": ("strategy", "sessions_since_reveal_bucket"),
    "by_token_distance": ("strategy", "tokens_since_reveal_bucket"),
    "by_backend": ("backend", "strategy"),
}


def summary_tables(
    con: duckdb.DuckDBPyConnection, run_id: str | None = None, **kwargs: object
) -> dict[str, pd.DataFrame]:
    """The standard breakdowns of a benchmark run, one ``accuracy_table`` each (see
    ``SUMMARY_BREAKDOWNS``). ``kwargs`` (n_boot, confidence, seed, where, cluster) go to every table,
    so all of them share one bootstrap setting and one filter."""
    if "by" in kwargs:
        raise TypeError("summary_tables chooses the groupings itself; call accuracy_table for a custom `by`")
    return {
        name: accuracy_table(con, run_id, by, **kwargs)  # type: ignore[arg-type]
        for name, by in SUMMARY_BREAKDOWNS.items()
    }
