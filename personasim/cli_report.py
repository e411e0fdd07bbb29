"""``personasim report``: one self-contained HTML page and a Markdown summary of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


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
    from personasim.cli import _fail
    from personasim.sim.store import StoreError

    try:
        written = write_run_report(db, out, run_id, bootstrap)
    except (StoreError, ValueError) as exc:
        _fail(str(exc))
        return
    Console().print(f"wrote {written[0]} (open it in a browser), {written[1]} and {len(written) - 2} figures")


def write_run_report(db: Path, out: Path, run_id: str | None = None, n_boot: int = 1000) -> list[Path]:
    from personasim.analysis.report import write_report
    from personasim.evaluation import resolve_run
    from personasim.sim.store import StoreError, TrajectoryStore

    if not Path(db).exists():
        raise StoreError(f"store {db} does not exist; run `personasim run --db {db}` first")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    with TrajectoryStore(db, read_only=True) as store:
        return write_report(store.con, resolve_run(store, run_id), out, n_boot)
