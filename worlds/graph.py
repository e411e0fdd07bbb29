"""The world as a graph: domain -> topic -> scenario (networkx), so code can walk the taxonomy."""

from __future__ import annotations

from functools import cache

import networkx as nx

from personasim.personas.catalog import TopicCatalog, load_topic_catalog
from personasim.worlds.scenarios import ScenarioCatalog, load_scenario_catalog


class WorldGraph:
    """Nodes are ``("domain", id)``, ``("topic", id)`` and ``("scenario", id)``; edges point down.

    A scenario may touch topics of several domains, so it can have several topic parents.
    """

    def __init__(self, topics: TopicCatalog, scenarios: ScenarioCatalog) -> None:
        scenarios.check_topics(t.id for t in topics.topics)
        g = nx.DiGraph()
        for topic in topics.topics:
            g.add_node(("domain", topic.domain), kind="domain")
            g.add_node(("topic", topic.id), kind="topic", name=topic.name, sensitivity=topic.sensitivity)
            g.add_edge(("domain", topic.domain), ("topic", topic.id))
        for s in scenarios.scenarios:
            g.add_node(("scenario", s.id), kind="scenario", title=s.title, domain=s.domain)
            for t in s.topics:
                g.add_edge(("topic", t), ("scenario", s.id))
        self.graph = g

    def domains(self) -> list[str]:
        return sorted(n[1] for n in self.graph if n[0] == "domain")

    def topics_in(self, domain: str) -> list[str]:
        return sorted(n[1] for n in self.graph.successors(("domain", domain)))

    def scenarios_for(self, topic: str) -> list[str]:
        return sorted(n[1] for n in self.graph.successors(("topic", topic)))

    def topics_of(self, scenario: str) -> list[str]:
        return sorted(n[1] for n in self.graph.predecessors(("scenario", scenario)))

    def scenarios_in(self, domain: str) -> list[str]:
        """Scenarios reachable from a domain through any of its topics."""
        return sorted({s for t in self.topics_in(domain) for s in self.scenarios_for(t)})


@cache
def default_world() -> WorldGraph:
    return WorldGraph(load_topic_catalog(), load_scenario_catalog())
