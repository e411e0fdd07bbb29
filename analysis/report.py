"""One self-contained HTML page (and a Markdown summary) about a run, from the store alone.

The page is what a researcher opens first: which memory wins and at what token cost, whether the
difference is more than noise, how each memory's picture of the user holds up over time, how fast
the simulated users change, and what a reader with no memory scores. Every number comes from the
same functions a notebook calls (``analysis/metrics.py``, ``drift.py``, ``fidelity.py``,
``compare.py``, ``audit.py``); plots are PNGs embedded as data URIs, so the file opens in a
browser with no server and can be mailed as it is.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from personasim.analysis import plots
from personasim.sim.store import open_store
from personasim.sim.store_read import count_rows
from personasim.sim.store_runs import read_run, resolve_finished_run

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1080px;margin:2em auto;padding:0 1em;
color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}th,td{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f4f4f6}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}.note{color:#555;font-size:.9em}.verdict{font-weight:600}
pre{background:#f7f7f9;padding:1em;overflow-x:auto;font-size:.8em}.meta td{text-align:left}
"""

# Marks the page as rendered (every figure decoded), so a headless browser test can check it.
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.from(document.querySelectorAll('img.figure'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-figures-rendered', String(ok));
  document.body.setAttribute('data-tables', String(document.querySelectorAll('table.data').length));
});
"""


class Section(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    title: str
    text: str = ""
    tables: list[tuple[str, pd.DataFrame]] = Field(default_factory=list)
    figures: list[tuple[str, bytes]] = Field(default_factory=list)


class Report(BaseModel):
    run_id: str
    html: str
    markdown: str
    figures: dict[str, bytes]


def build_report(con: duckdb.DuckDBPyConnection, run_id: str, n_boot: int = 1000) -> Report:
    """Every section that the run's data supports; a section without data says what is missing."""
    meta = _run_meta(con, run_id)
    audit = _try_audit(con, run_id)  # once: the accuracy plot's floors and the audit section
    sections = [
        _accuracy_section(con, run_id, n_boot, audit),
        _distance_section(con, run_id, n_boot),
        _comparison_section(con, run_id),
        _audit_section(audit),
        _fidelity_section(con, run_id),
        _drift_section(con, run_id),
        _privacy_section(con, run_id),
    ]
    figures = {name: png for s in sections for name, png in s.figures}
    return Report(run_id=run_id, html=_html(meta, sections), markdown=_markdown(meta, sections), figures=figures)


def write_report(con: duckdb.DuckDBPyConnection, run_id: str, out_dir: str | Path, n_boot: int = 1000) -> list[Path]:
    """``report.html`` (self-contained), ``report.md`` and ``figures/*.png`` under ``out_dir``."""
    report = build_report(con, run_id, n_boot)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    written = [out / "report.html", out / "report.md"]
    written[0].write_text(report.html, encoding="utf-8")
    written[1].write_text(report.markdown, encoding="utf-8")
    for name, png in report.figures.items():
        path = out / "figures" / f"{name}.png"
        path.write_bytes(png)
        written.append(path)
    return written


def write_run_report(db: str | Path, out: str | Path, run_id: str | None = None, n_boot: int = 1000) -> list[Path]:
    """``personasim report`` as a function: ``write_report`` for a run of the store at ``db`` (the
    store's only run unless ``run_id`` names one), opened read-only. Returns the files written,
    ``report.html`` and ``report.md`` first."""
    out = Path(out)
    with open_store(db) as store:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file; give a folder")
        return write_report(store.con, resolve_finished_run(store, run_id), out, n_boot)


