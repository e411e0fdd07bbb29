"""Personas: who a simulated user is, what it prefers, and how that changes over time.

Everything here is pure, seeded Python: no I/O beyond the shipped data files, no model calls.
"""

from personasim.personas.catalog import Hint, Topic, TopicCatalog, TopicOption, load_topic_catalog
from personasim.personas.consistency import contradictions
from personasim.personas.correlations import CorrelationGraph, default_correlations, load_correlations
from personasim.personas.drift import DriftConfig, DriftPipeline, ExposureDrift, load_drift_data
from personasim.personas.generator import PersonaGenerator, PopulationConfig
from personasim.personas.models import (
    Demographics,
    DriftEvent,
    ForgetRequest,
    Person,
    Persona,
    Polarity,
    Preference,
    SensitiveFacts,
)
from personasim.personas.seeding import derive_seed, rng_for
from personasim.personas.timeline import PersonaTimeline

__all__ = [
    "CorrelationGraph",
    "Demographics",
    "DriftConfig",
    "DriftEvent",
    "DriftPipeline",
    "ExposureDrift",
    "ForgetRequest",
    "Hint",
    "Persona",
    "PersonaGenerator",
    "Person",
    "PersonaTimeline",
    "Polarity",
    "PopulationConfig",
    "Preference",
    "SensitiveFacts",
    "Topic",
    "TopicCatalog",
    "TopicOption",
    "contradictions",
    "default_correlations",
    "derive_seed",
    "load_correlations",
    "load_drift_data",
    "load_topic_catalog",
    "rng_for",
]
