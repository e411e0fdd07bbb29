"""RL exports and rewards: TRL's formats from a real run's store, rewards on cases with known answers."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from personasim.rl.datasets import build_examples, export_training_data
from personasim.rl.rewards import (
    memory_fidelity_reward,
    multiple_choice_reward,
    over_personalisation_penalty,
    preference_alignment_reward,
)


@pytest.fixture()
def run_store(small_run, tmp_path):
    _, db = small_run
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    con = duckdb.connect(str(copy), read_only=True)
    run_id = con.execute("SELECT run_id FROM runs").fetchall()[0][0]
    yield con, run_id
    con.close()


@pytest.mark.parametrize("fmt", ["sft", "dpo", "kto", "grpo"])
def test_exports_follow_trl_conversational_formats_and_split_by_user(run_store, fmt, tmp_path):
    con, run_id = run_store
    splits = build_examples(con, run_id, fmt, strategy="agentic", val_fraction=0.25)
    rows = splits["train"] + splits["validation"]
    assert splits["train"] and splits["validation"]
    train_users = {r["persona_id"] for r in splits["train"]}
    assert not train_users & {r["persona_id"] for r in splits["validation"]}, "split by user, never by row"
    truth = {qid: (options, correct, sources) for qid, options, correct, sources in con.execute(
        "SELECT question_id, options, correct_index, option_sources FROM questions").fetchall()}
    for row in rows:
        options, correct, sources = truth[row["question_id"]]
        if fmt == "sft":
            roles = [m["role"] for m in row["messages"]]
            assert roles == ["system", "user", "assistant"] and row["messages"][-1]["content"] == options[correct]
        elif fmt == "dpo":
            assert row["chosen"] == [{"role": "assistant", "content": options[correct]}]
            assert row["rejected"][0]["content"] != options[correct]
            if "stale" in sources:  # the stale preference is the rejected reply when there is one
                assert row["rejected"][0]["content"] == options[sources.index("stale")]
        elif fmt == "kto":
            assert (row["completion"][0]["content"] == options[correct]) is row["label"]
        else:
            assert row["correct_answer"] == options[correct] and row["options"] == options
            assert "\\boxed" in row["prompt"][-1]["content"]
    if fmt == "kto":
        assert sum(r["label"] for r in rows) * 2 == len(rows)
    from datasets import load_from_disk

    paths = export_training_data(con, run_id, fmt, tmp_path / fmt, strategy="agentic", val_fraction=0.25)
    loaded = load_from_disk(str(paths[0]))
    assert loaded["train"].num_rows == len(splits["train"]) and (tmp_path / fmt / "train.parquet").exists()


@pytest.mark.parametrize("fmt", ["kto", "grpo"])
def test_examples_are_built_a_chunk_of_users_at_a_time_in_question_order(run_store, fmt, monkeypatch):
    """Questions and snapshots are read a few users at a time (a large run's snapshots do not fit in
    memory), and the rows are the same, in question id order, whatever the chunk size."""
    from personasim.rl import datasets
    from personasim.sim import store_read

    con, run_id = run_store
    whole = build_examples(con, run_id, fmt, strategy="agentic", val_fraction=0.25)
    monkeypatch.setattr(datasets, "USERS_PER_CHUNK", 5)  # three chunks of the 12 users
    reads: list[int] = []

    def counted(con, run_id, persona_ids=None):  # type: ignore[no-untyped-def]
        reads.append(len(persona_ids))
        return store_read.read_snapshots(con, run_id, persona_ids)

    monkeypatch.setattr(datasets, "read_snapshots", counted)
    chunked = build_examples(con, run_id, fmt, strategy="agentic", val_fraction=0.25)
    assert reads == [5, 5, 2]
    assert chunked == whole and whole["train"] and whole["validation"]
    for rows in whole.values():
        ids = [r["question_id"] for r in rows]
        assert ids == sorted(ids)


@pytest.mark.parametrize("fmt", ["sft", "kto"])
def test_the_streamed_export_holds_the_rows_of_build_examples(run_store, fmt, tmp_path, monkeypatch):
    """``export_training_data`` writes a chunk of users at a time through Arrow files: the dataset
    and the Parquet files hold exactly ``build_examples``' rows, in its order, with its columns."""
    import pyarrow.parquet as pq
    from datasets import load_from_disk

    from personasim.rl import datasets

    con, run_id = run_store
    expected = build_examples(con, run_id, fmt, strategy="agentic", val_fraction=0.25)
    monkeypatch.setattr(datasets, "USERS_PER_CHUNK", 5)
    paths = export_training_data(con, run_id, fmt, tmp_path / fmt, strategy="agentic", val_fraction=0.25)
    loaded = load_from_disk(str(paths[0]))
    for split, rows in expected.items():
        assert loaded[split].to_list() == rows == pq.read_table(tmp_path / fmt / f"{split}.parquet").to_pylist()
        assert loaded[split].data.schema.remove_metadata() == datasets.SCHEMAS[fmt]
    assert sorted(p.name for p in (tmp_path / fmt).iterdir()) == ["dataset", "train.parquet", "validation.parquet"]


