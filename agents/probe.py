"""Consistency probes: interview a simulated user about a topic and check the answer against truth.

LLM user simulators drift from their persona by accident; the simulator also drifts personas on
purpose. Asking "what do you prefer about X?" on a schedule, and matching the answer (MiniLM) to
the topic's options, separates the two: an answer that no longer matches the timeline is
accidental drift of the simulator, measured per user and session.
"""

from __future__ import annotations

from datetime import datetime

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient
from pydantic import BaseModel

from personasim.agents.directive import ProbeDirective, render_directive
from personasim.personas.catalog import TopicCatalog
from personasim.personas.models import Persona, Polarity
from personasim.personas.timeline import PersonaTimeline


class ProbeResult(BaseModel):
    topic: str
    question: str
    answer: str
    predicted_option: str
    true_options: list[str]
    consistent: bool


def persona_state_prompt(persona: Persona, t: datetime, catalog: TopicCatalog) -> str:
    """The persona's true state at ``t``, as an LLM user simulator is told it (never to be recited)."""
    lines = [f"- {p.statement}" for p in PersonaTimeline.of(persona).at(t)]
    return "What is true of you right now (act on it; never list it outright):\n" + "\n".join(lines)


async def probe_user(
    client: ChatCompletionClient, persona: Persona, t: datetime, topic_id: str, catalog: TopicCatalog, embedder: object
) -> ProbeResult:
    topic = catalog.topic(topic_id)
    held = [p for p in PersonaTimeline.of(persona).at(t) if p.topic == topic_id]
    liked = [p.option for p in held if p.polarity == Polarity.LIKES]
    directive = ProbeDirective(topic=topic_id, topic_name=topic.name,
                               held_statements=[p.statement for p in held if p.polarity == Polarity.LIKES])
    d = persona.demographics
    system = (
        f"You are {d.name}, a {d.age}-year-old {d.occupation}. An interviewer asks about your tastes. "
        "Answer honestly in one or two sentences, in the first person.\n\n"
        + persona_state_prompt(persona, t, catalog) + "\n\n" + render_directive(directive)
    )
    question = f"Quick question: what do you prefer when it comes to {topic.name}?"
    agent = AssistantAgent("user", model_client=client, system_message=system)
    response = await agent.on_messages([TextMessage(content=question, source="interviewer")], CancellationToken())
    answer = response.chat_message.to_text()
    statements = [catalog.statements(topic_id, o.id, "likes")[0] for o in topic.options]
    scores = embedder.encode(statements) @ embedder.encode([answer])[0]  # type: ignore[attr-defined]
    predicted = topic.options[int(scores.argmax())].id
    return ProbeResult(topic=topic_id, question=question, answer=answer, predicted_option=predicted,
                       true_options=liked, consistent=predicted in liked)
