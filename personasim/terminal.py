"""What every ``personasim`` command prints with: the console, the one-line error, and the tables
that more than one command prints (the artifact audit: ``audit`` prints it, and so does ``eval``).

The command modules (``cli*.py``) import from here and never from one another, so a command can
change without touching the others.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from personasim.analysis.audit import AuditReport

#: Width of a printed table when the output is not a terminal (a file, a pipe): every figure fits.
TABLE_WIDTH = 120


def console() -> Console:
    """The console a command prints its result to (stdout)."""
    return Console()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one ``error:`` line on stderr and leave with ``code``: 2 for a usage error (the message
    names the fix), 1 for work that was attempted and failed."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _cell(value: float | None, chance: float, margin: float) -> str:
    if value is None:
        return "-"
    text = f"{value:.1%}"
    return f"[bold red]{text}[/]" if value > chance + margin else text


def print_audit(report: AuditReport) -> None:
    """The audit table (flagged cells in red) and the findings below it."""
    from personasim.analysis.audit import BLIND_FLAG_MARGIN, BLIND_READERS, LENGTH_FLAG_MARGIN

    out = console()
    if not out.is_terminal and "COLUMNS" not in os.environ:  # piped or captured: no terminal to fit
        out = Console(width=TABLE_WIDTH)
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
    out.print(table)
    if report.questions_without_profile:
        out.print(f"{report.questions_without_profile} questions have no demographic profile: "
                  "persona_prior answers them at chance.")
    if report.flags:
        out.print(f"[bold]findings[/] (above chance by {LENGTH_FLAG_MARGIN:.0%} for length shares, "
                  f"{BLIND_FLAG_MARGIN:.0%} for blind readers):")
        for flag in report.flags:
            out.print(f"  - {flag}", highlight=False, soft_wrap=True)
    else:
        out.print("no artifact above the flag margins.")
