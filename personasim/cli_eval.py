"""``personasim eval`` and ``personasim export``: score memory strategies on a stored run or on
PersonaMem-v2's own files, and write a run's benchmark in another tool's format.

The work is ``personasim.analysis.evaluate.evaluate``, ``personasim.interop.personamem_v2.api`` and
``personasim.api.export``; this module parses the options and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from personasim.terminal import console, fail, print_audit


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def eval_command(
    db: Annotated[Path, typer.Option(help="DuckDB store holding the run (written to with --personamem-v2).")] = Path(
        "personasim.duckdb"
    ),
    run_id: Annotated[str | None, typer.Option("--run", help="Run to score (default: the store's only run).")] = None,
    strategies: Annotated[
        str | None, typer.Option(help="Comma-separated memory strategies (default: those the run kept).")
    ] = None,
    reader: Annotated[str, typer.Option(help="embed (offline, default), llm, or loglik (local model).")] = "embed",
    types: Annotated[str | None, typer.Option(help="Comma-separated question types (default: all).")] = None,
    regenerate: Annotated[
        bool, typer.Option(help="Regenerate the run's questions with this version's generator first.")
    ] = False,
    reader_model: Annotated[str | None, typer.Option(help="llm reader: served model name.")] = None,
    reader_base_url: Annotated[
        str | None, typer.Option(help="llm reader: OpenAI-compatible base URL, e.g. http://localhost:8000/v1.")
    ] = None,
    reader_api_key_env: Annotated[
        str | None, typer.Option(help="llm reader: environment variable holding the API key.")
    ] = None,
    reader_max_retries: Annotated[
        int, typer.Option(min=0, help="llm reader: retries of a failed call (backoff from 0.5 s, doubling).")
    ] = 5,
    reader_model_path: Annotated[
        Path | None, typer.Option(help="loglik reader: folder of a saved causal LM (nothing is downloaded).")
    ] = None,
    personamem_v2: Annotated[
        Path | None,
        typer.Option("--personamem-v2", help="Evaluate on PersonaMem-v2's files in this folder instead of a run."),
    ] = None,
    window: Annotated[str, typer.Option(help="PersonaMem-v2 chat-history window: 32k or 128k.")] = "32k",
    split: Annotated[
        str, typer.Option(help="PersonaMem-v2 split to read: benchmark, train or val (never merged).")
    ] = "benchmark",
    memory_backend: Annotated[
        Path | None,
        typer.Option(help="PersonaMem-v2: a JSON, TOML or YAML file naming the model that writes the agentic "
                     "memory (a backend section: kind, model, base_url ...; a run config's chatbot_backend works "
                     "too). Default: the scripted note-taker, a rule-based baseline."),
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary as JSON here.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="embed reader: Ray actors answering a large evaluation (default: every "
                                 "core; 1 = in this process).")
    ] = None,
    embedder: Annotated[
        str | None,
        typer.Option(help="embed reader: minilm, minilm-bf16 or minilm-static (default: the run's own embedder)."),
    ] = None,
) -> None:
    """Answer every question with each memory strategy's state at question time; print accuracy
    overall, by question type, reveal mode and distance, with 95% bootstrap intervals; store the answers."""
    from pydantic import ValidationError

    from personasim.agents.backends import BackendConfig
    from personasim.analysis.evaluate import ReaderSpec, evaluate
    from personasim.sim.config import describe_validation_error
    from personasim.sim.store import StoreError

    try:
        backend = None
        if reader == "llm":
            backend = BackendConfig(
                kind="openai", model=reader_model or "", base_url=reader_base_url, api_key_env=reader_api_key_env,
                temperature=0.0, max_tokens=32, max_retries=reader_max_retries,
            )
        spec = ReaderSpec(
            kind=reader, backend=backend, model_path=str(reader_model_path) if reader_model_path else None
        )
    except ValidationError as exc:
        fail(f"invalid reader options: {describe_validation_error(exc)}")
    try:
        if personamem_v2 is not None:
            from personasim.interop.personamem_v2.api import evaluate_personamem_v2, read_backend_file

            summary = evaluate_personamem_v2(
                personamem_v2, db, _split(strategies), spec, _split(types), window=window, n_boot=bootstrap,
                show_progress=not quiet, split=split,
                memory_backend=read_backend_file(memory_backend) if memory_backend else None,
            )
        else:
            summary = evaluate(
                db, run_id, _split(strategies), spec, _split(types), regenerate=regenerate, n_boot=bootstrap,
                show_progress=not quiet, workers=workers, embedder=embedder,
            )
    except (StoreError, ValueError, ConnectionError) as exc:  # ConnectionError: an unreachable reader server
        fail(str(exc))
    print_eval_summary(summary)
    for line in summary.notes:
        console().print(f"note: {line}", highlight=False)
    print_distance_distribution(Path(summary.db), summary.run_id, summary.types)
    if json_out is not None:
        json_out.write_text(summary.model_dump_json(indent=2))


def _ci(row: dict[str, Any]) -> str:
    return f"{row['accuracy']:.1%} [{row['ci_low']:.1%}, {row['ci_high']:.1%}]"


def print_eval_summary(summary: Any) -> None:
    out = console()
    model = f" ({summary.reader_model})" if summary.reader_model else ""
    title = (f"run {summary.run_id}: {summary.questions} questions, reader {summary.reader}{model}, "
             f"chance {summary.chance:.1%}")
    table = Table(title=title)
    for column in ("strategy", "answers", "accuracy [95% CI]", "mean context tokens"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in summary.tables["by_strategy"]:
        table.add_row(row["strategy"], str(row["answers"]), _ci(row), f"{row['mean_context_tokens']:,.0f}")
    out.print(table)
    if summary.audit is not None:  # every accuracy above is read against these no-memory floors
        from personasim.analysis.audit import AuditReport

        print_audit(AuditReport.model_validate(summary.audit))
    for name, dimension, caption in [
        ("by_type", "question_type", "accuracy by question type"),
        ("by_reveal_mode", "reveal_mode", "accuracy by how the preference was revealed"),
        ("by_session_distance", "sessions_since_reveal_bucket", "accuracy by sessions since the last reveal"),
        ("by_token_distance", "tokens_since_reveal_bucket", "accuracy by conversation tokens since the last reveal"),
    ]:
        out.print(_pivot(summary.tables[name], dimension, summary.strategies, caption))


def _tokens(value: float) -> str:
    return "" if value != value else f"{value:,.0f}"  # NaN: no question of the type has a reveal


def print_distance_distribution(db: Path, run_id: str, types: list[str] | None = None) -> None:
    """The run's reveal-to-question distances (``analysis.distance.distance_distribution``) per
    question type, with PersonaMem-v2's published quantiles for its 32k and 128k windows beneath,
    so a run's horizon can be read against the seed benchmark's."""
    from personasim.analysis.distance import PERSONAMEM_V2_DISTANCES, distance_distribution
    from personasim.sim.store import open_store

    with open_store(db) as store:
        distribution = distance_distribution(store.con, run_id, types)
    table = Table(title="conversation tokens from the last reveal to the question (distance)")
    for column in ("question type", "n", "not revealed", "p25", "median", "p75", "p95"):
        table.add_column(column, justify="left" if column == "question type" else "right")
    for i, row in enumerate(distribution.itertuples(index=False)):
        table.add_row(row.question_type, f"{row.n:,}", f"{row.not_revealed:,}", _tokens(row.p25),
                      _tokens(row.median), _tokens(row.p75), _tokens(row.p95),
                      end_section=i >= len(distribution) - 2)
    for window, ref in PERSONAMEM_V2_DISTANCES.items():
        table.add_row(f"PersonaMem-v2 {window}", "", "", *[f"{ref[k]:,}" for k in ("p25", "median", "p75")], "")
    console().print(table)


def _pivot(rows: list[dict[str, Any]], dimension: str, strategies: list[str], caption: str) -> Table:
    """Rows: the dimension's values; columns: strategies; cells: accuracy [95% CI in points] n."""
    table = Table(title=caption)
    table.add_column(dimension.removesuffix("_bucket"))
    for s in strategies:
        table.add_column(s, justify="right")
    cells: dict[Any, dict[str, str]] = {}
    for row in rows:
        cell = f"{row['accuracy']:.1%} [{row['ci_low'] * 100:.0f}-{row['ci_high'] * 100:.0f}] n={row['answers']}"
        cells.setdefault(row[dimension], {})[row["strategy"]] = cell
    for value, by_strategy in cells.items():
        table.add_row(str(value), *[by_strategy.get(s, "") for s in strategies])
    return table


