"""Whole populations: personas generated one by one (streaming), optionally aged by drift."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from personasim.personas.catalog import TopicCatalog, load_topic_catalog
from personasim.personas.correlations import CorrelationGraph, load_correlations
from personasim.personas.drift import DriftConfig, DriftPipeline, load_drift_data
from personasim.personas.generator import PersonaGenerator, PopulationConfig
from personasim.personas.models import Persona
from personasim.personas.seeding import rng_for

DEFAULT_START = datetime(2025, 1, 6, 9, 0)


class PopulationBuilder:
    """Everything needed to generate and age personas, loaded once."""

    def __init__(
        self,
        config: PopulationConfig,
        seed: int,
        drift: DriftConfig | None = None,
        catalog: TopicCatalog | None = None,
        correlations: CorrelationGraph | None = None,
    ) -> None:
        self.catalog = catalog or load_topic_catalog()
        self.graph = correlations or load_correlations(self.catalog)
        self.seed = seed
        self.generator = PersonaGenerator(self.catalog, config, seed, self.graph)
        data = load_drift_data(self.catalog, self.graph)
        self.drift = DriftPipeline(self.catalog, self.graph, drift or DriftConfig(), data.life_events, data.seasonal)

    def persona(self, index: int, start: datetime = DEFAULT_START, months: int = 0) -> Persona:
        persona = self.generator.generate(index, start)
        for m in range(months):
            begin = start + timedelta(days=30 * m)
            self.drift.apply_between(persona, begin, begin + timedelta(days=30), rng_for(self.seed, "aging", index, m))
        return persona

    def personas(self, n: int, start: datetime = DEFAULT_START, months: int = 0) -> Iterator[Persona]:
        for index in range(n):
            yield self.persona(index, start, months)
