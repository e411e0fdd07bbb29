"""``personasim audit``: can a reader without memory score well on this benchmark?

Prints, per question type and overall, how often the correct option is the longest or shortest
and how well blind readers (no memory, no history) score, next to chance, then the findings that
exceed chance by the flag margins. Works on a stored run or on PersonaMem-v2's own files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from personasim.analysis.audit import AuditReport

#: Width of the printed table when the output is not a terminal (a file, a pipe): every figure fits.
TABLE_WIDTH = 120


def audit_command(
    db: Annotated[
        Path | None,
        typer.Option(help="DuckDB store holding the run (default personasim.duckdb; with --personamem-v2, "
                     "where the files are loaded: a temporary store when omitted)."),
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Run to audit (default: the store's only run).")] = None,
    personamem_v2: Annotated[
        Path | None,
        typer.Option("--personamem-v2", help="Audit PersonaMem-v2's files in this folder instead of a stored run."),
    ] = None,
    window: Annotated[str, typer.Option(help="PersonaMem-v2 chat-history window: 32k or 128k.")] = "32k",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Audit a benchmark for artifacts: the correct option's length, and the accuracy of blind readers
    (longest option, query only, demographic profile only) that never see memory or history."""
    from personasim.cli import _fail
    from personasim.sim.store import StoreError

    try:
        if personamem_v2 is not None:
            report = audit_personamem_v2(personamem_v2, db, window)
        else:
            report = audit_store(db or Path("personasim.duckdb"), run_id)
    except (StoreError, ValueError) as exc:
        _fail(str(exc))
        return
    print_audit(report)
    if json_out is not None:
        json_out.write_text(report.model_dump_json(indent=2))


def audit_store(db: Path, run_id: str | None = None) -> AuditReport:
    """Audit a run in an existing store (opened read-only: the audit writes nothing)."""
    from personasim.analysis.audit import audit
    from personasim.evaluation import resolve_run
    from personasim.sim.store import StoreError, TrajectoryStore

    if not Path(db).exists():
        raise StoreError(f"store {db} does not exist; run `personasim run --db {db}` first")
    with TrajectoryStore(db, read_only=True) as store:
        return audit(store.con, resolve_run(store, run_id))


def audit_personamem_v2(folder: Path, db: Path | None = None, window: str = "32k") -> AuditReport:
    """Load a PersonaMem-v2 folder into ``db`` (once, as ``personasim eval --personamem-v2`` does) and audit
    that run. Without ``db`` the files go into a temporary store that is removed afterwards."""
    from personasim.analysis.audit import audit
    from personasim.analysis.pmv2_load import load_personamem_v2, personamem_v2_run_id
    from personasim.api import check_db_path
    from personasim.sim.store import StoreError, TrajectoryStore

    folder = Path(folder)
    if not folder.is_dir():
        raise StoreError(f"--personamem-v2 {folder} is not a folder; pass the dataset root (holding benchmark.csv)")
    if db is None:
        with tempfile.TemporaryDirectory(prefix="personasim-audit-") as tmp:
            return audit_personamem_v2(folder, Path(tmp) / "pmv2.duckdb", window)
    check_db_path(Path(db))
    with TrajectoryStore(db) as store:
        run_id = personamem_v2_run_id(folder, window)
        if not store.has_run(run_id):  # the audit needs no memory: load without building snapshots
            load_personamem_v2(folder, store, window=window, strategies=[])
        return audit(store.con, run_id)


def _cell(value: float | None, chance: float, margin: float) -> str:
    if value is None:
        return "-"
    text = f"{value:.1%}"
    return f"[bold red]{text}[/]" if value > chance + margin else text


def print_audit(report: AuditReport) -> None:
    """The audit table (flagged cells in red) and the findings below it."""
    from personasim.analysis.audit import BLIND_FLAG_MARGIN, BLIND_READERS, LENGTH_FLAG_MARGIN

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:  # piped or captured: no terminal to fit
        console = Console(width=TABLE_WIDTH)
    title = f"artifact audit of run {report.run_id}: {report.questions} questions, chance {report.chance:.1%}"
    table = Table(title=title, caption="blind readers never see memory or history; red: above the flag margin")
    table.add_column("question type", no_wrap=True)
    for column in ("n", "chance", "correct\nlongest", "correct\nshortest", "length\nratio",
                   *(f"blind\n{r}" for r in BLIND_READERS)):
        table.add_column(column, justify="right")
    groups = [*report.by_type.items(), ("all", report)]
    for name, f in groups:
        blind = f.blind_accuracy.model_dump()
        table.add_row(
            f"[bold]{name}[/]" if name == "all" else name, str(f.questions), f"{f.chance:.1%}",
            _cell(f.correct_longest_share, f.chance, LENGTH_FLAG_MARGIN),
            _cell(f.correct_shortest_share, f.chance, LENGTH_FLAG_MARGIN),
            "-" if f.length_ratio is None else f"{f.length_ratio:.2f}",
            *(_cell(blind[r], f.chance, BLIND_FLAG_MARGIN) for r in BLIND_READERS),
            end_section=name == groups[-2][0] if len(groups) > 1 else False,
        )
    console.print(table)
    if report.questions_without_profile:
        console.print(f"{report.questions_without_profile} questions have no demographic profile: "
                      "persona_prior answers them at chance.")
    if report.flags:
        console.print(f"[bold]findings[/] (above chance by {LENGTH_FLAG_MARGIN:.0%} for length shares, "
                      f"{BLIND_FLAG_MARGIN:.0%} for blind readers):")
        for flag in report.flags:
            console.print(f"  - {flag}", highlight=False, soft_wrap=True)
    else:
        console.print("no artifact above the flag margins.")
