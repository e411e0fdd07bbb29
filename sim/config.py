"""The one validated object that describes a run. It is stored with the run, so a run can be
reproduced from its ``runs`` row alone."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from personasim.agents.backends import BackendConfig
from personasim.agents.memory.base import MemorySettings
from personasim.agents.memory.registry import check_memory_names, load_plugins
from personasim.agents.user import DialogueConfig
from personasim.personas.drift import DriftConfig
from personasim.personas.generator import PopulationConfig
from personasim.sim.question_config import QuestionConfig
from personasim.worlds.schedule import ScheduleConfig


class MemoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plugins: list[str] = Field(
        default_factory=list,
        description="Modules to import first; they register extra strategies with @register_memory.",
    )
    strategies: list[str] = Field(
        default_factory=lambda: ["none", "full_history", "agentic"],
        min_length=1,
        description="Strategies evaluated side by side on the same conversations.",
    )
    chatbot: str = Field(default="agentic", description="Strategy the live chatbot uses during sessions.")
    settings: MemorySettings = Field(default_factory=MemorySettings)

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, modules: list[str]) -> list[str]:
        load_plugins(modules)
        return modules

    @field_validator("strategies")
    @classmethod
    def _known_unique(cls, names: list[str]) -> list[str]:
        names = [n.strip() for n in names]
        if len(set(names)) != len(names):
            raise ValueError(f"memory strategies listed twice: {names}")
        return check_memory_names(names)

    @field_validator("chatbot")
    @classmethod
    def _known(cls, name: str) -> str:
        check_memory_names([name])
        return name

    @field_serializer("strategies")
    def _strategies_out(self, names: list[str], info: FieldSerializationInfo) -> list[str]:
        return [_identity_spelling(n, info) for n in names]

    @field_serializer("chatbot")
    def _chatbot_out(self, name: str, info: FieldSerializationInfo) -> str:
        return _identity_spelling(name, info)


#: How a run id spells a strategy whose behaviour moved to another name. The deleting long context
#: was ``full_history`` until store schema 10 gave that name to the raw history: it hashes under its
#: old name, so stored runs keep their ids (and resume and fork), and the raw one under a new one.
RUN_ID_SPELLING = {"full_history": "full_history/raw", "full_history_forgetting": "full_history"}


def _identity_spelling(name: str, info: FieldSerializationInfo) -> str:
    return RUN_ID_SPELLING.get(name, name) if (info.context or {}).get("run_identity") else name


class FaultPlan(BaseModel):
    """Deliberate failures, to test recovery: the run must end with the same rows regardless."""

    model_config = ConfigDict(extra="forbid")

    kill_driver_after_batches: int | None = Field(
        default=None, ge=1, description="SIGKILL the driver after writing this many session batches."
    )
    kill_actor_at_round: int | None = Field(default=None, ge=0, description="SIGKILL actor 0 once, in this round.")
    marker_dir: str | None = Field(
        default=None, description="Folder recording that a one-time fault already fired (default: the store's folder)."
    )


class EngineConfig(BaseModel):
    """How the run executes. Not part of the run's identity: results do not depend on it."""

    model_config = ConfigDict(extra="forbid")

    max_actor_restarts: int = Field(
        default=3, ge=0, description="Times Ray restarts a dead shard actor; the shard then replays and resumes."
    )
    max_failed_share: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="A run whose share of failed sessions (backend errors) is above this ends 'failed', with no "
        "evaluation: a backend that never answers must not look like a finished run.",
    )
    actor_restart_wait_s: float = Field(
        default=60.0, gt=0,
        description="How long the driver waits for Ray to bring a dead shard actor back before the run gives up.",
    )
    faults: FaultPlan | None = Field(default=None, description="Fault injection for recovery tests.")
    store_mode: Literal["driver", "parquet"] = Field(
        default="driver",
        description="driver: shards send rows, the driver writes them (one machine); parquet: shards write Parquet "
        "parts to parts_dir (shared storage on a cluster) and the driver loads them at the end.",
    )
    parts_dir: str | None = Field(default=None, description="Folder for Parquet parts (default: beside the store).")
    shared_models: bool = Field(
        default=True,
        description="transformers backends: one model actor per GPU serves every shard (batched), instead of a "
        "copy of the weights in each shard.",
    )

    num_actors: int | None = Field(default=None, ge=1, description="Ray actors holding user shards (default: CPUs).")
    store_memory_mb: int | None = Field(
        default=2048, ge=64,
        description="DuckDB's memory for the run's store, in MB; beyond it DuckDB evicts cached pages or spills "
        "to disk. Its default (80% of RAM) lets the page cache grow with the store: a 10,000-user run's driver "
        "peaked at 7.0 GB, 3.7 GB with this bound. None = DuckDB's default.",
    )
    store_checkpoint_mb: int | None = Field(
        default=1024, ge=1,
        description="How much a run's store writes to DuckDB's write-ahead log before it checkpoints into the "
        "file. DuckDB's default (16 MB) checkpointed a large run hundreds of times, each rewriting the table's "
        "open row groups: store writes of 3,600 users x 10 sessions took 72 s at 16 MB, 44 s at 1,024 MB "
        "(bench/README.md). None = DuckDB's default.",
    )
    wave_users: int = Field(
        default=1000, ge=1,
        description="Users of a shard whose sessions run at once: a round runs in waves of this many, so what a "
        "shard holds at once stays bounded however many users it has. Any value gives the same store.",
    )
    eval_actors: int | None = Field(
        default=None, ge=1,
        description="Ray actors asking and answering the run's users: each generates a few users' questions and "
        "answers them with the embedding reader (default: the cluster's CPUs; 1 = in the driver). The first 3,000 "
        "answers are given in the driver either way, so a small evaluation starts no actor.")
    address: str | None = Field(default=None, description="Address of an existing Ray cluster (default: embedded).")
    connect_timeout_s: float = Field(
        default=30.0, gt=0,
        description="How long to try reaching the Ray cluster at `address` before giving up with an error.",
    )
    cache: Literal["off", "read", "readwrite"] = Field(
        default="readwrite", description="LLM response cache: replay earlier calls for free and bit-identically."
    )
    cache_path: str | None = Field(default=None, description="Cache file (default: beside the store).")


