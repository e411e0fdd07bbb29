"""The ``personasim`` command line. Every command has a Python API twin, exported from ``personasim``
(``run``, ``evaluate``, ``audit``, ``report``, ``export``, ``compare``, ``train``, ...).

This module registers the commands of the ``cli_*`` modules and holds ``run``; the commands parse
options, call their twin and print. What they share (the console, the one-line error, the audit
table) is in ``personasim.terminal``: no ``cli_*`` module imports this one or another ``cli_*``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from personasim.terminal import console, fail

app = typer.Typer(
    help="Simulate users with evolving implicit personas talking to a chatbot with long-term memory, "
    "and score every memory exactly against the persona's true state.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """personasim command line."""


def _register_subcommands() -> None:
    from personasim.cli_audit import audit_command
    from personasim.cli_compare import compare_command
    from personasim.cli_eval import eval_command, export_command
    from personasim.cli_personas import personas_app, worlds_app
    from personasim.cli_report import report_command
    from personasim.cli_train import train_command

    app.add_typer(personas_app, name="personas")
    app.add_typer(worlds_app, name="worlds")
    app.command(name="eval")(eval_command)
    app.command(name="export")(export_command)
    app.command(name="audit")(audit_command)
    app.command(name="train")(train_command)
    app.command(name="report")(report_command)
    app.command(name="compare")(compare_command)


_register_subcommands()


@app.command()
def run(
    users: Annotated[int | None, typer.Option(help="Simulated users (default 24).")] = None,
    sessions: Annotated[int | None, typer.Option(help="Sessions per user (default 6).")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed: same config and seed, same store (default 0).")] = None,
    memory: Annotated[
        str | None,
        typer.Option(help="Comma-separated memory strategies to evaluate (default none,full_history,agentic)."),
    ] = None,
    chatbot_memory: Annotated[
        str | None, typer.Option(help="Strategy the live chatbot uses in sessions (default agentic).")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="Shipped settings to start from: pmv2-32k or pmv2-128k (PersonaMem-v2's shapes); "
                     "--config and flags override them."),
    ] = None,
    history_tokens: Annotated[
        int | None,
        typer.Option(help="Make every user's history reach this many tokens by the last session (e.g. 32000)."),
    ] = None,
    embedder: Annotated[
        str | None,
        typer.Option(help="Offline embedder for memories, questions and the reader: minilm (default), "
                     "minilm-bf16 (MiniLM in bfloat16: ~2.5x faster on CPUs with AMX) or minilm-static "
                     "(built once per machine; ~8x faster end to end, less exact)."),
    ] = None,
    db: Annotated[Path, typer.Option(help="DuckDB store file to write.")] = Path("personasim.duckdb"),
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON, TOML or YAML run config; flags override it.")
    ] = None,
    actors: Annotated[int | None, typer.Option(help="Ray actors holding user shards (default: CPUs).")] = None,
    address: Annotated[
        str | None, typer.Option(help="Address of an existing Ray cluster (default: start an embedded Ray).")
    ] = None,
    cache: Annotated[
        str | None,
        typer.Option(help="LLM response cache beside the store: off, read or readwrite (default readwrite)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace this run if the store already holds it.")] = False,
    resume: Annotated[
        bool, typer.Option(help="Continue the store's unfinished run (killed or interrupted) with its own config.")
    ] = False,
    run_id: Annotated[
        str | None, typer.Option("--run", help="With --resume: which unfinished run; with --fork-from: the source run.")
    ] = None,
    fork_from: Annotated[
        Path | None, typer.Option(help="Branch off this store's run: same users and history up to --at.")
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="With --fork-from: simulated time to branch at, e.g. 2025-02-01T00:00.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Simulate users and sessions, store every turn, then score each memory strategy on questions
    generated from the personas' true state. Prints a summary table."""
    from personasim.api import RunFailedError, check_resume_settings
    from personasim.api import resume as resume_api
    from personasim.api import run as run_api
    from personasim.config import ConfigError, build_config
    from personasim.sim.engine import ClusterUnreachableError
    from personasim.sim.store import StoreError

    try:
        if resume:
            if overwrite:
                raise ConfigError("--overwrite starts a run again and --resume continues it; use one of them")
            if fork_from is not None or at is not None:
                raise ConfigError("--resume continues a stored run; --fork-from and --at start a new one")
            check_resume_settings(db, run_id, config, preset, users=users, sessions=sessions, seed=seed,
                                  memory=memory, chatbot_memory=chatbot_memory, history_tokens=history_tokens,
                                  embedder=embedder)
            engine = build_config(None, actors=actors, address=address, cache=cache).engine
            summary = resume_api(db, run_id, engine, show_progress=not quiet)
        elif fork_from is not None:
            from datetime import datetime

            from personasim.api import fork_config

            if at is None:
                raise ConfigError("--fork-from needs --at, the simulated time to branch at (e.g. 2025-02-01T00:00)")
            try:
                when = datetime.fromisoformat(at)
            except ValueError as exc:
                raise ConfigError(f"--at {at!r} is not a date-time; use ISO format, e.g. 2025-02-01T00:00") from exc
            if preset is not None:
                raise ConfigError("--preset does not apply with --fork-from: a fork starts from its source's config")
            cfg = fork_config(
                fork_from, when, run_id, config, users=users, sessions=sessions, seed=seed, memory=memory,
                chatbot_memory=chatbot_memory, history_tokens=history_tokens, actors=actors, address=address,
                cache=cache, embedder=embedder,
            )
            summary = run_api(cfg, db, overwrite=overwrite, show_progress=not quiet)
        else:
            if at is not None:
                raise ConfigError("--at only applies with --fork-from")
            cfg = build_config(
                config, preset=preset, users=users, sessions=sessions, seed=seed, memory=memory,
                chatbot_memory=chatbot_memory, history_tokens=history_tokens, actors=actors, address=address,
                cache=cache, embedder=embedder,
            )
            summary = run_api(cfg, db, overwrite=overwrite, show_progress=not quiet)
    except (ConfigError, StoreError) as exc:
        fail(str(exc))
    except RunFailedError as exc:
        fail(str(exc), code=1)
    except ClusterUnreachableError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail(f"interrupted; the sessions written so far are kept: continue with `personasim run --resume --db {db}`")
    _print_summary(summary)


