"""How far a question sits from the reveal it depends on, and how accuracy falls with that distance.

PersonaMem-v2 reports, for each of its two history windows, the distance in tokens from the
snippet that reveals a preference to the question about it. That distance is what makes a
long-context benchmark long: a memory that only keeps the last few thousand tokens passes a
benchmark whose reveals sit just before the question. So a simulated run's distances are a result
to report beside the seed's, not an accident of the schedule, and accuracy is read against them.

The distance of a question is its stored ``tokens_since_reveal``: conversation tokens of the user's
sessions strictly after the last reveal of the preference and strictly before the question (see
``analysis/questions.py``); -1 when nothing was revealed (abstention), and such questions are
left out of the quantiles (counted in ``not_revealed``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import duckdb
import numpy as np
import pandas as pd

from personasim.analysis.metrics import NOT_REVEALED, ClusterBy, accuracy_table
from personasim.sim.store_read import read_frame

__all__ = [
    "ALL_TYPES",
    "DISTANCE_QUANTILES",
    "PERSONAMEM_V2_DISTANCES",
    "accuracy_by_distance",
    "distance_distribution",
    "distance_vs_personamem_v2",
]

#: PersonaMem-v2's reveal-to-question distances in tokens (arXiv 2512.06688), per history window.
PERSONAMEM_V2_DISTANCES: dict[str, dict[str, int]] = {
    "32k": {"p25": 13_300, "median": 18_900, "p75": 24_800},
    "128k": {"p25": 38_500, "median": 64_000, "p75": 89_400},
}

#: The quantiles reported, by column name. p95 has no PersonaMem-v2 counterpart; it shows the tail.
DISTANCE_QUANTILES: dict[str, float] = {"p25": 0.25, "median": 0.5, "p75": 0.75, "p95": 0.95}

#: The ``question_type`` of the row pooling every type.
ALL_TYPES = "all"

_DISTRIBUTION_COLUMNS = ("question_type", "n", "not_revealed", *DISTANCE_QUANTILES)


def _distances(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """``question_type`` and ``tokens_since_reveal`` of every question of the run; a store written
    before the column existed (schema < 5) reads as never revealed, as its migration would set."""
    has_column = con.execute(
        "SELECT count(*) FROM information_schema.columns"
        " WHERE table_name = 'questions' AND column_name = 'tokens_since_reveal'"
    ).fetchall()[0][0]
    if has_column:
        return read_frame(con, "questions", run_id, ["question_type", "tokens_since_reveal"])
    frame = read_frame(con, "questions", run_id, ["question_type"])
    frame["tokens_since_reveal"] = -1
    return frame


def _row(question_type: str, distances: pd.Series) -> dict[str, object]:
    values = pd.to_numeric(distances, errors="coerce").fillna(-1).to_numpy(dtype=np.int64)
    revealed = values[values >= 0]
    row: dict[str, object] = {
        "question_type": question_type, "n": int(revealed.size), "not_revealed": int(values.size - revealed.size),
    }
    quantiles = (
        np.quantile(revealed, list(DISTANCE_QUANTILES.values())) if revealed.size
        else [np.nan] * len(DISTANCE_QUANTILES)
    )
    row |= {name: float(q) for name, q in zip(DISTANCE_QUANTILES, quantiles, strict=True)}
    return row


def distance_distribution(
    con: duckdb.DuckDBPyConnection, run_id: str, question_types: Collection[str] | None = None
) -> pd.DataFrame:
    """Quantiles of the reveal-to-question distance (tokens), per question type and over all of them.

    One row per question type present in the run (sorted), then one row with ``question_type ==
    "all"``. Columns: ``question_type``, ``n`` (questions with a reveal, ``tokens_since_reveal >=
    0``), ``not_revealed`` (questions without one: left out of the quantiles) and ``p25``,
    ``median``, ``p75``, ``p95`` of ``tokens_since_reveal`` over the ``n`` questions (numpy's
    default linear interpolation; NaN when ``n == 0``, e.g. for abstention). ``question_types``
    keeps only those types, the "all" row included.
    """
    frame = _distances(con, run_id)
    if question_types is not None:
        frame = frame[frame["question_type"].isin(list(question_types))]
    rows = [_row(str(qtype), group["tokens_since_reveal"]) for qtype, group in frame.groupby("question_type")]
    rows.append(_row(ALL_TYPES, frame["tokens_since_reveal"]))
    return pd.DataFrame(rows, columns=list(_DISTRIBUTION_COLUMNS))


def distance_vs_personamem_v2(distribution: pd.DataFrame) -> pd.DataFrame:
    """The run's pooled quantiles beside PersonaMem-v2's for both windows, one row per statistic.

    ``distribution`` is what ``distance_distribution`` returns (its "all" row is read). Columns:
    ``statistic`` (p25, median, p75, p95), ``run``, ``personamem_v2_32k``, ``personamem_v2_128k``
    (NaN for p95, which the paper does not report)."""
    pooled = distribution[distribution["question_type"] == ALL_TYPES]
    if pooled.empty:
        raise ValueError(f"the distribution has no {ALL_TYPES!r} row; pass distance_distribution's result")
    overall = pooled.iloc[0]
    rows = [
        {
            "statistic": name,
            "run": float(overall[name]),
            **{f"personamem_v2_{window}": float(ref.get(name, np.nan)) for window, ref in
               PERSONAMEM_V2_DISTANCES.items()},
        }
        for name in DISTANCE_QUANTILES
    ]
    return pd.DataFrame(rows)


def accuracy_by_distance(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    where: Mapping[str, object] | None = None,
    cluster: ClusterBy = None,
    include_not_revealed: bool = False,
) -> pd.DataFrame:
    """Accuracy per memory strategy and token-distance bucket, with a percentile-bootstrap interval.

    Columns: ``strategy``, ``tokens_since_reveal_bucket`` (``metrics.TOKEN_BUCKET_LABELS``, an
    ordered categorical, so rows sort by distance), ``n`` (answers), ``accuracy``, ``ci_low``,
    ``ci_high`` and ``mean_context_tokens``. Only buckets with answers appear.

    The interval is ``metrics.accuracy_table``'s (``n_boot`` resamples of the group's answers, or of
    its personas with ``cluster="persona"``; seeded per group), not Wilson's: the same interval as
    every other accuracy of a run, so a bucket's accuracy can be set beside the overall one.
    ``where`` filters as in ``accuracy_table`` (the report passes its main reader, since answers of
    different readers would otherwise be pooled). Questions never revealed ("n/a" bucket) have no
    distance and are left out unless ``include_not_revealed``.
    """
    table = accuracy_table(
        con, run_id, by=["strategy", "tokens_since_reveal_bucket"], n_boot=n_boot, confidence=confidence,
        seed=seed, where=dict(where or {}), cluster=cluster,
    )
    table = table.rename(columns={"answers": "n"})
    if not include_not_revealed and not table.empty:
        table = table[table["tokens_since_reveal_bucket"].astype(str) != NOT_REVEALED].reset_index(drop=True)
    return table