class ForkSpec(BaseModel):
    """Where a forked run branches off: the source run's config, and the simulated time T.

    Sessions that start before T are driven exactly as in the source run (its backends, its live
    memory, its dialogue settings; with the LLM cache they cost no calls); from T on, the fork's
    own config drives. Every memory of the fork observes the shared history, so a different
    strategy starts at T with what it would have learned."""

    model_config = ConfigDict(extra="forbid")

    source: RunConfig
    at: datetime


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    population: PopulationConfig = Field(default_factory=PopulationConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    dialogue: DialogueConfig = Field(default_factory=DialogueConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    user_backend: BackendConfig = Field(default_factory=BackendConfig)
    chatbot_backend: BackendConfig = Field(default_factory=BackendConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    questions: QuestionConfig = Field(default_factory=QuestionConfig, description="The benchmark's questions.")
    embedder: Literal["minilm", "minilm-bf16", "minilm-static"] = Field(
        default="minilm",
        description="The offline sentence embedder of every process (forgetting, fact matching, questions, the "
        "embedding reader): MiniLM; MiniLM in bfloat16 (about 2.5x faster on CPUs with AMX, slower without; "
        "a few answers in a thousand differ); or a static model built from it locally (about 30x faster, built "
        "once per machine). bench/README.md gives each one's accuracy beside MiniLM's.")
    fork: ForkSpec | None = Field(default=None, description="Branch off another run at a simulated time.")

    @model_validator(mode="after")
    def _fork_keeps_the_users(self) -> RunConfig:
        if self.fork is None:
            return self
        source = self.fork.source
        source.engine = EngineConfig()  # how the source ran is not part of what it was
        for name in ("seed", "population", "schedule", "drift"):
            if getattr(source, name) != getattr(self, name):
                raise ValueError(
                    f"a fork keeps the source run's users and their timeline: {name} must equal the source's "
                    "(change memory, dialogue or backends instead)"
                )
        return self

    @property
    def run_id(self) -> str:
        """Deterministic: the same config and seed give the same id (and the same rows)."""
        identity = self.model_dump_json(exclude={"engine": True, **later_fields_at_default(self)},
                                        context={"run_identity": True})
        return "run-" + hashlib.blake2b(identity.encode(), digest_size=6).hexdigest()


#: Settings added after run ids were first derived from the config: part of a run's identity only
#: when set away from their default, so adding an option renames no run that does not use it (a
#: stored run keeps resuming and forking under its id, and a default run's rows stay the same).
LATER_FIELDS: dict[str, tuple[str, ...]] = {
    "": ("embedder",),  # top-level settings
    "dialogue": ("forget_share",),
    "drift": ("revealed_update_share",),
}


def later_fields_at_default(config: RunConfig) -> dict[str, Any]:
    exclude: dict[str, Any] = {}
    for section, names in LATER_FIELDS.items():
        part = getattr(config, section) if section else config
        at_default = {n for n in names if getattr(part, n) == type(part).model_fields[n].default}
        if section and at_default:
            exclude[section] = at_default
        else:
            exclude.update({n: True for n in at_default})
    if config.fork is not None:
        source = later_fields_at_default(config.fork.source)
        if source:
            exclude["fork"] = {"source": source}
    return exclude


ForkSpec.model_rebuild()
RunConfig.model_rebuild()


class ConfigFileError(ValueError):
    """A config file that cannot be read or does not validate."""


#: Bounds on a config file: a run config is a few hundred bytes of settings; anything far larger or
#: deeper is a mistake or an attack (a 313-byte YAML alias bomb once became a 6.9-million-character
#: stored config), and refusing it costs a user nothing.
MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_DEPTH = 32
MAX_CONFIG_VALUES = 20_000


def load_config_file(path: str | Path) -> dict:
    """Read a JSON, TOML or YAML config file into a plain mapping (validated by the caller).

    Bounded (``MAX_CONFIG_BYTES``, ``MAX_CONFIG_DEPTH``, ``MAX_CONFIG_VALUES`` once YAML aliases
    are expanded), UTF-8 only, and never self-referring: each refusal names the file and the fix."""
    p = Path(path)
    if not p.is_file():
        raise ConfigFileError(f"config file {p} does not exist")
    raw = p.read_bytes()
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigFileError(f"config file {p} is {len(raw):,} bytes; a run config is at most {MAX_CONFIG_BYTES:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"config file {p} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        elif p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ConfigFileError(f"config file {p} must end in .json, .toml, .yaml or .yml")
    except RecursionError:
        raise ConfigFileError(f"config file {p} is nested too deeply; a run config is at most "
                              f"{MAX_CONFIG_DEPTH} levels deep") from None
    except (json.JSONDecodeError, yaml.YAMLError, ValueError) as exc:
        if isinstance(exc, ConfigFileError):
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigFileError(f"config file {p} is not valid {p.suffix[1:].upper()}: {first}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"config file {p} must hold a mapping of settings, not {type(data).__name__}")
    _check_shape(data, p)
    return data


def _check_shape(data: Any, path: Path) -> None:
    """Refuse a loaded config that refers to itself, or is deeper or larger than a config can be
    (YAML aliases share one object in memory, so the count is of values as they would be stored)."""
    count = 0

    def walk(node: Any, depth: int, ancestors: tuple[int, ...]) -> None:
        nonlocal count
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigFileError(f"config file {path} expands to more than {MAX_CONFIG_VALUES:,} values (YAML "
                                  "aliases repeat what they point to); write the settings out plainly")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigFileError(f"config file {path} is nested more than {MAX_CONFIG_DEPTH} levels deep")
        if isinstance(node, dict | list):
            if id(node) in ancestors:
                raise ConfigFileError(f"config file {path} refers to itself (a YAML alias inside its own anchor)")
            children = node.values() if isinstance(node, dict) else node
            for child in children:
                walk(child, depth + 1, (*ancestors, id(node)))

    walk(data, 0, ())


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the setting: what a user needs to fix it."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "config"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
