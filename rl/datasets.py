"""Training data from the store, in TRL's conversational dataset formats.

Every example is one benchmark question: the prompt is what a chatbot with a given memory
strategy would see (its memory at question time, then the user's request), and the targets come
from the persona's true state, never from a judge:

- ``sft``: ``messages`` = prompt + the reply personalised to the preference held now;
- ``dpo``: ``prompt``, ``chosen`` (that reply), ``rejected`` (the reply for the stale preference
  where drift replaced one, else for another user's preference, else another distractor);
- ``kto``: ``prompt``, ``completion``, ``label``: the chosen reply (True) and the rejected (False);
- ``grpo``: ``prompt`` (the request with the lettered options, answered as ``\\boxed{x}``) plus the
  ground-truth columns the rewards in ``rl/rewards.py`` read.

Splits are by user, never by row: one user's questions share a memory, so a row split would leak.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from personasim.agents.embedding import embedder_named
from personasim.agents.memory import MemorySettings, memory_class
from personasim.agents.tokens import count_tokens
from personasim.analysis.answer_parsing import letters
from personasim.analysis.stored_questions import USERS_PER_CHUNK
from personasim.personas.seeding import derive_seed
from personasim.sim.rows import QuestionRow
from personasim.sim.store import open_store
from personasim.sim.store_read import question_users, read_questions, read_snapshots, snapshot_strategies
from personasim.sim.store_runs import resolve_run, run_embedder

TrainFormat = Literal["sft", "dpo", "kto", "grpo"]
FORMATS: tuple[str, ...] = ("sft", "dpo", "kto", "grpo")
SYSTEM = "You are a personal assistant. What you remember about the user:\n{memory}"
GRPO_INSTRUCTION = "Pick the reply that fits me best now. Answer with the letter only, as \\boxed{{x}}.\n\n{options}"
REJECTED_PREFERENCE = ("stale", "other_user", "exposes", "forgotten", "unsupported", "disliked", "alternative",
                       "incorrect")


def build_examples(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    fmt: TrainFormat,
    strategy: str = "agentic",
    max_context_tokens: int = 4000,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """``{"train": [...], "validation": [...]}`` for one run, with ``strategy``'s memory as context,
    in question id order. Held in memory: ``export_training_data`` streams a large run instead."""
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
    for chunk in example_chunks(con, run_id, fmt, strategy, max_context_tokens, val_fraction, seed):
        for name, rows in chunk.items():
            splits[name] += rows
    # in question id order, as one query over the run gives them (users' ids need not be ranges of it)
    return {name: sorted(rows, key=lambda row: row["question_id"]) for name, rows in splits.items()}


def example_chunks(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    fmt: TrainFormat,
    strategy: str = "agentic",
    max_context_tokens: int = 4000,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """``build_examples``' rows, ``USERS_PER_CHUNK`` users at a time (users in the order of their
    first question, each chunk's rows in question id order): a 10,000-user run's snapshots take
    about 8 GB as objects, its questions 4 GB, and its rows several GB more."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown training format {fmt!r}; choose from {', '.join(FORMATS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    users = question_users(con, run_id)
    if not users:
        raise ValueError(f"run {run_id} has no questions; run `personasim eval --db ... --regenerate` first")
    if strategy not in (have := snapshot_strategies(con, run_id)):
        raise ValueError(f"run {run_id} kept no memory snapshots for {strategy!r}; it has {', '.join(have)}")
    select = memory_class(strategy).select_context
    embedder, settings = _RunEmbedder(run_embedder(con, run_id)), MemorySettings()
    for start in range(0, len(users), USERS_PER_CHUNK):
        chunk = users[start:start + USERS_PER_CHUNK]
        snapshots = read_snapshots(con, run_id, chunk)
        splits: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
        for q in read_questions(con, run_id, chunk):  # in question id order
            before = [s for s in snapshots.get((q.persona_id, strategy), []) if s.time <= q.asked_at]
            context = select(before[-1].items, q.query, embedder, settings) if before else []
            split = "validation" if _held_out(q.persona_id, seed, val_fraction) else "train"
            splits[split] += _rows(q, _fit(context, max_context_tokens), fmt, strategy)
        yield splits


_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_META = [("question_id", pa.string()), ("persona_id", pa.string()), ("question_type", pa.string()),
         ("strategy", pa.string())]
#: Each format's columns, as ``Dataset.from_list`` infers them from the rows: fixed, so that every
#: chunk of a streamed export has them even where a chunk's values would infer otherwise (all null).
SCHEMAS: dict[str, pa.Schema] = {
    "sft": pa.schema([("messages", _MESSAGES), *_META]),
    "dpo": pa.schema([("prompt", _MESSAGES), ("chosen", _MESSAGES), ("rejected", _MESSAGES), *_META]),
    "kto": pa.schema([("prompt", _MESSAGES), ("completion", _MESSAGES), ("label", pa.bool_()), *_META]),
    "grpo": pa.schema([("prompt", _MESSAGES), ("options", pa.list_(pa.string())), ("correct_index", pa.int64()),
                       ("correct_answer", pa.string()), ("preference", pa.string()),
                       ("stale_preference", pa.string()), ("memory", pa.string()), *_META]),
}


