"""Conversational scenarios: one data file per domain in ``worlds/data/scenarios/``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache, cached_property
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TaskKind = Literal["draft", "plan", "options", "explanation", "translation", "troubleshooting", "decision", "question"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)


class Scenario(BaseModel):
    """A reason to talk to the assistant, and the preference topics it touches."""

    model_config = ConfigDict(extra="forbid")

    id: str
    domain: str
    title: str
    topics: list[str] = Field(min_length=1)
    intents: list[str] = Field(min_length=1, description="Neutral opening requests that reveal nothing.")
    lead: str = Field(description="Neutral assistant opening, identical for every preference.")
    task: TaskKind = Field(
        default="plan",
        description="What the user wants made: a draft, a plan, options with reasons, an explanation ...",
    )
    details: list[str] = Field(
        default_factory=list,
        description="Task details the user adds (dates, numbers, constraints); they reveal no preference.",
    )
    points: list[str] = Field(
        default_factory=list,
        description="Substantive sentences a helpful assistant says about this task, true for any user.",
    )
    follow_ups: list[str] = Field(default_factory=list, description="Questions the user asks as the task goes on.")


class ScenarioFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str
    scenarios: list[Scenario] = Field(min_length=1)


class ScenarioCatalog(BaseModel):
    scenarios: list[Scenario] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ScenarioCatalog:
        ids = [s.id for s in self.scenarios]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate scenario ids: {dupes}")
        return self

    @cached_property
    def _by_id(self) -> dict[str, Scenario]:
        return {s.id: s for s in self.scenarios}

    @cached_property
    def _by_topic(self) -> dict[str, list[Scenario]]:
        index: dict[str, list[Scenario]] = {}
        for s in self.scenarios:
            for t in s.topics:
                index.setdefault(t, []).append(s)
        return index

    def scenario(self, scenario_id: str) -> Scenario:
        found = self._by_id.get(scenario_id)
        if found is None:
            raise KeyError(f"unknown scenario {scenario_id!r}")
        return found

    def scenarios_for(self, topic: str) -> list[Scenario]:
        return list(self._by_topic.get(topic, []))

    @property
    def domains(self) -> list[str]:
        return sorted({s.domain for s in self.scenarios})

    def check_topics(self, known_topics: Iterable[str]) -> None:
        """Fail loudly if a scenario names a topic the preference catalog does not have."""
        known = set(known_topics)
        missing = sorted({(s.id, t) for s in self.scenarios for t in s.topics if t not in known})
        if missing:
            raise ValueError(f"scenarios name unknown topics: {missing}")


def load_scenario_catalog(path: str | Path | None = None) -> ScenarioCatalog:
    """Load every ``*.json`` of a scenario folder; ``None`` loads the shipped one (cached)."""
    if path is None:
        return _shipped()
    return _parse_folder(Path(path))


@cache
def _shipped() -> ScenarioCatalog:
    return _parse_folder(resources.files("personasim.worlds").joinpath("data/scenarios"))


def _parse_folder(folder: Path | Traversable) -> ScenarioCatalog:
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    if not files:
        raise ValueError(f"no scenario files (*.json) in {folder}")
    scenarios: list[Scenario] = []
    for f in files:
        try:
            scenarios += ScenarioFile.model_validate(json.loads(f.read_text(encoding="utf-8"))).scenarios
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ValueError(f"invalid scenario file {f}: {exc}") from exc
    try:
        return ScenarioCatalog(scenarios=scenarios)
    except ValidationError as exc:
        raise ValueError(f"invalid scenario catalog {folder}: {exc}") from exc
