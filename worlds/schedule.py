"""When each user talks to the assistant: sessions spread over simulated days."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from personasim.personas.seeding import rng_for


class ScheduleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sessions: int = Field(default=6, ge=1, description="Sessions per user.")
    start: datetime = Field(default=datetime(2025, 1, 6, 9, 0), description="Simulated start time.")
    mean_gap_days: float = Field(default=14.0, gt=0, description="Mean simulated days between sessions.")
    minutes_per_turn: float = Field(default=1.5, gt=0, description="Simulated minutes per message.")


def session_times(user_index: int, config: ScheduleConfig, seed: int) -> list[datetime]:
    """Start times of one user's sessions: strictly increasing, at least a few hours apart."""
    rng = rng_for(seed, "schedule", user_index)
    times: list[datetime] = []
    t = config.start + timedelta(days=rng.uniform(0, config.mean_gap_days))
    for _ in range(config.sessions):
        t = t.replace(second=0, microsecond=0)
        times.append(t)
        gap_days = 0.25 + rng.expovariate(1.0 / max(config.mean_gap_days - 0.25, 0.01))
        t = t + timedelta(days=gap_days)
    return times