def export_training_data(
    con: duckdb.DuckDBPyConnection, run_id: str, fmt: TrainFormat, out_dir: str | Path, **kwargs: Any
) -> list[Path]:
    """Write a Hugging Face ``DatasetDict`` (``load_from_disk(out_dir)``) and one Parquet file per split.

    The rows are streamed a chunk of users at a time into an Arrow file per split, which the
    ``DatasetDict`` then maps from disk, so the export holds one chunk's rows, not the run's. The
    rows are those of ``build_examples``, in question id order."""
    from datasets import Dataset, DatasetDict

    chunks = example_chunks(con, run_id, fmt, **kwargs)
    first = next(chunks)  # bad arguments fail here, before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".staging-") as staging:
        writers: dict[str, pa.ipc.RecordBatchStreamWriter] = {}
        try:
            for chunk in itertools.chain([first], chunks):
                for name, rows in chunk.items():
                    if rows:
                        if name not in writers:
                            writers[name] = pa.ipc.new_stream(str(Path(staging) / f"{name}.arrow"), SCHEMAS[fmt])
                        writers[name].write_table(pa.Table.from_pylist(rows, schema=SCHEMAS[fmt]))
        finally:
            for writer in writers.values():
                writer.close()
        data = DatasetDict({name: _in_question_order(Dataset.from_file(str(Path(staging) / f"{name}.arrow")))
                            for name in ("train", "validation") if name in writers})
        data.save_to_disk(str(out / "dataset"))
        paths = [out / "dataset"]
        for name, dataset in data.items():
            target = out / f"{name}.parquet"
            dataset.to_parquet(str(target))
            paths.append(target)
    return paths


def _in_question_order(dataset: Any) -> Any:
    """Sorted by question id (stably) where users' questions interleave, as in a loaded PersonaMem-v2
    run; a generated run's ids start with the user's, so its chunks come in order already."""
    ids = dataset.data.column("question_id")
    ordered = len(ids) < 2 or pc.all(pc.less_equal(ids.slice(0, len(ids) - 1), ids.slice(1))).as_py()
    return dataset if ordered else dataset.sort("question_id")


def export_training(
    db: str | Path,
    out: str | Path,
    fmt: TrainFormat,
    run_id: str | None = None,
    strategy: str = "agentic",
    val_fraction: float = 0.1,
    max_context_tokens: int = 4000,
) -> list[Path]:
    """``personasim export --format sft|dpo|kto|grpo`` as a function: ``export_training_data`` for a
    run of the store at ``db`` (the store's only run unless ``run_id`` names one), opened read-only.
    Returns the files written: the ``DatasetDict`` folder, then one Parquet file per split."""
    with open_store(db) as store:
        return export_training_data(
            store.con, resolve_run(store, run_id), fmt, out, strategy=strategy, val_fraction=val_fraction,
            max_context_tokens=max_context_tokens,
        )


class _RunEmbedder:
    """The run's own model, as its chatbot and evaluation retrieved with (rag's top-k), loaded on
    first use: the other strategies never embed, and a static run's model may not be built here."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loaded: Any = None

    def encode(self, texts: list[str]) -> Any:
        if self._loaded is None:
            self._loaded = embedder_named(self.name)
        return self._loaded.encode(texts)


def _held_out(persona_id: str, seed: int, fraction: float) -> bool:
    return derive_seed(seed, "split", persona_id) % 10_000 < fraction * 10_000


def _fit(context: list[str], budget: int) -> list[str]:
    """The newest memory lines that fit the token budget, in their order."""
    kept: list[str] = []
    used = 0
    for line in reversed(context):
        used += count_tokens(line)
        if used > budget:
            break
        kept.append(line)
    return kept[::-1]


def _prompt(context: list[str], user_text: str) -> list[dict[str, str]]:
    memory = "\n".join(context) or "(nothing yet)"
    return [{"role": "system", "content": SYSTEM.format(memory=memory)}, {"role": "user", "content": user_text}]


def _rejected_index(q: QuestionRow) -> int:
    for source in REJECTED_PREFERENCE:
        if source in q.option_sources:
            return q.option_sources.index(source)
    return next(i for i in range(len(q.options)) if i != q.correct_index)


def _rows(q: QuestionRow, context: list[str], fmt: str, strategy: str) -> list[dict[str, Any]]:
    meta = {"question_id": q.question_id, "persona_id": q.persona_id, "question_type": q.question_type,
            "strategy": strategy}
    chosen = {"role": "assistant", "content": q.options[q.correct_index]}
    rejected = {"role": "assistant", "content": q.options[_rejected_index(q)]}
    if fmt == "sft":
        return [{"messages": [*_prompt(context, q.query), chosen], **meta}]
    if fmt == "dpo":
        return [{"prompt": _prompt(context, q.query), "chosen": [chosen], "rejected": [rejected], **meta}]
    if fmt == "kto":
        prompt = _prompt(context, q.query)
        return [{"prompt": prompt, "completion": [chosen], "label": True, **meta},
                {"prompt": prompt, "completion": [rejected], "label": False, **meta}]
    listed = "\n".join(f"({letter}) {text}" for letter, text in zip(letters(len(q.options)), q.options, strict=True))
    request = f"{q.query}\n\n{GRPO_INSTRUCTION.format(options=listed)}"
    return [{
        "prompt": _prompt(context, request), "options": q.options, "correct_index": q.correct_index,
        "correct_answer": q.options[q.correct_index], "preference": q.preference_statement,
        "stale_preference": q.stale_statement or "", "memory": "\n".join(context), **meta,
    }]
