"""``personasim compare``: is one strategy (reader, model, backend) really better than another?

The work is ``personasim.api.compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from personasim.terminal import console, fail


def compare_command(
    a: Annotated[str, typer.Argument(help="First strategy (or reader, reader model, backend).")],
    b: Annotated[str, typer.Argument(help="Second one.")],
    db: Annotated[Path, typer.Option(help="DuckDB store holding the answers.")] = Path("personasim.duckdb"),
    run_id: Annotated[str | None, typer.Option("--run", help="Run (default: the store's only run).")] = None,
    by: Annotated[str, typer.Option(help="What a and b name: strategy, reader, reader_model or backend.")] = "strategy",
    reader: Annotated[str | None, typer.Option(help="Only this reader's answers.")] = None,
    per_type: Annotated[bool, typer.Option(help="Also one comparison per question type.")] = False,
    bootstrap: Annotated[int, typer.Option(help="Paired bootstrap resamples.")] = 2000,
) -> None:
    """Pair the answers of a and b on the same questions: the difference with a paired bootstrap
    95% interval, an exact McNemar test, and whether it is significant."""
    from personasim.api import compare
    from personasim.sim.store import StoreError

    try:
        table = compare(db, a, b, run_id, by=by, reader=reader, per_type=per_type, n_boot=bootstrap)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    out = Table(title=f"{a} vs {b} (paired on the same questions)")
    for column in ("question type", "pairs", a, b, "difference [95% CI]", "McNemar p", "significant"):
        out.add_column(column, justify="left" if column == "question type" else "right")
    for row in table.to_dict("records"):
        out.add_row(str(row.get("question_type", "all")), str(row["n_pairs"]), f"{row['acc_a']:.1%}",
                    f"{row['acc_b']:.1%}", f"{row['diff'] * 100:+.1f} [{row['ci_low'] * 100:+.1f}, "
                    f"{row['ci_high'] * 100:+.1f}] pts", f"{row['p_value']:.3g}", "yes" if row["significant"] else "no")
    printed = console()
    printed.print(out)
    printed.print(table.iloc[0]["verdict"])
