"""``personasim audit``: can a reader without memory score well on this benchmark?

Prints, per question type and overall, how often the correct option is the longest or shortest
and how well blind readers (no memory, no history) score, next to chance, then the findings that
exceed chance by the flag margins. Works on a stored run or on PersonaMem-v2's own files.
The work is ``personasim.analysis.audit.audit_store`` and ``personasim.interop.personamem_v2.api.audit_personamem_v2``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from personasim.terminal import console, fail, print_audit


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
    split: Annotated[
        str, typer.Option(help="PersonaMem-v2 split to read: benchmark, train or val (never merged).")
    ] = "benchmark",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
    embedder: Annotated[
        str | None,
        typer.Option(help="Blind readers' embedder: minilm, minilm-bf16 or minilm-static (default: the run's own, "
                     "as personasim eval's reader)."),
    ] = None,
) -> None:
    """Audit a benchmark for artifacts: the correct option's length, and the accuracy of blind readers
    (longest option, query only, demographic profile only) that never see memory or history."""
    from personasim.sim.store import StoreError

    try:
        if personamem_v2 is not None:
            from personasim.interop.personamem_v2.api import audit_personamem_v2, unread_parts

            report = audit_personamem_v2(personamem_v2, db, window, split, embedder)
            for line in unread_parts(personamem_v2):
                console().print(f"note: {line}", highlight=False)
        else:
            from personasim.analysis.audit import audit_store

            report = audit_store(db or Path("personasim.duckdb"), run_id, embedder)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    print_audit(report)
    if json_out is not None:
        json_out.write_text(report.model_dump_json(indent=2))
