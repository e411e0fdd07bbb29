"""Drift models: how a persona's preferences change between sessions, and why.

Every model edits a persona through :class:`PreferenceEditor` only, which closes a preference's
validity interval and opens its replacement at the same instant, recording a :class:`DriftEvent`
with the model's kind and a cause. That single path is why ``PersonaTimeline.at(t)`` stays exact
and why no persona ever holds contradictory preferences (``consistency.contradictions``).

Models: life events (a change that cascades through the correlation graph), gradual drift
(strength random walk with decay; a preference that fades out is dropped), abrupt reversal
(likes <-> dislikes), seasonal preferences (swap at season boundaries), topic swaps, and exposure
(a hook the simulation calls when the user accepts a recommendation).
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from personasim.personas.catalog import TopicCatalog
from personasim.personas.correlations import Condition, CorrelationGraph, node, parse_node
from personasim.personas.models import DriftEvent, DriftKind, Persona, Polarity, Preference

DEFAULT_CAUSES = (
    "tried something new and liked it better",
    "changed circumstances at home",
    "a friend's recommendation",
    "advice from a professional",
    "a tighter budget",
    "got bored of the old routine",
)


class DriftConfig(BaseModel):
    """Rates are per simulated month (30 days), per held preference unless said otherwise.

    A gap of any length gets the matching probability (1 - (1 - rate) ** months), so drift
    depends on simulated time, not on how often the user happens to talk to the assistant."""

    model_config = ConfigDict(extra="forbid")

    topic_swap: float = Field(default=0.02, ge=0, le=1, description="Replace by another option of the topic.")
    life_event: float = Field(default=0.08, ge=0, le=1, description="Chance of a life event (per persona).")
    reversal: float = Field(default=0.005, ge=0, le=1, description="Likes <-> dislikes (multi-choice topics).")
    gradual_sigma: float = Field(default=0.1, ge=0, le=1, description="Std. dev. of the monthly walk.")
    gradual_decay: float = Field(default=0.05, ge=0, le=1, description="Monthly pull of strength towards 0.5.")
    gradual_threshold: float = Field(default=0.25, gt=0, le=1, description="Strength change recorded as drift.")
    fade_below: float = Field(default=0.1, ge=0, le=1, description="A preference this weak is dropped.")
    seasonal: bool = Field(default=True, description="Swap seasonal preferences at season boundaries.")
    exposure: float = Field(default=0.3, ge=0, le=1, description="Chance an accepted recommendation is adopted.")
    revealed_update_share: float = Field(
        default=0.0, ge=0, le=1,
        description="Floor on the share of the user's revealed own preferences (by topic) that change after "
        "their reveal; between sessions, drift catches up with it. 0 = off: only the random models update.")
    causes: list[str] = Field(default_factory=lambda: list(DEFAULT_CAUSES), min_length=1)


class PreferenceEditor:
    """The only way preferences change: close, open, record."""

    def __init__(self, catalog: TopicCatalog, graph: CorrelationGraph) -> None:
        self.catalog = catalog
        self.graph = graph

    def held(self, persona: Persona) -> list[Preference]:
        return [p for p in persona.preferences if p.valid_to is None]

    def _new(self, persona: Persona, key: str, t: datetime, strength: float, like: Preference | None) -> Preference:
        from personasim.personas.generator import preference_id_for

        topic_id, option_id, polarity = parse_node(key)
        topic = self.catalog.topic(topic_id)
        version = sum(1 for p in persona.preferences if p.topic == topic_id)
        return Preference(
            id=preference_id_for(persona.id, topic_id, option_id, version),
            persona_id=persona.id, domain=topic.domain, topic=topic_id, option=option_id,
            statement=self.catalog.statements(topic_id, option_id, polarity)[0],  # type: ignore[arg-type]
            polarity=Polarity(polarity), strength=round(min(max(strength, 0.0), 1.0), 3),
            sensitive=topic.sensitive, sensitivity=topic.sensitivity,
            stereotype=like.stereotype if like is not None and like.option == option_id else "neutral",
            valid_from=t, valid_to=None,
        )

    def _record(self, persona: Persona, t: datetime, kind: DriftKind, cause: str, old: Preference | None,
                new: Preference | None) -> DriftEvent:
        topic = old.topic if old is not None else new.topic  # type: ignore[union-attr]
        event = DriftEvent(
            id=f"{persona.id}/drift/{len(persona.drift_events)}", persona_id=persona.id, time=t, kind=kind,
            cause=cause, topic=topic, old=old.copy() if old else None, new=new.copy() if new else None,
        )
        persona.drift_events.append(event)
        return event

    def replace(self, persona: Persona, old: Preference, key: str | None, t: datetime, kind: DriftKind,
                cause: str, strength: float | None = None) -> list[DriftEvent]:
        """Close ``old`` at ``t`` and, unless ``key`` is None, open ``key`` in its place.

        If the persona already holds ``key`` (a multi-option topic: the warm season turns "hot
        cocoa" into "cocktails", already liked), ``old`` just ends: never two open copies of one
        preference."""
        if key is not None and any(p.key == key for p in self.held(persona) if p is not old):
            key = None
        if t <= old.valid_from:  # never an empty or inverted interval
            t = old.valid_from + timedelta(seconds=1)
        old.valid_to = t
        new = None
        if key is not None:
            new = self._new(persona, key, t, old.strength if strength is None else strength, old)
            persona.preferences.append(new)
        events = [self._record(persona, t, kind, cause, old, new)]
        if new is not None:
            events += self._resolve_conflicts(persona, new, t, kind, cause)
        return events

    def adopt(self, persona: Persona, key: str, t: datetime, kind: DriftKind, cause: str,
              strength: float = 0.7) -> list[DriftEvent]:
        """Make the persona hold ``key``, replacing whatever on its topic conflicts with it."""
        topic_id, option_id, polarity = parse_node(key)
        topic = self.catalog.topic(topic_id)
        held = self.held(persona)
        if any(p.key == key for p in held):
            return []
        same_option = next((p for p in held if p.topic == topic_id and p.option == option_id), None)
        if same_option is not None:
            return self.replace(persona, same_option, key, t, kind, cause, strength)
        if topic.exclusive and polarity == "likes":
            current = next((p for p in held if p.topic == topic_id and p.polarity == "likes"), None)
            if current is not None:
                return self.replace(persona, current, key, t, kind, cause, strength)
        # nothing to replace: a newly acquired preference, recorded with no old one
        new = self._new(persona, key, t, strength, None)
        persona.preferences.append(new)
        event = self._record(persona, t, kind, cause, None, new)
        return [event, *self._resolve_conflicts(persona, new, t, kind, cause)]

    def _resolve_conflicts(self, persona: Persona, new: Preference, t: datetime, kind: DriftKind,
                           cause: str) -> list[DriftEvent]:
        events = []
        excluded = self.graph.excluded(new.key)
        for p in self.held(persona):
            if p is not new and p.key in excluded:
                events += self.replace(persona, p, None, t, kind, f"{cause} (no longer compatible)")
        return events


class DriftModel:
    """Base: ``apply_between`` changes a persona in ``(start, end)`` and returns the events."""

    def __init__(self, editor: PreferenceEditor, config: DriftConfig) -> None:
        self.editor = editor
        self.config = config
        self.months = 1.0  # length of the gap being drifted; the pipeline sets it

    def apply_between(self, persona: Persona, start: datetime, end: datetime, rng: random.Random) -> list[DriftEvent]:
        raise NotImplementedError

    def chance(self, monthly_rate: float) -> float:
        """Probability of an event with ``monthly_rate`` over the current gap."""
        return 1.0 - (1.0 - monthly_rate) ** self.months

    def _instant(self, start: datetime, end: datetime, rng: random.Random) -> datetime:
        """Edits within one call happen in processing order: each instant after the previous one."""
        cursor = getattr(self, "_cursor", None)
        if cursor is None or not (start <= cursor[0] < end) or cursor[1] is not rng:
            cursor = (start, rng)
        t = cursor[0] + (end - cursor[0]) * rng.uniform(0.05, 0.3)
        t = max(t.replace(microsecond=0), cursor[0])
        self._cursor = (t, rng)
        return t


class TopicSwapDrift(DriftModel):
    """A liked option is replaced by another option of the same topic."""

    def apply_between(self, persona, start, end, rng):  # type: ignore[no-untyped-def]
        events: list[DriftEvent] = []
        chance = self.chance(self.config.topic_swap)
        for old in sorted(self.editor.held(persona), key=lambda p: p.id):
            if old.valid_to is not None or old.polarity != "likes" or rng.random() >= chance:
                continue
            topic = self.editor.catalog.topic(old.topic)
            taken = {p.option for p in self.editor.held(persona) if p.topic == old.topic}
            alternatives = [o.id for o in topic.options if o.id not in taken]
            if not alternatives:
                continue
            key = node(old.topic, rng.choice(alternatives), "likes")
            if key in set().union(*(self.editor.graph.excluded(p.key) for p in self.editor.held(persona))):
                continue
            events += self.editor.replace(persona, old, key, self._instant(start, end, rng), "topic_swap",
                                          rng.choice(self.config.causes), strength=rng.uniform(0.4, 1.0))
        return events


class RevealedUpdateDrift(DriftModel):
    """Planned updates: keep the share of revealed own preferences that changed at a floor.

    The random models change what a user holds whether or not the user ever mentioned it, so how
    many *revealed* preferences change is left to chance: a 20-preference user who revealed ten
    may see two of them change, and a benchmark of memory under drift then has nothing to ask that
    user about drift. This model catches up between sessions: when fewer than
    ``revealed_update_share`` of the topics revealed so far have changed since their reveal, it
    changes enough of the others (a liked option swapped for another, else a reversal, else the
    preference dropped), preferring topics the user has not asked to forget."""

    def __init__(self, editor: PreferenceEditor, config: DriftConfig) -> None:
        super().__init__(editor, config)
        self.revealed: Collection[str] = ()  # preference ids revealed so far; the pipeline sets it

    def apply_between(self, persona, start, end, rng):  # type: ignore[no-untyped-def]
        share = self.config.revealed_update_share
        if share <= 0 or not self.revealed:
            return []
        revealed = [p for p in persona.preferences if p.id in self.revealed and p.is_own]
        topics = {p.topic for p in revealed}
        updated = {e.old.topic for e in persona.drift_events if e.old is not None and e.old.id in self.revealed
                   and (e.new is None or e.new.option != e.old.option or e.new.polarity != e.old.polarity)}
        needed = math.ceil(share * len(topics) - 1e-9) - len(updated & topics)
        if needed <= 0:
            return []
        forgotten = {f.topic for f in persona.forget_requests}
        held = sorted((p for p in self.editor.held(persona) if p.id in self.revealed and p.topic not in updated),
                      key=lambda p: p.id)
        rng.shuffle(held)
        held.sort(key=lambda p: p.topic in forgotten)  # stable: forgotten topics last
        events: list[DriftEvent] = []
        for old in held[:needed]:
            if old.valid_to is None:
                events += self._update(persona, old, self._instant(start, end, rng), rng)
        return events

    def _update(self, persona: Persona, old: Preference, t: datetime, rng: random.Random) -> list[DriftEvent]:
        topic = self.editor.catalog.topic(old.topic)
        blocked = set().union(*(self.editor.graph.excluded(p.key) for p in self.editor.held(persona) if p is not old))
        taken = {p.option for p in self.editor.held(persona) if p.topic == old.topic}
        swaps = [node(old.topic, o.id, old.polarity.value) for o in topic.options if o.id not in taken]
        swaps = [k for k in swaps if k not in blocked]
        cause = rng.choice(self.config.causes)
        if swaps:
            return self.editor.replace(persona, old, rng.choice(swaps), t, "topic_swap", cause,
                                       strength=rng.uniform(0.4, 1.0))
        flipped = node(old.topic, old.option, "dislikes" if old.polarity == "likes" else "likes")
        if not (topic.exclusive or topic.likes_only) and flipped not in blocked:
            return self.editor.replace(persona, old, flipped, t, "reversal", cause)
        return self.editor.replace(persona, old, None, t, "gradual", "interest faded over time")


class ReversalDrift(DriftModel):
    """Abrupt reversal: a liked option becomes disliked, or the other way round (multi-choice topics)."""

    def apply_between(self, persona, start, end, rng):  # type: ignore[no-untyped-def]
        events: list[DriftEvent] = []
        for old in sorted(self.editor.held(persona), key=lambda p: p.id):
            topic = self.editor.catalog.topic(old.topic)
            if old.valid_to is not None or topic.exclusive or topic.likes_only:
                continue
            if rng.random() >= self.chance(self.config.reversal):
                continue
            flipped = "dislikes" if old.polarity == "likes" else "likes"
            cause = "a bad experience changed their mind" if flipped == "dislikes" else "came round to it"
            events += self.editor.replace(persona, old, node(old.topic, old.option, flipped),
                                          self._instant(start, end, rng), "reversal", cause)
        return events


class GradualDrift(DriftModel):
    """Strength follows a random walk pulled towards 0.5; big moves are recorded, faded ones dropped."""

    def apply_between(self, persona, start, end, rng):  # type: ignore[no-untyped-def]
        cfg = self.config
        events: list[DriftEvent] = []
        if cfg.gradual_sigma == 0:
            return events
        for old in sorted(self.editor.held(persona), key=lambda p: p.id):
            pull = 1.0 - (1.0 - cfg.gradual_decay) ** self.months
            step = rng.gauss(0.0, cfg.gradual_sigma * self.months**0.5)
            proposed = old.strength + pull * (0.5 - old.strength) + step
            proposed = min(max(proposed, 0.0), 1.0)
            if proposed < cfg.fade_below:
                events += self.editor.replace(persona, old, None, self._instant(start, end, rng), "gradual",
                                              "interest faded over time")
            elif abs(proposed - old.strength) >= cfg.gradual_threshold:
                cause = "growing keener over time" if proposed > old.strength else "cooling off over time"
                events += self.editor.replace(persona, old, old.key, self._instant(start, end, rng), "gradual",
                                              cause, strength=proposed)
        return events


class LifeEventDrift(DriftModel):
    """A life event (moving, a new job, a diet change, a child ...) changes a set of correlated preferences."""

    def __init__(self, editor: PreferenceEditor, config: DriftConfig, events: list[LifeEvent]) -> None:
        super().__init__(editor, config)
        self.events = events

    def apply_between(self, persona, start, end, rng):  # type: ignore[no-untyped-def]
        if not self.events or rng.random() >= self.chance(self.config.life_event):
            return []
        eligible = [e for e in self.events if e.when is None or e.when.matches(persona.demographics)]
        if not eligible:
            return []
        life = rng.choice(eligible)
        t = self._instant(start, end, rng)
        out: list[DriftEvent] = []
        for key in life.adopt:
            out += self.editor.adopt(persona, key, t, "life_event", life.cause)
            for implied, probability in self.editor.graph.implied(key):
                if rng.random() < probability:
                    out += self.editor.adopt(persona, implied, t, "life_event", f"{life.cause} (knock-on)")
        return out


class SeasonalDrift(DriftModel):
    """Seasonal preferences switch at the boundary between the warm and the cold half of the year."""

    def __init__(self, editor: PreferenceEditor, config: DriftConfig, pairs: list[SeasonalPair]) -> None:
        super().__init__(editor, config)
        self.pairs = pairs

    @staticmethod
    def season(t: datetime) -> str:
        return "warm" if 4 <= t.month <= 9 else "cold"

    def apply_between(self, persona, start, end, rng):  # type: ignore[no-untyped-def]
        if not self.config.seasonal or self.season(start) == self.season(end):
            return []
        boundary = self._instant(start, end, rng)
        to_season = self.season(end)
        out: list[DriftEvent] = []
        for pair in self.pairs:
            src, dst = (pair.cold, pair.warm) if to_season == "warm" else (pair.warm, pair.cold)
            held = next((p for p in self.editor.held(persona) if p.key == src), None)
            if held is not None:
                out += self.editor.replace(persona, held, dst, boundary, "seasonal", f"the {to_season} season began")
        return out


class ExposureDrift:
    """Hook for the simulation: the user accepted a recommendation; maybe it changes what they like."""

    def __init__(self, editor: PreferenceEditor, config: DriftConfig) -> None:
        self.editor = editor
        self.config = config

    def on_exposure(self, persona: Persona, topic: str, option: str, t: datetime,
                    rng: random.Random) -> list[DriftEvent]:
        key = node(topic, option, "likes")
        if any(p.key == key for p in self.editor.held(persona)) or rng.random() >= self.config.exposure:
            return []
        blocked = set().union(*(self.editor.graph.excluded(p.key) for p in self.editor.held(persona)))
        if key in blocked:
            return []
        return self.editor.adopt(persona, key, t, "exposure", "accepted the assistant's recommendation")


class LifeEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    cause: str
    adopt: list[str] = Field(min_length=1, description="Preference nodes the event makes the persona hold.")
    when: Condition | None = None


class SeasonalPair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warm: str
    cold: str


class DriftData(BaseModel):
    """Life events and seasonal pairs (``personas/data/drift.json``)."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    life_events: list[LifeEvent] = Field(default_factory=list)
    seasonal: list[SeasonalPair] = Field(default_factory=list)

    def check(self, graph: CorrelationGraph, catalog: TopicCatalog) -> DriftData:
        keys = [k for e in self.life_events for k in e.adopt] + [k for p in self.seasonal for k in (p.warm, p.cold)]
        for key in keys:
            graph._check(key, catalog)
        return self


def load_drift_data(catalog: TopicCatalog, graph: CorrelationGraph, path: str | None = None) -> DriftData:
    import json
    from importlib import resources
    from pathlib import Path

    if path is None:
        text = resources.files("personasim.personas").joinpath("data/drift.json").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    try:
        return DriftData.model_validate(json.loads(text)).check(graph, catalog)
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"invalid drift data {path or 'personasim/personas/data/drift.json'}: {exc}") from exc


