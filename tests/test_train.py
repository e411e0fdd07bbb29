"""``personasim train``: TRL's trainers driven from a store, every logged metric written back to it."""

from __future__ import annotations

import math
import shutil

import duckdb
import pytest
from typer.testing import CliRunner

from personasim.cli import app
from personasim.rl.train import TrainConfig, train

SMALL = {
    "sft": {"per_device_train_batch_size": 2, "max_length": 256},
    "dpo": {"per_device_train_batch_size": 2, "max_length": 256},
    "grpo": {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 8},
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def db(small_run, tmp_path):
    """A copy of the shared run: training writes to its store."""
    _, source = small_run
    copy = tmp_path / "store.duckdb"
    shutil.copy(source, copy)
    return copy


def _rows(db, sql, params=()):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def _invoke(*args):
    return CliRunner().invoke(app, ["train", *args])


@pytest.mark.parametrize("trainer", ["sft", "dpo", "grpo"])
def test_each_trainer_runs_two_steps_and_writes_its_metrics_to_the_store(db, tiny_model, trainer, tmp_path):
    from transformers import AutoModelForCausalLM

    config = TrainConfig(trainer=trainer, model_path=str(tiny_model), max_steps=2, max_context_tokens=40,
                         output_dir=str(tmp_path / "out"), **SMALL[trainer])
    summary = train(db, config)
    assert summary.steps == 2 and summary.final_loss is not None and math.isfinite(summary.final_loss)
    assert _rows(db, "SELECT trainer, status, steps, online FROM training_runs") == [(trainer, "completed", 2, False)]
    (run_id,) = _rows(db, "SELECT run_id FROM runs")[0]
    assert summary.run_id == run_id and _rows(db, "SELECT DISTINCT run_id FROM training_metrics") == [(run_id,)]
    losses = _rows(db, "SELECT step, value FROM training_metrics WHERE name = 'loss' ORDER BY step")
    assert [step for step, _ in losses] == [1, 2] and all(math.isfinite(v) for _, v in losses)
    if trainer == "grpo":
        assert _rows(db, "SELECT count(*) FROM training_metrics WHERE name = 'rewards/multiple_choice_reward/mean'")[
            0][0] == 2
        assert "rewards/multiple_choice_reward/mean" in summary.metrics
    assert AutoModelForCausalLM.from_pretrained(summary.output_dir) is not None


def test_cli_trains_prints_the_summary_and_a_rerun_replaces_its_rows(db, tiny_model):
    args = ["grpo", "--model", str(tiny_model), "--db", str(db), "--max-steps", "2", "--batch-size", "4",
            "--num-generations", "2", "--max-completion-length", "8", "--max-length", "128", "--quiet"]
    first = _invoke(*args)
    assert first.exit_code == 0, first.output
    assert "training_metrics" in first.output and "final loss" in first.output
    (tid, output_dir), = _rows(db, "SELECT training_id, output_dir FROM training_runs")
    assert output_dir == str(db.parent / tid), "the model is saved next to the store by default"
    metrics = _rows(db, "SELECT count(*) FROM training_metrics")[0][0]
    again = _invoke(*args)
    assert again.exit_code == 0, again.output
    assert _rows(db, "SELECT training_id, status FROM training_runs") == [(tid, "completed")]
    assert _rows(db, "SELECT count(*) FROM training_metrics")[0][0] == metrics, "replaced, not duplicated"


def test_a_failed_training_is_marked_failed(db, tiny_model):
    config = TrainConfig(trainer="grpo", model_path=str(tiny_model), max_steps=2, per_device_train_batch_size=3,
                         num_generations=2)
    with pytest.raises(ValueError, match="divisible by num_generations"):
        train(db, config)
    assert _rows(db, "SELECT status, steps FROM training_runs") == [("failed", 0)]


def test_errors_name_the_fix(db, tiny_model, tmp_path):
    model = str(tiny_model)
    missing = _invoke("sft", "--model", str(tmp_path / "nowhere"), "--db", str(db))
    assert missing.exit_code == 2 and "save_pretrained" in missing.output and "nothing is downloaded" in missing.output
    unknown = _invoke("ppo", "--model", model, "--db", str(db))
    assert unknown.exit_code == 2 and "sft, dpo, grpo" in unknown.output
    offline_only = _invoke("dpo", "--online", "--model", model, "--db", str(db))
    assert offline_only.exit_code == 2 and "online training is GRPO only" in offline_only.output
    no_run = _invoke("sft", "--model", model, "--db", str(db), "--run", "run-nope")
    assert no_run.exit_code == 2 and "no run 'run-nope'" in no_run.output
    no_store = _invoke("sft", "--model", model, "--db", str(tmp_path / "none.duckdb"))
    assert no_store.exit_code == 2 and "personasim run --db" in no_store.output
    with duckdb.connect(str(db)) as con:
        con.execute("DELETE FROM questions")
    no_questions = _invoke("sft", "--model", model, "--db", str(db))
    assert no_questions.exit_code == 2 and "--regenerate" in no_questions.output


def test_training_id_ignores_the_output_folder_but_not_the_settings(tiny_model):
    from personasim.rl.train import training_id

    base = TrainConfig(trainer="sft", model_path=str(tiny_model))
    assert training_id(base, "r") == training_id(base.model_copy(update={"output_dir": "elsewhere"}), "r")
    assert training_id(base, "r") != training_id(base.model_copy(update={"max_steps": 3}), "r")
    assert training_id(base, "r") != training_id(base, "other-run")


def test_online_grpo_trains_on_live_users_and_records_the_env_run(db, tiny_model):
    config = TrainConfig(trainer="grpo", model_path=str(tiny_model), online=True, max_steps=2, num_envs=6,
                         **SMALL["grpo"])
    (source,) = _rows(db, "SELECT run_id FROM runs")[0]
    summary = train(db, config)
    assert summary.online and summary.steps == 2 and summary.run_id != source
    assert _rows(db, "SELECT run_id, status, steps, online FROM training_runs") == [
        (summary.run_id, "completed", 2, True)]
    assert _rows(db, "SELECT count(DISTINCT step) FROM training_metrics WHERE name = 'loss'")[0][0] == 2
    assert _rows(db, "SELECT count(*), count(DISTINCT policy_version) FROM env_steps")[0] == (4, 2)
    assert train(db, config.model_copy(update={"trainer": "sft", "online": False, "max_steps": 1})).run_id == source, (
        "with an online run beside it, the store's only simulated run is still the default")
    with pytest.raises(ValueError, match="raise --num-envs"):
        train(db, config.model_copy(update={"num_envs": 2}))
