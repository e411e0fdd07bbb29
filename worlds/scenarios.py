"""Conversational scenarios (data file ``worlds/data/scenarios.json``) and their topic index."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, model_validator


class Scenario(BaseModel):
    """A reason to talk to the assistant, and the preference topics it touches."""

    id: str
    domain: str
    title: str
    topics: list[str] = Field(min_length=1)
    intents: list[str] = Field(min_length=1, description="Neutral opening requests.")
    lead: str = Field(description="Neutral assistant opening, identical for every preference.")


class ScenarioCatalog(BaseModel):
    version: int = 1
    scenarios: list[Scenario] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ScenarioCatalog:
        ids = [s.id for s in self.scenarios]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate scenario ids in scenario catalog")
        return self

    def scenario(self, scenario_id: str) -> Scenario:
        for s in self.scenarios:
            if s.id == scenario_id:
                return s
        raise KeyError(f"unknown scenario {scenario_id!r}")

    def scenarios_for(self, topic: str) -> list[Scenario]:
        return [s for s in self.scenarios if topic in s.topics]

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
    """Load and validate a scenario catalog; ``None`` loads the shipped one (cached)."""
    if path is None:
        return _shipped()
    return _parse(Path(path).read_text(encoding="utf-8"), str(path))


@cache
def _shipped() -> ScenarioCatalog:
    text = resources.files("personasim.worlds").joinpath("data/scenarios.json").read_text(encoding="utf-8")
    return _parse(text, "personasim/worlds/data/scenarios.json")


def _parse(text: str, origin: str) -> ScenarioCatalog:
    try:
        return ScenarioCatalog.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"invalid scenario catalog {origin}: {exc}") from exc
