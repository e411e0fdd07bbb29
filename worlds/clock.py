"""Simulated time. Wall-clock time never enters the simulation, so runs are reproducible."""

from __future__ import annotations

from datetime import datetime, timedelta


class SimClock:
    """A per-user clock that only moves forward."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    @property
    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("simulated time cannot go backwards")
        self._now += delta
        return self._now

    def jump_to(self, t: datetime) -> datetime:
        if t < self._now:
            raise ValueError(f"simulated time cannot go backwards ({t} < {self._now})")
        self._now = t
        return self._now
