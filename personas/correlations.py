"""The global preference-correlation graph: what tends to go together, what never does, and what
demographics make likely (``personas/data/correlations.json``).

Nodes are preferences written ``topic/option:polarity`` (e.g. ``diet_style/vegan:likes``).
Implication edges carry a probability (vegan -> dislikes leather goods, 0.8); exclusion edges
mark pairs no persona may hold at once; demographic rules raise the prior of preferences for a
group, which is also what makes a preference *stereotypical* for that persona (and holding the
opposite *anti-stereotypical*).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from personasim.personas.catalog import TopicCatalog
from personasim.personas.models import Demographics


def node(topic: str, option: str, polarity: str) -> str:
    return f"{topic}/{option}:{polarity}"


@cache
def parse_node(text: str) -> tuple[str, str, str]:
    try:
        path, polarity = text.rsplit(":", 1)
        topic, option = path.split("/", 1)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a preference node 'topic/option:likes|dislikes'") from exc
    if polarity not in ("likes", "dislikes"):
        raise ValueError(f"{text!r}: polarity must be likes or dislikes")
    return topic, option, polarity


class Implication(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    target: str
    probability: float = Field(gt=0.0, le=1.0)


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    age_min: int | None = None
    age_max: int | None = None
    genders: list[str] | None = None
    countries: list[str] | None = None
    occupation_any: list[str] | None = Field(default=None, description="Lowercase words found in the occupation.")

    def matches(self, d: Demographics) -> bool:
        if self.age_min is not None and d.age < self.age_min:
            return False
        if self.age_max is not None and d.age > self.age_max:
            return False
        if self.genders is not None and d.gender not in self.genders:
            return False
        if self.countries is not None and d.country not in self.countries:
            return False
        if self.occupation_any is not None:
            occupation = d.occupation.lower()
            return any(word in occupation for word in self.occupation_any)
        return True


class DemographicRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    when: Condition
    prefer: list[str] = Field(min_length=1)
    weight: float = Field(default=4.0, gt=0)


class CorrelationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    implications: list[Implication] = Field(default_factory=list)
    exclusions: list[tuple[str, str]] = Field(default_factory=list)
    demographic: list[DemographicRule] = Field(default_factory=list)


class CorrelationGraph:
    def __init__(self, spec: CorrelationSpec, catalog: TopicCatalog) -> None:
        self.spec = spec
        self.implies = nx.DiGraph()
        self.excludes = nx.Graph()
        for imp in spec.implications:
            self._check(imp.source, catalog)
            self._check(imp.target, catalog)
            self.implies.add_edge(imp.source, imp.target, probability=imp.probability)
        for a, b in spec.exclusions:
            self._check(a, catalog)
            self._check(b, catalog)
            self.excludes.add_edge(a, b)
        for rule in spec.demographic:
            for n in rule.prefer:
                self._check(n, catalog)
        # generation asks these for every preference: answer from plain dicts
        self._implied = {n: sorted((t, d["probability"]) for t, d in self.implies[n].items()) for n in self.implies}
        self._excluded = {n: frozenset(self.excludes[n]) for n in self.excludes}

    @staticmethod
    def _check(n: str, catalog: TopicCatalog) -> None:
        topic, option, _ = parse_node(n)
        try:
            catalog.topic(topic).option(option)
        except KeyError as exc:
            raise ValueError(f"correlation graph names unknown preference {n!r}: {exc}") from exc

    def implied(self, n: str) -> list[tuple[str, float]]:
        """What holding ``n`` makes likely, with probabilities (sorted, so draws are reproducible)."""
        return self._implied.get(n, [])

    def excluded(self, n: str) -> frozenset[str]:
        """What can never be held together with ``n``."""
        return self._excluded.get(n, frozenset())

    def rules_for(self, demographics: Demographics) -> list[DemographicRule]:
        return [r for r in self.spec.demographic if r.when.matches(demographics)]


def load_correlations(catalog: TopicCatalog, path: str | Path | None = None) -> CorrelationGraph:
    if path is None:
        text = resources.files("personasim.personas").joinpath("data/correlations.json").read_text(encoding="utf-8")
        origin = "personasim/personas/data/correlations.json"
    else:
        text, origin = Path(path).read_text(encoding="utf-8"), str(path)
    try:
        spec = CorrelationSpec.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"invalid correlation file {origin}: {exc}") from exc
    return CorrelationGraph(spec, catalog)


@cache
def default_correlations() -> CorrelationGraph:
    from personasim.personas.catalog import load_topic_catalog

    return load_correlations(load_topic_catalog())