def export_command(
    db: Annotated[Path, typer.Option(help="DuckDB store holding the run.")] = Path("personasim.duckdb"),
    out: Annotated[Path, typer.Option(help="Folder to write (created if missing).")] = Path("export"),
    format: Annotated[
        str, typer.Option("--format", help="personamem-v2, or TRL training data: sft, dpo, kto, grpo.")
    ] = "personamem-v2",
    run_id: Annotated[str | None, typer.Option("--run", help="Run to export (default: the store's only run).")] = None,
    window: Annotated[str, typer.Option(help="personamem-v2: chat-history window, 32k or 128k.")] = "32k",
    strategy: Annotated[
        str, typer.Option(help="sft/dpo/kto/grpo: the memory strategy whose memory is each prompt's context.")
    ] = "agentic",
    val_fraction: Annotated[float, typer.Option(help="sft/dpo/kto/grpo: share of users held out.")] = 0.1,
    max_context_tokens: Annotated[int, typer.Option(help="sft/dpo/kto/grpo: memory tokens per prompt.")] = 4000,
) -> None:
    """Write a run's benchmark in another tool's format: PersonaMem-v2's benchmark CSV and chat
    histories, or TRL datasets (Hugging Face DatasetDict + Parquet, split by user) for training."""
    from personasim.api import export
    from personasim.sim.store import StoreError

    try:
        written = export(db, out, format, run_id, window=window, strategy=strategy, val_fraction=val_fraction,
                         max_context_tokens=max_context_tokens)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    console().print(f"wrote {len(written)} files under {out}")

