"""What makes a set of preferences contradictory. Generation and every drift model keep to it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from personasim.personas.catalog import TopicCatalog
from personasim.personas.correlations import CorrelationGraph
from personasim.personas.models import Preference


def contradictions(
    held: Iterable[Preference], catalog: TopicCatalog, graph: CorrelationGraph | None = None
) -> list[str]:
    """Every reason ``held`` (preferences held at one instant) is contradictory; empty if it is not.

    - an option both liked and disliked;
    - two liked options of an exclusive topic (one diet, one home type ...);
    - a pair the correlation graph excludes (e.g. likes vegan and likes steakhouses).
    """
    prefs = list(held)
    problems: list[str] = []
    by_option = Counter((p.topic, p.option) for p in prefs)
    problems += [f"{t}/{o} held twice" for (t, o), n in by_option.items() if n > 1]
    likes_per_topic = Counter(p.topic for p in prefs if p.polarity == "likes" and catalog.topic(p.topic).exclusive)
    problems += [f"{t}: {n} options liked in an exclusive topic" for t, n in likes_per_topic.items() if n > 1]
    if graph is not None:
        keys = {p.key for p in prefs}
        for k in keys:
            for other in graph.excluded(k):
                if other in keys and k < other:
                    problems.append(f"{k} excludes {other}")
    return sorted(problems)
