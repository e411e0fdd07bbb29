"""``personasim train``: run TRL's SFT, DPO or GRPO trainer on a store's run, metrics back into the store.

Why train from the store rather than from an export: the store already knows which run, which
memory strategy and which users a dataset came from, and writing every logged metric next to
the run keeps a training result joinable with the simulation that produced its data (tables
``training_runs`` and ``training_metrics``). Nothing is downloaded: the starting model is a local
folder saved with ``save_pretrained``, and nothing is reported to wandb or any other tracker.

A training is identified by ``training_id``, a hash of its configuration (without ``output_dir``)
and the run it trained on, so re-running the same configuration *replaces* that training's rows
instead of adding a second copy. Only durations are stored, never wall-clock timestamps, so a
store stays reproducible.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import numbers
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from transformers import TrainerCallback

from personasim.sim.rows import TrainingMetricRow, TrainingRunRow

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

    from personasim.sim.store import TrajectoryStore

TrainerName = Literal["sft", "dpo", "grpo"]
TRAINERS: tuple[str, ...] = ("sft", "dpo", "grpo")
ONLINE_DEFAULT_STEPS = 10


class TrainConfig(BaseModel):
    """Everything that decides what a training does; its JSON (less ``output_dir``) names the training."""

    model_config = ConfigDict(extra="forbid")

    trainer: TrainerName
    model_path: str
    run_id: str | None = None
    # dataset (rl/datasets.py)
    strategy: str = "agentic"
    max_context_tokens: int = 2000
    val_fraction: float = 0.1
    seed: int = 0
    # trainer
    output_dir: str | None = None
    max_steps: int = -1
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float | None = None
    max_length: int = 1024
    logging_steps: int = 1
    eval_steps: int | None = None
    # GRPO
    num_generations: int = 4
    max_completion_length: int = 64
    temperature: float = 1.0
    beta: float = 0.0
    use_cpu: bool | None = None
    # online GRPO (rl/online.py)
    online: bool = False
    num_envs: int = 16
    env_users: int | None = None

    @field_validator("model_path")
    @classmethod
    def _local_folder(cls, value: str) -> str:
        """A hub name would trigger a download (or hang offline); only a saved folder is accepted."""
        path = Path(value)
        if not path.is_dir() or not (path / "config.json").exists():
            raise ValueError(
                f"model path {value!r} is not a folder with config.json; nothing is downloaded; "
                "pass a folder saved with save_pretrained"
            )
        return str(path.resolve())  # one model, one id, whichever way its path was written

    @model_validator(mode="after")
    def _online_is_grpo(self) -> TrainConfig:
        if self.online and self.trainer != "grpo":
            raise ValueError(f"online training is GRPO only; got trainer {self.trainer!r}")
        return self


class TrainSummary(BaseModel):
    training_id: str
    run_id: str
    trainer: str
    online: bool = False
    steps: int
    final_loss: float | None
    metrics: dict[str, float]
    output_dir: str
    wall_seconds: float
    notes: list[str] = []


def training_id(config: TrainConfig, run_id: str) -> str:
    """Same configuration on the same run, same id: a re-run replaces rather than duplicates."""
    payload = config.model_dump_json(exclude={"output_dir", "run_id"}) + "\n" + run_id
    return "train-" + hashlib.blake2b(payload.encode(), digest_size=6).hexdigest()


def train(db: str | Path, config: TrainConfig, show_progress: bool = False) -> TrainSummary:
    """Train ``config.trainer`` on a run of the store at ``db``; log metrics to the store; save the model."""
    from personasim.sim.store import open_store
    from personasim.sim.store_runs import resolve_run

    with open_store(db, write=True) as store, _dataset_bars(show_progress):
        run_id = resolve_run(store, config.run_id)
        tid = training_id(config, run_id)
        output_dir = config.output_dir or str(Path(db).resolve().parent / tid)
        if config.online:
            return _train_online(store, config, run_id, tid, output_dir, show_progress)
        splits = build_splits(store, config, run_id)
        return _run(store, config, run_id, tid, output_dir, show_progress, splits)


@contextlib.contextmanager
def _dataset_bars(show: bool) -> Iterator[None]:
    """TRL tokenizes with ``datasets.map`` and transformers loads weights with bars that ignore
    ``disable_tqdm``; hide them when quiet, and leave both libraries as they were afterwards."""
    import datasets
    from transformers.utils import logging as hf_logging

    were_on = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    if not show:
        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not show and were_on[0]:
            datasets.enable_progress_bars()
        if not show and were_on[1]:
            hf_logging.enable_progress_bar()


def build_splits(store: TrajectoryStore, config: TrainConfig, run_id: str) -> dict[str, Any]:
    """The run's questions as Hugging Face datasets in the trainer's format (rl/datasets.py)."""
    from datasets import Dataset

    from personasim.rl.datasets import build_examples

    rows = build_examples(store.con, run_id, config.trainer, strategy=config.strategy,
                          max_context_tokens=config.max_context_tokens, val_fraction=config.val_fraction,
                          seed=config.seed)
    if not rows["train"]:
        raise ValueError(f"run {run_id} gives no training examples; lower --val-fraction or simulate more users")
    return {name: Dataset.from_list(split) for name, split in rows.items() if split}


def _train_online(store: TrajectoryStore, config: TrainConfig, run_id: str, tid: str, output_dir: str,
                  show_progress: bool) -> TrainSummary:
    """GRPO on live simulated users: the environment (rl/online.py) supplies prompts and rewards."""
    from personasim.rl.online import OnlineGRPO
    from personasim.sim.store_runs import read_run

    notes = []
    if config.max_steps <= 0:
        notes.append(f"online training has no epochs; max_steps defaults to {ONLINE_DEFAULT_STEPS}")
        config = config.model_copy(update={"max_steps": ONLINE_DEFAULT_STEPS})
    prompts = config.per_device_train_batch_size * config.gradient_accumulation_steps // config.num_generations
    if config.num_envs < 3 * prompts:
        raise ValueError(
            f"online GRPO reads one generation batch ({prompts} prompts) ahead, so it needs at least {3 * prompts} "
            f"live conversations; raise --num-envs (now {config.num_envs}) or lower --batch-size")
    run_config = read_run(store, run_id).run_config
    if run_config is None:
        raise ValueError(f"run {run_id} was loaded from PersonaMem-v2 files; online GRPO needs a simulated run's users")
    online = OnlineGRPO.start(store, run_config, num_envs=config.num_envs, label=tid, users=config.env_users)
    try:
        splits = {"train": online.train_dataset()}
        summary = _run(store, config, online.env_run_id, tid, output_dir, show_progress, splits, online=online)
    finally:
        online.close()
    summary.notes = notes + [f"source run {run_id}; online episodes in run {online.env_run_id}"]
    return summary


def _run(store: TrajectoryStore, config: TrainConfig, run_id: str, tid: str, output_dir: str, show_progress: bool,
         splits: dict[str, Any], online: Any = None) -> TrainSummary:
    """Write the ``running`` row, train, then mark it ``completed`` (or ``failed`` and re-raise)."""
    _forget(store, tid)
    row = TrainingRunRow(run_id=run_id, training_id=tid, trainer=config.trainer, online=config.online,
                         model_path=config.model_path, output_dir=output_dir, config_json=config.model_dump_json(),
                         status="running", steps=0, wall_seconds=0.0)
    store.write("training_runs", [row])
    metrics = StoreMetricsCallback(store, run_id, tid)
    start = time.perf_counter()
    trainer = None
    try:
        model, tokenizer = load_model(config.model_path, padding_left=config.trainer == "grpo")
        trainer = build_trainer(config, model, tokenizer, splits, output_dir, show_progress, metrics, online)
        result = trainer.train()
        trainer.save_model(output_dir)
        tokenizer.save_pretrained(output_dir)
    except BaseException:
        steps = trainer.state.global_step if trainer is not None else 0
        _finish(store, row, "failed", steps, time.perf_counter() - start)
        raise
    wall = time.perf_counter() - start
    steps = trainer.state.global_step
    _finish(store, row, "completed", steps, wall)
    loss = metrics.last.get("loss", result.training_loss)
    return TrainSummary(training_id=tid, run_id=run_id, trainer=config.trainer, online=config.online, steps=steps,
                        final_loss=loss if loss is not None and math.isfinite(loss) else None,
                        metrics=dict(metrics.last), output_dir=output_dir, wall_seconds=round(wall, 3))


def _forget(store: TrajectoryStore, tid: str) -> None:
    """Drop an earlier training with this id: a re-run replaces it."""
    store.replace_rows({table: {"training_id": tid} for table in ("training_metrics", "training_runs")})


def _finish(store: TrajectoryStore, row: TrainingRunRow, status: str, steps: int, wall: float) -> None:
    store.update_rows("training_runs", {"status": status, "steps": steps, "wall_seconds": round(wall, 3)},
                      {"run_id": row.run_id, "training_id": row.training_id})


def load_model(path: str, padding_left: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a local folder; a tokenizer without a pad token pads with EOS.

    GRPO generates, and batched generation needs prompts padded on the left."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_left:
        tokenizer.padding_side = "left"
    return model, tokenizer


def trainer_args(config: TrainConfig, output_dir: str, show_progress: bool, has_eval: bool) -> dict[str, Any]:
    """Arguments every TRL config shares: never report to a tracker, never checkpoint mid-run."""
    import torch

    args: dict[str, Any] = {
        "output_dir": output_dir, "max_steps": config.max_steps, "num_train_epochs": config.num_train_epochs,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps, "logging_steps": config.logging_steps,
        "seed": config.seed, "report_to": [], "save_strategy": "no", "disable_tqdm": not show_progress,
        "use_cpu": not torch.cuda.is_available() if config.use_cpu is None else config.use_cpu,
    }
    if config.learning_rate is not None:
        args["learning_rate"] = config.learning_rate
    if has_eval:
        args |= {"eval_strategy": "steps", "eval_steps": config.eval_steps}
    return args


def build_trainer(config: TrainConfig, model: Any, tokenizer: Any, splits: dict[str, Any], output_dir: str,
                  show_progress: bool, metrics: TrainerCallback, online: Any = None) -> Trainer:
    """The TRL trainer for ``config.trainer``, with the store's metrics callback attached."""
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from personasim.rl.rewards import multiple_choice_reward

    eval_dataset = splits.get("validation") if config.eval_steps else None
    args = trainer_args(config, output_dir, show_progress, eval_dataset is not None)
    common: dict[str, Any] = {"model": model, "processing_class": tokenizer, "train_dataset": splits["train"],
                              "eval_dataset": eval_dataset, "callbacks": [metrics]}
    if config.trainer == "sft":
        trainer = SFTTrainer(args=SFTConfig(**args, max_length=config.max_length), **common)
    elif config.trainer == "dpo":
        trainer = DPOTrainer(args=DPOConfig(**args, max_length=config.max_length), **common)
    else:
        grpo = GRPOConfig(**args, num_generations=config.num_generations,
                          max_completion_length=config.max_completion_length, temperature=config.temperature,
                          beta=config.beta, shuffle_dataset=online is None)
        rewards = [multiple_choice_reward] if online is None else list(online.reward_funcs)
        if online is not None:
            common["callbacks"] = [online.callback, metrics]
        trainer = GRPOTrainer(args=grpo, reward_funcs=rewards, **common)
    if not show_progress:
        trainer.remove_callback(PrinterCallback)
    return trainer


class StoreMetricsCallback(TrainerCallback):
    """Writes every numeric value the trainer logs to ``training_metrics`` as soon as it is logged,
    so a crash keeps what was logged. A (step, name) seen twice keeps its first value (the key)."""

    def __init__(self, store: TrajectoryStore, run_id: str, tid: str) -> None:
        self.store, self.run_id, self.tid = store, run_id, tid
        self.seen: set[tuple[int, str]] = set()
        self.last: dict[str, float] = {}

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        rows = []
        for name, value in (logs or {}).items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            if (state.global_step, name) in self.seen:
                continue
            self.seen.add((state.global_step, name))
            self.last[name] = float(value)
            rows.append(TrainingMetricRow(run_id=self.run_id, training_id=self.tid, step=state.global_step,
                                          name=name, value=float(value)))
        self.store.write("training_metrics", rows)
