"""The persona timeline: the single source of truth that all scoring asks."""

from __future__ import annotations

from datetime import datetime

from personasim.personas.models import DriftEvent, ForgetRequest, Persona, Preference


class PersonaTimeline:
    """What a persona prefers at any simulated time, and what it asked to be forgotten.

    Built from every preference the persona ever held (each with its validity interval), the
    drift events that closed and opened them, and its forgetting requests. ``at(t)`` is exact:
    an interval is half-open, so at the instant of a drift the new preference holds and the old
    one does not.

    Preferences of people in the user's life (``owner`` other than ``self``) are kept apart,
    whichever list they arrive in: ``at``, ``held_on`` and ``preferences`` are the user's own,
    because everything that reasons about the user relies on that; ``others_at`` asks about them.
    """

    def __init__(
        self,
        preferences: list[Preference],
        drift_events: list[DriftEvent] | None = None,
        forget_requests: list[ForgetRequest] | None = None,
        others: list[Preference] | None = None,
    ) -> None:
        everything = [*preferences, *(others or [])]
        self._preferences = sorted((p for p in everything if p.is_own), key=lambda p: (p.valid_from, p.id))
        self._others = sorted((p for p in everything if not p.is_own), key=lambda p: (p.valid_from, p.id))
        self._events = sorted(drift_events or [], key=lambda e: (e.time, e.id))
        self._forgets = sorted(forget_requests or [], key=lambda f: (f.time, f.id))

    @classmethod
    def of(cls, persona: Persona) -> PersonaTimeline:
        return cls(persona.preferences, persona.drift_events, persona.forget_requests, persona.others_preferences)

    @property
    def preferences(self) -> list[Preference]:
        """The user's own preferences, every interval."""
        return list(self._preferences)

    @property
    def others(self) -> list[Preference]:
        """Preferences of the people in the user's life, every interval."""
        return list(self._others)

    @property
    def drift_events(self) -> list[DriftEvent]:
        return list(self._events)

    @property
    def forget_requests(self) -> list[ForgetRequest]:
        return list(self._forgets)

    def at(self, t: datetime) -> list[Preference]:
        """The preferences held at ``t``, ordered by topic and option."""
        return sorted((p for p in self._preferences if p.held_at(t)), key=lambda p: (p.topic, p.option))

    def others_at(self, t: datetime, owner: str | None = None) -> list[Preference]:
        """Preferences of people in the user's life held at ``t`` (of one ``owner`` if given),
        ordered by owner, topic and option."""
        return sorted(
            (p for p in self._others if p.held_at(t) and (owner is None or p.owner == owner)),
            key=lambda p: (p.owner, p.topic, p.option),
        )

    def held_on(self, topic: str, t: datetime) -> list[Preference]:
        """Preferences on ``topic`` held at ``t`` (one for an exclusive topic, several for a multi one)."""
        return [p for p in self.at(t) if p.topic == topic]

    def previous_on(self, topic: str, t: datetime) -> Preference | None:
        """The most recent preference on ``topic`` replaced or dropped before ``t`` (the stale one)."""
        replaced = [e for e in self._events if e.topic == topic and e.time <= t and e.old is not None]
        return replaced[-1].old if replaced else None

    def events_between(self, start: datetime, end: datetime) -> list[DriftEvent]:
        return [e for e in self._events if start <= e.time < end]

    def forgotten_by(self, t: datetime) -> list[ForgetRequest]:
        """Forgetting requests made before ``t``: what a memory must no longer hold at ``t``."""
        return [f for f in self._forgets if f.time < t]

    def describe(self) -> list[str]:
        """A readable history, oldest first: every preference's interval and every change."""
        lines = []
        for p in self._preferences:
            until = p.valid_to.isoformat(sep=" ", timespec="minutes") if p.valid_to else "now"
            lines.append(
                f"{p.valid_from.isoformat(sep=' ', timespec='minutes')} .. {until}  {p.polarity.value:8s} "
                f"{p.topic}/{p.option}  (strength {p.strength:.2f}, {p.stereotype}"
                f"{', sensitive: ' + p.sensitivity if p.sensitivity else ''})"
            )
        for e in self._events:
            new = f"{e.new.polarity.value} {e.new.option}" if e.new else "dropped"
            old = f"{e.old.polarity.value} {e.old.option}" if e.old else "(new)"
            lines.append(
                f"{e.time.isoformat(sep=' ', timespec='minutes')}  {e.kind}: {e.topic} {old} -> {new}  ({e.cause})"
            )
        for p in self._others:
            lines.append(
                f"{p.valid_from.isoformat(sep=' ', timespec='minutes')} ..        {p.owner}: {p.polarity.value} "
                f"{p.topic}/{p.option}"
            )
        for f in self._forgets:
            lines.append(f"{f.time.isoformat(sep=' ', timespec='minutes')}  asked to forget {f.preference_id}")
        return lines