def test_rows_whose_users_interleave_in_question_ids_are_sorted_stably():
    """A loaded PersonaMem-v2 run's question ids need not group by user: the streamed rows are then
    sorted by question id, keeping a question's rows (kto's chosen, then rejected) in order."""
    from datasets import Dataset

    from personasim.rl.datasets import _in_question_order

    rows = [{"question_id": q, "n": n} for n, q in enumerate(["b/1", "b/1", "d/3", "a/2", "a/2", "c/0"])]
    ordered = _in_question_order(Dataset.from_list(rows)).to_list()
    assert [(r["question_id"], r["n"]) for r in ordered] == [
        ("a/2", 3), ("a/2", 4), ("b/1", 0), ("b/1", 1), ("c/0", 5), ("d/3", 2)]
    already = Dataset.from_list(sorted(rows, key=lambda r: r["question_id"]))
    assert _in_question_order(already) is already


def test_export_errors_name_the_fix(run_store, tmp_path):
    con, run_id = run_store
    with pytest.raises(ValueError, match="no memory snapshots for 'rag'"):
        export_training_data(con, run_id, "sft", tmp_path / "out", strategy="rag")
    assert not (tmp_path / "out").exists(), "nothing is written for bad arguments"
    with pytest.raises(ValueError, match="choose from sft, dpo, kto, grpo"):
        build_examples(con, run_id, "ppo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no memory snapshots for 'rag'"):
        build_examples(con, run_id, "sft", strategy="rag")


def test_multiple_choice_reward_reads_letters_in_both_completion_formats():
    completions = ["\\boxed{b}", [{"role": "assistant", "content": "(b)"}], "b", "I think a", "garbage", "\\boxed{c}"]
    rewards = multiple_choice_reward(completions, correct_index=[1] * 6, options=[["w", "x", "y", "z"]] * 6)
    assert rewards == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_preference_alignment_prefers_the_current_preference_over_the_stale_one():
    current, stale = "I love spicy Thai food.", "I love mild Italian pasta."
    rewards = preference_alignment_reward(
        ["Try a fiery green curry with bird's-eye chillies at a Thai place.",
         "Try a creamy carbonara at an Italian trattoria."],
        preference=[current, current], stale_preference=[stale, stale],
    )
    assert rewards[0] > 0 > rewards[1]


def test_over_personalisation_penalty_counts_sentences_about_irrelevant_preferences():
    irrelevant = [["I love jazz music.", "I go hiking every weekend."]] * 2
    rewards = over_personalisation_penalty(
        ["Here is a tidy budget spreadsheet with three columns.",
         "Here is a budget. Since you love jazz music, set money aside for jazz concerts. "
         "And keep some for your weekend hiking trips."],
        irrelevant_preferences=irrelevant,
    )
    assert rewards[0] == 0.0 and rewards[1] <= -1.0


def test_memory_fidelity_rewards_memories_that_answer_held_out_questions():
    questions = [{"query": "What should I cook tonight?", "correct_index": 0,
                  "options": ["Since you love spicy Thai food, make a green curry with chillies.",
                              "Since you love mild Italian food, make a creamy carbonara.",
                              "Since you love Japanese food, make a miso soup.",
                              "Since you love Mexican food, make tacos."]}]
    good = "The user loves spicy Thai food and cooks curries with chillies."
    wrong = "The user loves mild Italian food, especially creamy pasta."
    assert memory_fidelity_reward([good, wrong], held_out=[questions, questions]) == [1.0, 0.0]


@pytest.mark.parametrize("fmt", ["sft", "dpo", "kto", "grpo"])
def test_each_export_trains_two_steps_in_the_matching_trl_trainer(run_store, fmt, tmp_path):
    """TRL consumes the exports as they are: a tiny random model (built here), two CPU steps each."""
    import math

    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, KTOConfig, KTOTrainer, SFTConfig, SFTTrainer

    from tests.tiny_models import build_tiny_causal_lm

    con, run_id = run_store
    export_training_data(con, run_id, fmt, tmp_path / "data", strategy="agentic", max_context_tokens=40)
    train = load_from_disk(str(tmp_path / "data" / "dataset"))["train"].select(range(4))
    path = build_tiny_causal_lm(tmp_path / "tiny")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    common = {"output_dir": str(tmp_path / "out"), "max_steps": 2, "per_device_train_batch_size": 2,
              "report_to": [], "logging_steps": 1, "use_cpu": True, "save_strategy": "no"}
    if fmt == "sft":
        trainer = SFTTrainer(model=model, args=SFTConfig(**common, max_length=256), train_dataset=train,
                             processing_class=tokenizer)
    elif fmt == "dpo":
        trainer = DPOTrainer(model=model, args=DPOConfig(**common, max_length=256), train_dataset=train,
                             processing_class=tokenizer)
    elif fmt == "kto":
        trainer = KTOTrainer(model=model, args=KTOConfig(**common, max_length=256), train_dataset=train,
                             processing_class=tokenizer)
    else:
        config = GRPOConfig(**{**common, "per_device_train_batch_size": 4}, num_generations=2,
                            max_completion_length=8)
        trainer = GRPOTrainer(model=model, reward_funcs=[multiple_choice_reward], args=config, train_dataset=train,
                              processing_class=tokenizer)
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    if fmt == "grpo":
        logged = [entry for entry in trainer.state.log_history if "rewards/multiple_choice_reward/mean" in entry]
        assert logged, "the reward function was called on the policy's samples"
