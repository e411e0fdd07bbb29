"""The persona timeline: the single source of truth that all scoring asks."""

from __future__ import annotations

from datetime import datetime

from personasim.personas.models import DriftEvent, Persona, Preference


class PersonaTimeline:
    """What a persona prefers at any simulated time.

    Built from every preference the persona ever held (each with its validity interval) and the
    drift events that closed and opened them. ``at(t)`` is exact: an interval is half-open, so at
    the instant of a drift the new preference holds and the old one does not.
    """

    def __init__(self, preferences: list[Preference], drift_events: list[DriftEvent] | None = None) -> None:
        self._preferences = sorted(preferences, key=lambda p: (p.valid_from, p.id))
        self._events = sorted(drift_events or [], key=lambda e: (e.time, e.id))

    @classmethod
    def of(cls, persona: Persona) -> PersonaTimeline:
        return cls(persona.preferences, persona.drift_events)

    @property
    def preferences(self) -> list[Preference]:
        return list(self._preferences)

    @property
    def drift_events(self) -> list[DriftEvent]:
        return list(self._events)

    def at(self, t: datetime) -> list[Preference]:
        """The preferences held at ``t``, ordered by topic."""
        return sorted((p for p in self._preferences if p.held_at(t)), key=lambda p: p.topic)

    def held_on(self, topic: str, t: datetime) -> Preference | None:
        for p in self._preferences:
            if p.topic == topic and p.held_at(t):
                return p
        return None

    def previous_on(self, topic: str, t: datetime) -> Preference | None:
        """The most recent preference on ``topic`` that was replaced before ``t`` (the stale one)."""
        replaced = [e for e in self._events if e.topic == topic and e.time <= t]
        return replaced[-1].old if replaced else None

    def events_between(self, start: datetime, end: datetime) -> list[DriftEvent]:
        return [e for e in self._events if start <= e.time < end]
