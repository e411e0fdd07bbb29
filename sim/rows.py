"""Store rows: one pydantic model per DuckDB table. The DDL is generated from these models, so
the schema has a single source of truth (documented in docs/store.md)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class RunRow(BaseModel):
    run_id: str
    seed: int
    config_json: str
    personasim_version: str
    world_data_hash: str
    package_versions_json: str
    users: int
    sessions_per_user: int
    status: str


class PersonaRow(BaseModel):
    run_id: str
    persona_id: str
    user_index: int
    locale: str
    name: str
    age: int
    gender: str
    occupation: str
    city: str
    country: str


class PreferenceRow(BaseModel):
    run_id: str
    preference_id: str
    persona_id: str
    domain: str
    topic: str
    option: str
    statement: str
    polarity: str
    strength: float
    sensitive: bool
    valid_from: datetime
    valid_to: datetime | None
    sensitivity: str | None
    stereotype: str
    owner: str = "self"


class DriftEventRow(BaseModel):
    run_id: str
    event_id: str
    persona_id: str
    time: datetime
    cause: str
    topic: str
    old_preference_id: str | None
    new_preference_id: str | None
    kind: str


class ForgetRequestRow(BaseModel):
    run_id: str
    request_id: str
    persona_id: str
    time: datetime
    preference_id: str
    topic: str
    turn_id: str | None


class SensitiveFactRow(BaseModel):
    run_id: str
    persona_id: str
    kind: str
    value: str


class ConsistencyProbeRow(BaseModel):
    run_id: str
    probe_id: str
    persona_id: str
    session_index: int
    time: datetime
    topic: str
    question: str
    answer: str
    predicted_option: str
    true_options: list[str]
    consistent: bool


class SessionRow(BaseModel):
    run_id: str
    session_id: str
    persona_id: str
    session_index: int
    scenario_id: str
    started_at: datetime
    ended_at: datetime
    n_turns: int
    status: str
    error: str | None = None


class TurnRow(BaseModel):
    run_id: str
    turn_id: str
    session_id: str
    persona_id: str
    session_index: int
    turn_index: int
    role: str
    text: str
    time: datetime
    tokens: int
    prompt_tokens: int | None
    completion_tokens: int | None
    revealed_preference_id: str | None
    reveal_mode: str | None
    hint_kind: str | None
    forget_preference_id: str | None
    leak_similarity: float | None
    leaked: bool | None
    content_json: str | None = None
    filler: bool = False


class _SnapshotOf(BaseModel):
    """Which memory state a snapshot row is: the columns both of its shapes begin with."""

    run_id: str
    snapshot_id: str
    persona_id: str
    session_index: int
    strategy: str
    time: datetime


class MemorySnapshotRow(_SnapshotOf):
    """A memory's state after a session, whole: what the ``memory_snapshots`` view gives and what
    the session runner produces. It is stored as a ``MemorySnapshotItemsRow`` (sim/snapshots.py);
    ``text`` is always the entries joined by newlines."""

    text: str
    items: list[str]
    tokens: int


class MemorySnapshotItemsRow(_SnapshotOf):
    """A memory snapshot as stored (table ``memory_snapshot_items``; read them through the
    ``memory_snapshots`` view, which gives every row whole).

    A raw history's snapshot after session k is its snapshot after session k-1 with the new
    messages appended (and the oldest dropped past the context budget): stored whole every time,
    a 10-session run wrote each message ten times, and those copies were nine tenths of a large
    run's bytes. ``carried`` says how this row's entries continue the previous row of the same
    (run, persona, strategy), by session order: None, ``items`` are all of them; n, they are the
    previous row's entries from the n-th (0-based) on, then ``items``. ``tokens`` is the whole
    snapshot's (sim/snapshots.py)."""

    carried: int | None
    items: list[str]
    tokens: int


class QuestionRow(BaseModel):
    run_id: str
    question_id: str
    persona_id: str
    question_type: str
    asked_at: datetime
    topic: str
    scenario_id: str
    query: str
    options: list[str]
    option_sources: list[str]
    correct_index: int
    preference_id: str
    stale_preference_id: str | None
    reveal_mode: str
    reveals: int
    sessions_since_reveal: int
    tokens_since_reveal: int = -1
    preference_statement: str = ""
    stale_statement: str | None = None
    pref_type: str = ""
    who: str = "self"
    source: str = "generated"
    source_json: str | None = None


class AnswerRow(BaseModel):
    run_id: str
    answer_id: str
    question_id: str
    persona_id: str
    strategy: str
    reader: str
    snapshot_id: str | None
    chosen_index: int
    correct: bool
    scores: list[float]
    context_tokens: int
    reader_model: str | None = None
    raw_output: str | None = None


class SourceFileRow(BaseModel):
    run_id: str
    path: str
    kind: str
    persona_id: str | None
    metadata_json: str


class EnvStepRow(BaseModel):
    run_id: str
    step_id: str
    episode_id: str
    persona_id: str
    session_index: int
    step_index: int
    time: datetime
    state_json: str
    action: str
    action_tokens: int
    reward: float
    user_reply: str | None
    terminated: bool
    truncated: bool
    policy_version: str | None
    logprobs: list[float] | None


class RewardRow(BaseModel):
    run_id: str
    reward_id: str
    step_id: str
    persona_id: str
    name: str
    value: float
    weight: float


class TrainingRunRow(BaseModel):
    run_id: str
    training_id: str
    trainer: str
    online: bool
    model_path: str
    output_dir: str
    config_json: str
    status: str
    steps: int
    wall_seconds: float


class TrainingMetricRow(BaseModel):
    run_id: str
    training_id: str
    step: int
    name: str
    value: float


TABLES: dict[str, tuple[type[BaseModel], tuple[str, ...]]] = {
    "runs": (RunRow, ("run_id",)),
    "personas": (PersonaRow, ("run_id", "persona_id")),
    "preferences": (PreferenceRow, ("run_id", "preference_id")),
    "drift_events": (DriftEventRow, ("run_id", "event_id")),
    "forget_requests": (ForgetRequestRow, ("run_id", "request_id")),
    "sensitive_facts": (SensitiveFactRow, ("run_id", "persona_id", "kind")),
    "consistency_probes": (ConsistencyProbeRow, ("run_id", "probe_id")),
    "sessions": (SessionRow, ("run_id", "session_id")),
    "turns": (TurnRow, ("run_id", "turn_id")),
    "memory_snapshot_items": (MemorySnapshotItemsRow, ("run_id", "snapshot_id")),
    "questions": (QuestionRow, ("run_id", "question_id")),
    "answers": (AnswerRow, ("run_id", "answer_id")),
    "source_files": (SourceFileRow, ("run_id", "path")),
    "env_steps": (EnvStepRow, ("run_id", "step_id")),
    "rewards": (RewardRow, ("run_id", "reward_id")),
    "training_runs": (TrainingRunRow, ("run_id", "training_id")),
    "training_metrics": (TrainingMetricRow, ("run_id", "training_id", "step", "name")),
}
