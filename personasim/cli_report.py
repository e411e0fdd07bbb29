"""``personasim report``: one self-contained HTML page and a Markdown summary of a run.

The work is ``personasim.analysis.report.write_run_report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from personasim.terminal import console, fail


def report_command(
    db: Annotated[Path, typer.Option(help="DuckDB store holding the run.")] = Path("personasim.duckdb"),
    out: Annotated[Path, typer.Option(help="Folder to write report.html, report.md and figures/ into.")] = Path(
        "report"
    ),
    run_id: Annotated[str | None, typer.Option("--run", help="Run to report (default: the store's only run).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
) -> None:
    """Accuracy against token cost, paired comparisons, the no-memory floor, memory fidelity over
    time, drift and leakage, with plots embedded: a page that opens in a browser with no server."""
    from personasim.analysis.report import write_run_report
    from personasim.sim.store import StoreError

    try:
        written = write_run_report(db, out, run_id, bootstrap)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    console().print(f"wrote {written[0]} (open it in a browser), {written[1]} and {len(written) - 2} figures")
