"""Personas: who a simulated user is, what it prefers, and how that changes over time.

Everything here is pure, seeded Python: no I/O beyond the shipped data files, no model calls.
"""

from personasim.personas.catalog import Hint, Topic, TopicCatalog, TopicOption, load_topic_catalog
from personasim.personas.drift import DriftConfig, DriftModel, TopicSwapDrift
from personasim.personas.generator import PersonaGenerator, PopulationConfig
from personasim.personas.models import Demographics, DriftEvent, Persona, Polarity, Preference
from personasim.personas.seeding import derive_seed, rng_for
from personasim.personas.timeline import PersonaTimeline

__all__ = [
    "Demographics",
    "DriftConfig",
    "DriftEvent",
    "DriftModel",
    "Hint",
    "Persona",
    "PersonaGenerator",
    "PersonaTimeline",
    "Polarity",
    "PopulationConfig",
    "Preference",
    "Topic",
    "TopicCatalog",
    "TopicOption",
    "TopicSwapDrift",
    "derive_seed",
    "load_topic_catalog",
    "rng_for",
]