def _print_summary(summary) -> None:  # type: ignore[no-untyped-def]
    out = console()
    overview = Table(title=f"personasim run {summary.run_id}", show_header=False)
    overview.add_column(style="bold")
    overview.add_column(justify="right")
    for label, value in [
        ("users", summary.users), ("sessions", summary.sessions), ("turns", summary.turns),
        ("drift events", summary.drift_events), ("questions", summary.questions),
        ("ray actors", summary.actors), ("wall time", f"{summary.wall_seconds:.1f} s"), ("store", summary.db),
    ] + [(label, value) for label, value in [
        ("failed sessions", summary.failed_sessions), ("actor restarts", summary.actor_restarts)] if value]:
        overview.add_row(label, str(value))
    out.print(overview)
    scores = Table(title=f"accuracy per memory strategy (chance {summary.chance:.1%})")
    scores.add_column("strategy")
    scores.add_column("questions", justify="right")
    scores.add_column("accuracy", justify="right")
    scores.add_column("mean context tokens", justify="right")
    for s in summary.scores:
        scores.add_row(s.strategy, str(s.questions), f"{s.accuracy:.1%}", f"{s.mean_context_tokens:,.0f}")
    out.print(scores)


def main() -> None:
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # last resort: one line, non-zero, no traceback wall
        Console(stderr=True).print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        sys.exit(1)
    finally:
        if "ray" in sys.modules:  # a command that used Ray (importing it just to stop it would cost a second)
            from personasim.sim.engine import stop_embedded_ray

            stop_embedded_ray()


if __name__ == "__main__":
    main()