# -- sections ---------------------------------------------------------------------------------
def _answers(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    return count_rows(con, "answers", run_id)


def _chance(con: duckdb.DuckDBPyConnection, run_id: str) -> float | None:
    (value,) = con.execute("SELECT avg(1.0 / len(options)) FROM questions WHERE run_id = ?", [run_id]).fetchall()[0]
    return float(value) if value is not None else None


def _main_reader(con: duckdb.DuckDBPyConnection, run_id: str) -> str | None:
    rows = con.execute("SELECT reader, count(*) AS n FROM answers WHERE run_id = ? GROUP BY reader "
                       "ORDER BY n DESC, reader LIMIT 1", [run_id]).fetchall()
    return rows[0][0] if rows else None


def _accuracy_section(con: duckdb.DuckDBPyConnection, run_id: str, n_boot: int, audit: Any) -> Section:
    from personasim.analysis.metrics import accuracy_table

    section = Section(title="Accuracy and token cost")
    if not _answers(con, run_id):
        section.text = "The run has no answers yet: run `personasim eval --db ...` first."
        return section
    reader = _main_reader(con, run_id)
    where = {"reader": reader}
    by_strategy = accuracy_table(con, run_id, by=["strategy"], n_boot=n_boot, where=where)
    by_type = accuracy_table(con, run_id, by=["strategy", "question_type"], n_boot=n_boot, where=where)
    chance = _chance(con, run_id)
    best = by_strategy.sort_values("accuracy", ascending=False).iloc[0]
    section.text = (
        f"Reader `{reader}`. Chance is {chance:.1%}. The best memory strategy is **{best.strategy}** at "
        f"{best.accuracy:.1%} (95% CI {best.ci_low:.1%}–{best.ci_high:.1%}) with "
        f"{best.mean_context_tokens:,.0f} context tokens per answer."
    )
    section.tables.append(("Accuracy by strategy (95% bootstrap CI)", _percent(by_strategy)))
    pivot = by_type.pivot(index="question_type", columns="strategy", values="accuracy")
    pivot.columns.name = None
    section.tables.append(("Accuracy by question type × strategy", _percent(pivot.reset_index())))
    section.figures.append(("accuracy_vs_tokens", plots.png_bytes(
        plots.accuracy_vs_tokens(by_strategy, chance, dict(audit.blind_accuracy) if audit is not None else {}))))
    section.figures.append(("accuracy_by_type", plots.png_bytes(plots.accuracy_by_type(by_type, chance))))
    return section


def _distance_section(con: duckdb.DuckDBPyConnection, run_id: str, n_boot: int) -> Section:
    """The reveal-to-question distances beside PersonaMem-v2's, and accuracy against them: a memory
    is only tested on what it must carry as far as the questions sit from their reveals."""
    from personasim.analysis.distance import (
        PERSONAMEM_V2_DISTANCES,
        accuracy_by_distance,
        distance_distribution,
        distance_vs_personamem_v2,
    )

    section = Section(title="Distance from the reveal to the question")
    if not count_rows(con, "questions", run_id):
        section.text = "The run has no questions, so no distances."
        return section
    distribution = distance_distribution(con, run_id)
    overall = distribution.iloc[-1]
    reference = "; ".join(f"{window} {ref['median']:,} (p25 {ref['p25']:,}, p75 {ref['p75']:,})"
                          for window, ref in PERSONAMEM_V2_DISTANCES.items())
    if overall["n"]:
        section.text = (f"Conversation tokens between the last reveal of a preference and the question about it: "
                        f"median **{overall['median']:,.0f}** (p25 {overall['p25']:,.0f}, p75 {overall['p75']:,.0f}) "
                        f"over {overall['n']:,} questions with a reveal. PersonaMem-v2's medians: {reference}.")
    else:
        section.text = f"No question of the run has a reveal before it. PersonaMem-v2's medians: {reference}."
    section.tables.append(("Distance (tokens) by question type", _tokens(distribution)))
    section.tables.append(("Distance quantiles vs PersonaMem-v2", _tokens(distance_vs_personamem_v2(distribution))))
    if not _answers(con, run_id):
        return section
    by_distance = accuracy_by_distance(con, run_id, n_boot=n_boot, where={"reader": _main_reader(con, run_id)})
    section.tables.append(("Accuracy by distance bucket × strategy (95% bootstrap CI)", _percent(by_distance)))
    section.figures.append(("accuracy_vs_distance", plots.png_bytes(
        plots.accuracy_vs_distance(by_distance, _chance(con, run_id)))))
    return section


def _comparison_section(con: duckdb.DuckDBPyConnection, run_id: str) -> Section:
    from personasim.analysis.compare import compare
    from personasim.analysis.metrics import accuracy_table

    section = Section(title="Is the difference real? (paired tests)")
    if not _answers(con, run_id):
        section.text = "No answers to compare."
        return section
    reader = _main_reader(con, run_id)
    ranked = accuracy_table(con, run_id, by=["strategy"], n_boot=10, where={"reader": reader})
    ranked = ranked.sort_values("accuracy", ascending=False)["strategy"].tolist()
    if len(ranked) < 2:
        section.text = "Only one strategy was scored."
        return section
    rows = [compare(con, run_id, ranked[0], other, reader=reader) for other in ranked[1:]]
    table = pd.concat(rows, ignore_index=True)
    section.text = ("The best strategy against each other one, on the same questions: paired bootstrap interval "
                    "of the difference and an exact McNemar test on the discordant pairs.")
    columns = ["a", "b", "n_pairs", "acc_a", "acc_b", "diff", "ci_low", "ci_high", "p_value", "significant", "verdict"]
    section.tables.append(("Best strategy vs the others", _percent(table[columns], skip=("p_value",))))
    return section


def _try_audit(con: duckdb.DuckDBPyConnection, run_id: str) -> Any:
    """The run's artifact audit, with the run's own embedder (as ``personasim eval`` and
    ``personasim audit`` compute it), or None when it has no questions."""
    try:
        from personasim.analysis.audit import audit
    except ImportError:
        return None
    if not count_rows(con, "questions", run_id):
        return None
    return audit(con, run_id)


def _audit_section(report: Any) -> Section:
    section = Section(title="No-memory floor (artifact audit)")
    if report is None:
        section.text = "The run has no questions to audit."
        return section
    from personasim.analysis.audit import audit_table

    section.text = ("Readers that never see memory or history: read every accuracy above against these. "
                    + (" ".join(report.flags) if report.flags else "No type exceeds chance by more than the "
                       "audit's margins."))
    section.tables.append(("Audit by question type", _percent(audit_table(report))))
    return section


def _fidelity_section(con: duckdb.DuckDBPyConnection, run_id: str) -> Section:
    from personasim.analysis.fidelity import fidelity_and_latency

    section = Section(title="Memory fidelity over time")
    if not count_rows(con, "memory_snapshots", run_id):
        section.text = "The run kept no memory snapshots."
        return section
    summary, latency = fidelity_and_latency(con, run_id)
    section.text = ("Each strategy's memory after every session, matched (MiniLM, threshold documented in "
                    "docs/analysis.md) against what the user holds and has revealed at that time.")
    last = summary.sort_values("session_index").groupby("strategy").tail(1)
    section.tables.append(("At the last session", _round(last.reset_index(drop=True))))
    if not latency.empty:
        learned = latency.groupby("strategy")["latency_sessions"].agg(["count", "mean", "median"]).reset_index()
        learned.columns = ["strategy", "preferences learned", "mean latency (sessions)", "median latency"]
        section.tables.append(("Latency to learn (sessions from first reveal to memory)", _round(learned)))
    section.figures.append(("fidelity_over_time", plots.png_bytes(plots.fidelity_over_time(summary))))
    return section


def _drift_section(con: duckdb.DuckDBPyConnection, run_id: str) -> Section:
    from personasim.analysis.drift import (
        drift_by_cause,
        js_divergence,
        life_event_share,
        preference_half_life,
        turnover_by_month,
    )

    section = Section(title="How the simulated users change")
    if not count_rows(con, "sessions", run_id):
        section.text = "The run has no sessions."
        return section
    turnover, divergence = turnover_by_month(con, run_id), js_divergence(con, run_id)
    half_life = preference_half_life(con, run_id)
    overall = half_life[half_life["domain"] == "all"].iloc[0]
    life = life_event_share(con, run_id).iloc[0]
    section.text = (
        f"Mean monthly turnover {turnover['turnover'].mean():.1%} of held preferences; preference half-life "
        f"{overall.half_life_days:,.0f} simulated days; life events explain {life.event_share:.0%} of drift "
        f"events and {life.preference_share:.0%} of changed preferences."
    )
    section.tables.append(("Drift events by model and cause", _round(drift_by_cause(con, run_id))))
    section.tables.append(("Preference half-life by domain", _round(half_life)))
    section.figures.append(("drift_curves", plots.png_bytes(plots.drift_curves(turnover, divergence))))
    return section


def _privacy_section(con: duckdb.DuckDBPyConnection, run_id: str) -> Section:
    from personasim.analysis.fidelity import privacy_leakage

    section = Section(title="Privacy leakage")
    table = privacy_leakage(con, run_id)
    section.text = "Sensitive (fake) values repeated verbatim in memories, answers and the chatbot's messages."
    section.tables.append(("Leakage by source and strategy", _round(table)))
    return section


# -- rendering ---------------------------------------------------------------------------------
def _run_meta(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    run = read_run(con, run_id)
    counts = {table: count_rows(con, table, run_id)
              for table in ("sessions", "turns", "drift_events", "questions", "answers")}
    config = run.spec.config.model_dump_json(indent=2, exclude={"engine"})
    return {"run_id": run_id, "seed": run.seed, "personasim_version": run.personasim_version, "users": run.users,
            "sessions_per_user": run.sessions_per_user, "status": run.status, **counts, "config": config}


def _round(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.round(3)


def _tokens(frame: pd.DataFrame) -> pd.DataFrame:
    """Token counts as whole numbers (a quantile may interpolate), missing ones blank."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].round(0).astype("Int64")
    return out


def _percent(frame: pd.DataFrame, skip: tuple[str, ...] = ()) -> pd.DataFrame:
    """Shares in [0, 1] as percentages with one decimal; counts and tokens as they are."""
    out = frame.copy()
    for column in out.columns:
        name = str(column)
        if "token" in name and pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].round(0).astype("Int64")
            continue
        if name in skip or "ratio" in name or not pd.api.types.is_float_dtype(out[column]):
            continue
        values = out[column].dropna()
        if len(values) and values.between(-1, 1).all():
            out[column] = out[column].map(lambda v: "" if pd.isna(v) else f"{v:.1%}")
    return out.round(3)


def _html(meta: dict[str, Any], sections: list[Section]) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>personasim report: "
             f"{esc(meta['run_id'])}</title><style>{CSS}</style><script>{SCRIPT}</script></head><body>",
             f"<h1>personasim report</h1><p class='note'>run <code>{esc(meta['run_id'])}</code>, "
             f"personasim {esc(str(meta['personasim_version']))}, status {esc(str(meta['status']))}</p>"]
    facts = [("users", meta["users"]), ("sessions per user", meta["sessions_per_user"]), ("seed", meta["seed"]),
             ("sessions", meta["sessions"]), ("turns", meta["turns"]), ("drift events", meta["drift_events"]),
             ("questions", meta["questions"]), ("answers", meta["answers"])]
    parts.append("<table class='meta'>" + "".join(f"<tr><th>{esc(k)}</th><td>{v:,}</td></tr>" for k, v in facts)
                 + "</table>")
    for section in sections:
        parts.append(f"<h2>{esc(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{_inline(section.text)}</p>")
        for name, png in section.figures:
            data = base64.b64encode(png).decode()
            parts.append(f"<p><img class='figure' alt='{esc(name)}' src='data:image/png;base64,{data}'></p>")
        for caption, table in section.tables:
            parts.append(f"<h3>{esc(caption)}</h3>")
            parts.append(table.to_html(index=False, classes="data", border=0, na_rep="", escape=True))
    parts.append(f"<h2>Run configuration</h2><pre>{esc(meta['config'])}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _inline(text: str) -> str:
    """The little Markdown the section texts use (**bold**, `code`), escaped first."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _markdown_table(frame: pd.DataFrame, max_rows: int = 40) -> str:
    cell: Callable[[Any], str] = lambda v: "" if pd.isna(v) else str(v).replace("|", "\\|")  # noqa: E731
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.head(max_rows).itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _markdown(meta: dict[str, Any], sections: list[Section]) -> str:
    lines = [f"# personasim report: {meta['run_id']}", "",
             f"{meta['users']} users × {meta['sessions_per_user']} sessions (seed {meta['seed']}), "
             f"{meta['questions']:,} questions, {meta['answers']:,} answers, status {meta['status']}.", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        for name, _ in section.figures:
            lines += [f"![{name}](figures/{name}.png)", ""]
        for caption, table in section.tables:
            lines += [f"**{caption}**", "", _markdown_table(table), ""]
    return "\n".join(lines)
