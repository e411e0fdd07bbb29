"""Worlds: what users talk about (scenarios and topics) and when (clock and session schedule)."""

from personasim.worlds.clock import SimClock
from personasim.worlds.scenarios import Scenario, ScenarioCatalog, load_scenario_catalog
from personasim.worlds.schedule import ScheduleConfig, session_times

__all__ = [
    "Scenario",
    "ScenarioCatalog",
    "ScheduleConfig",
    "SimClock",
    "load_scenario_catalog",
    "session_times",
]
