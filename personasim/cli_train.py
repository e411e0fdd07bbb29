"""``personasim train``: TRL's SFT, DPO or GRPO trainer on a stored run, metrics written back to the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from personasim.terminal import console, fail

TRAINERS = ("sft", "dpo", "grpo")
# What the summary table shows when the trainer logged it: the numbers a reader looks at first.
KEY_METRICS = ("reward", "rewards/multiple_choice_reward/mean", "rewards/accuracies", "rewards/margins",
               "mean_token_accuracy", "eval_loss")


def train_command(
    trainer: Annotated[str, typer.Argument(help="Trainer: sft, dpo or grpo.")],
    model: Annotated[
        Path, typer.Option(help="Folder of the starting model, saved with save_pretrained (nothing is downloaded).")
    ],
    db: Annotated[Path, typer.Option(help="DuckDB store holding the run; metrics are written to it.")] = Path(
        "personasim.duckdb"
    ),
    run_id: Annotated[str | None, typer.Option("--run", help="Run to train on (default: the only run).")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="Memory strategy whose memory is each prompt's context (default agentic).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the trained model (default: <db folder>/<training id>).")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Optimizer steps (default: one epoch; online: 10).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Per-device train batch size (default 4).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: TRL's for the trainer).")] = None,
    max_length: Annotated[int | None, typer.Option(help="sft/dpo: max tokens per example (default 1024).")] = None,
    num_generations: Annotated[
        int | None, typer.Option(help="grpo: completions per prompt (default 4; must divide the batch size).")
    ] = None,
    max_completion_length: Annotated[
        int | None, typer.Option(help="grpo: max tokens per completion (default 64).")
    ] = None,
    online: Annotated[
        bool, typer.Option(help="grpo: train on live simulated users of the run's world instead of its questions.")
    ] = False,
    num_envs: Annotated[int | None, typer.Option(help="--online: parallel simulated users (default 16).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar or log lines.")] = False,
) -> None:
    """Fine-tune a local model on a run's benchmark questions with TRL (SFT, DPO, or GRPO with the
    multiple-choice reward); every logged metric goes to table training_metrics of the store."""
    from pydantic import ValidationError

    from personasim.sim.config import describe_validation_error
    from personasim.sim.store import StoreError

    if trainer not in TRAINERS:
        fail(f"unknown trainer {trainer!r}; choose from: {', '.join(TRAINERS)}")
    options: dict[str, Any] = {
        "run_id": run_id, "strategy": strategy, "output_dir": str(out) if out else None, "max_steps": max_steps,
        "per_device_train_batch_size": batch_size, "learning_rate": lr, "max_length": max_length,
        "num_generations": num_generations, "max_completion_length": max_completion_length, "num_envs": num_envs,
    }
    from personasim.rl.train import TrainConfig, train

    try:
        config = TrainConfig(trainer=trainer, model_path=str(model), online=online,
                             **{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        fail(describe_validation_error(exc).replace("Value error, ", ""))
    try:
        summary = train(db, config, show_progress=not quiet)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    print_train_summary(summary, db)


def print_train_summary(summary: Any, db: Path) -> None:
    out = console()
    mode = "online " if summary.online else ""
    table = Table(title=f"{mode}{summary.trainer} on run {summary.run_id}")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("steps", str(summary.steps))
    table.add_row("final loss", "n/a" if summary.final_loss is None else f"{summary.final_loss:.4f}")
    for name in KEY_METRICS:
        if name in summary.metrics:
            table.add_row(name, f"{summary.metrics[name]:.4g}")
    table.add_row("wall seconds", f"{summary.wall_seconds:.1f}")
    table.add_row("model saved to", summary.output_dir)
    table.add_row("training id", summary.training_id)
    out.print(table)
    for note in summary.notes:
        out.print(note)
    out.print(f"metrics in table training_metrics of {db}")