class DriftPipeline:
    """All drift models in a fixed order; what the simulation calls between two sessions."""

    def __init__(self, catalog: TopicCatalog, graph: CorrelationGraph, config: DriftConfig,
                 life_events: list[LifeEvent] | None = None, seasonal: list[SeasonalPair] | None = None) -> None:
        self.editor = PreferenceEditor(catalog, graph)
        self.models: list[DriftModel] = [
            LifeEventDrift(self.editor, config, life_events or []),
            SeasonalDrift(self.editor, config, seasonal or []),
            TopicSwapDrift(self.editor, config),
            ReversalDrift(self.editor, config),
            GradualDrift(self.editor, config),
        ]
        self.planned: RevealedUpdateDrift | None = None
        if config.revealed_update_share > 0:  # off by default: adding a model re-slices every gap's times
            self.planned = RevealedUpdateDrift(self.editor, config)
            self.models.append(self.planned)
        self.exposure = ExposureDrift(self.editor, config)

    def apply_between(self, persona: Persona, start: datetime, end: datetime, rng: random.Random,
                      revealed: Collection[str] = ()) -> list[DriftEvent]:
        """Each model acts in its own slice of the gap, in order, so intervals never overlap.

        ``revealed``: the preference ids the user has revealed so far (planned updates keep a share
        of them changing; the random models ignore it)."""
        if end <= start:
            return []
        if self.planned is not None:
            self.planned.revealed = revealed
        events: list[DriftEvent] = []
        slice_ = (end - start) / len(self.models)
        months = (end - start) / timedelta(days=30)
        for i, model in enumerate(self.models):
            model.months = months
            events += model.apply_between(persona, start + slice_ * i, start + slice_ * (i + 1), rng)
        return sorted(events, key=lambda e: (e.time, e.id))
