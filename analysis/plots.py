"""The report's pictures, each drawn from a metric's DataFrame (so a notebook can redraw them).

Every function takes the DataFrame that the matching metric returns and gives back a matplotlib
``Figure``; ``png_bytes`` renders one for embedding. The Agg backend is forced: reports are made
on servers with no display.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

COLOURS = plt.get_cmap("tab10")


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _colour(strategies: list[str]) -> dict[str, tuple]:
    return {s: COLOURS(i % 10) for i, s in enumerate(strategies)}


def accuracy_vs_tokens(by_strategy: pd.DataFrame, chance: float | None = None,
                       blind: dict[str, float] | None = None) -> Figure:
    """PersonaMem-v2's picture: accuracy against the context each strategy spends, with 95% intervals.
    ``by_strategy``: ``accuracy_table(con, run, by=["strategy"])``."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = _colour(list(by_strategy["strategy"]))
    for row in by_strategy.itertuples():
        x = max(float(row.mean_context_tokens), 1.0)
        ax.errorbar(x, row.accuracy, yerr=[[row.accuracy - row.ci_low], [row.ci_high - row.accuracy]], fmt="o",
                    color=colours[row.strategy], capsize=3, label=row.strategy)
        ax.annotate(row.strategy, (x, row.accuracy), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance {chance:.0%}")
    for i, (name, value) in enumerate(sorted((blind or {}).items())):
        ax.axhline(value, color=COLOURS(7 + i % 3), linestyle="--", linewidth=0.8, label=f"blind: {name} {value:.0%}")
    ax.set_xscale("log")
    ax.set_xlabel("mean context tokens per answer (log; none plotted at 1)")
    ax.set_ylabel("accuracy")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title("Accuracy vs context tokens, by memory strategy")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return fig


def accuracy_by_type(by_type: pd.DataFrame, chance: float | None = None) -> Figure:
    """Grouped bars: question type × strategy, with 95% intervals.
    ``by_type``: ``accuracy_table(con, run, by=["strategy", "question_type"])``."""
    types = sorted(by_type["question_type"].unique())
    strategies = list(dict.fromkeys(by_type["strategy"]))
    width = 0.8 / max(1, len(strategies))
    fig, ax = plt.subplots(figsize=(max(6.4, 1.1 * len(types)), 4.2))
    colours = _colour(strategies)
    for i, strategy in enumerate(strategies):
        part = by_type[by_type["strategy"] == strategy].set_index("question_type").reindex(types)
        x = np.arange(len(types)) + (i - (len(strategies) - 1) / 2) * width
        err = np.vstack([part["accuracy"] - part["ci_low"], part["ci_high"] - part["accuracy"]]).astype(float)
        ax.bar(x, part["accuracy"].astype(float), width, yerr=err, capsize=2, color=colours[strategy], label=strategy)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance {chance:.0%}")
    ax.set_xticks(np.arange(len(types)), [t.replace("_", " ") for t in types], rotation=25, ha="right")
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title("Accuracy by question type")
    ax.legend(fontsize=7, ncols=min(4, len(strategies) + 1))
    ax.grid(axis="y", alpha=0.3)
    return fig


def accuracy_vs_distance(by_distance: pd.DataFrame, chance: float | None = None) -> Figure:
    """Accuracy against the distance from the reveal to the question (token buckets), one line per
    strategy, with 95% interval bars; each strategy's points are nudged sideways so bars do not hide
    each other. ``by_distance``: ``distance.accuracy_by_distance(con, run)``. The buckets are its
    ordered categorical's order (only those with answers are drawn), so the axis reads near to far."""
    column = "tokens_since_reveal_bucket"
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    buckets = by_distance[column]
    if isinstance(buckets.dtype, pd.CategoricalDtype):
        present = set(buckets.astype(str))
        labels = [str(c) for c in buckets.cat.categories if str(c) in present]
    else:
        labels = list(dict.fromkeys(buckets.astype(str)))
    position = {label: i for i, label in enumerate(labels)}
    strategies = list(dict.fromkeys(by_distance["strategy"]))
    colours = _colour(strategies)
    step = 0.3 / max(1, len(strategies))
    for i, strategy in enumerate(strategies):
        part = by_distance[by_distance["strategy"] == strategy]
        x = np.array([position[str(b)] for b in part[column]], dtype=float) + (i - (len(strategies) - 1) / 2) * step
        accuracy = part["accuracy"].to_numpy(dtype=float)
        err = np.vstack([accuracy - part["ci_low"].to_numpy(dtype=float),
                         part["ci_high"].to_numpy(dtype=float) - accuracy])
        ax.errorbar(x, accuracy, yerr=err, fmt="o-", capsize=3, markersize=4, linewidth=1,
                    color=colours[strategy], label=strategy)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance {chance:.0%}")
    if not labels:
        ax.text(0.5, 0.5, "no answered question with a reveal", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(np.arange(len(labels)), labels)
    ax.set_xlim(-0.5, max(1, len(labels)) - 0.5)  # a bucket's strategies stay side by side, not at the edges
    ax.set_xlabel("conversation tokens from the last reveal to the question")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title("Accuracy vs distance from the reveal, by memory strategy (95% intervals)")
    if strategies or chance is not None:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return fig


def fidelity_over_time(summary: pd.DataFrame) -> Figure:
    """Recall, precision, staleness and tokens of each strategy's memory, session by session.
    ``summary``: ``fidelity_summary(con, run)``."""
    panels = [("recall", "recall of held preferences"), ("precision", "precision"),
              ("staleness", "staleness (replaced preferences held)"), ("tokens", "memory tokens")]
    fig, axes = plt.subplots(2, 2, figsize=(9.6, 6.2), sharex=True)
    strategies = list(dict.fromkeys(summary["strategy"]))
    colours = _colour(strategies)
    for ax, (column, title) in zip(axes.flat, panels, strict=True):
        for strategy in strategies:
            part = summary[summary["strategy"] == strategy].sort_values("session_index")
            ax.plot(part["session_index"], part[column], marker="o", markersize=3, color=colours[strategy],
                    label=strategy)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if column != "tokens":
            ax.set_ylim(-0.02, 1.02)
    for ax in axes[1]:
        ax.set_xlabel("session")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Memory fidelity over time, scored against the timeline")
    return fig


def drift_curves(turnover: pd.DataFrame, divergence: pd.DataFrame) -> Figure:
    """Turnover per simulated month, and the Jensen–Shannon divergence of each user's preferences
    over Δ. ``turnover``: ``turnover_by_month``; ``divergence``: ``js_divergence`` (population)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    if not turnover.empty:
        rate = turnover["turnover"] if "turnover" in turnover else turnover["events"] / turnover["users_active"]
        left.bar(turnover["month"], rate, color=COLOURS(0))
        left.set_xticks(list(turnover["month"]))
    left.set_xlabel("simulated month")
    left.set_ylabel("changed preferences / held")
    left.set_title("Preference turnover per month")
    left.grid(axis="y", alpha=0.3)
    if not divergence.empty:
        days = (pd.to_datetime(divergence["t"]) - pd.to_datetime(divergence["t"]).min()).dt.days
        right.plot(days, divergence["mean_js"], marker="o", color=COLOURS(1), label="mean")
        right.plot(days, divergence["median_js"], marker=".", linestyle="--", color=COLOURS(2), label="median")
        right.legend(fontsize=7)
    right.set_xlabel("days since the first session")
    right.set_ylabel("JS divergence (t, t+Δ)")
    right.set_title("How far users move in Δ")
    right.grid(alpha=0.3)
    fig.tight_layout()
    return fig
