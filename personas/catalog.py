"""The preference space: topics, their mutually exclusive options, and how each is revealed.

It is data (``personas/data/topics.json``), validated here, so that researchers extend the world
by editing a file rather than code.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

HintKind = Literal["behaviour", "circumstance", "anecdote", "complaint", "comparison"]


class Hint(BaseModel):
    """An implicit revelation: lets an attentive listener infer the option without naming it."""

    kind: HintKind
    text: str = Field(min_length=1)


class TopicOption(BaseModel):
    id: str
    label: str
    keywords: list[str] = Field(min_length=1)
    statement: str = Field(min_length=1, description="Explicit first-person statement.")
    hints: list[Hint] = Field(min_length=1)
    response: str = Field(min_length=1, description="Assistant advice personalised to this option.")


class Topic(BaseModel):
    id: str
    domain: str
    name: str
    sensitive: bool = False
    options: list[TopicOption] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique_options(self) -> Topic:
        ids = [o.id for o in self.options]
        if len(set(ids)) != len(ids):
            raise ValueError(f"topic {self.id!r} has duplicate option ids")
        return self

    def option(self, option_id: str) -> TopicOption:
        for o in self.options:
            if o.id == option_id:
                return o
        raise KeyError(f"topic {self.id!r} has no option {option_id!r}")


class TopicCatalog(BaseModel):
    version: int = 1
    topics: list[Topic] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_topics(self) -> TopicCatalog:
        ids = [t.id for t in self.topics]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate topic ids in topic catalog")
        return self

    def topic(self, topic_id: str) -> Topic:
        found = self._index().get(topic_id)
        if found is None:
            raise KeyError(f"unknown topic {topic_id!r}")
        return found

    def _index(self) -> dict[str, Topic]:
        cached = self.__dict__.get("_topic_index")
        if cached is None:
            cached = {t.id: t for t in self.topics}
            self.__dict__["_topic_index"] = cached
        return cached

    @property
    def domains(self) -> list[str]:
        return sorted({t.domain for t in self.topics})


def load_topic_catalog(path: str | Path | None = None) -> TopicCatalog:
    """Load and validate a topic catalog; ``None`` loads the shipped one (cached)."""
    if path is None:
        return _shipped_catalog()
    return _parse_catalog(Path(path).read_text(encoding="utf-8"), str(path))


@cache
def _shipped_catalog() -> TopicCatalog:
    text = resources.files("personasim.personas").joinpath("data/topics.json").read_text(encoding="utf-8")
    return _parse_catalog(text, "personasim/personas/data/topics.json")


def _parse_catalog(text: str, origin: str) -> TopicCatalog:
    try:
        return TopicCatalog.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"invalid topic catalog {origin}: {exc}") from exc
