"""`personasim personas ...` and `personasim worlds ...`: generate, inspect and browse."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from personasim.terminal import fail

personas_app = typer.Typer(help="Generate and inspect personas.", no_args_is_help=True)
worlds_app = typer.Typer(help="Browse domains, topics and scenarios.", no_args_is_help=True)


@personas_app.command("generate")
def generate(
    n: Annotated[int, typer.Option("--n", min=1, help="How many personas.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same personas.")] = 0,
    out: Annotated[Path, typer.Option(help="Parquet file to write.")] = Path("personas.parquet"),
    months: Annotated[int, typer.Option(min=0, help="Simulated months of drift to apply after generation.")] = 0,
    min_preferences: Annotated[int, typer.Option(help="Fewest preferences per persona.")] = 20,
    max_preferences: Annotated[int, typer.Option(help="Most preferences per persona.")] = 40,
) -> None:
    """Generate N seeded personas (with their timelines if --months > 0) into a Parquet file."""
    from rich.progress import Progress

    from personasim.personas.generator import PopulationConfig
    from personasim.personas.io import write_personas
    from personasim.personas.population import PopulationBuilder

    try:
        config = PopulationConfig(users=n, min_preferences=min_preferences, max_preferences=max_preferences)
    except ValueError as exc:
        fail(str(exc).splitlines()[-1] if "\n" in str(exc) else str(exc))
    if not out.parent.is_dir():
        fail(f"cannot write {out}: directory {out.parent} does not exist")
    builder = PopulationBuilder(config, seed)
    stats = {"preferences": 0, "drift_events": 0}
    started = time.perf_counter()

    def stream():  # type: ignore[no-untyped-def]
        with Progress(console=Console(stderr=True)) as progress:
            task = progress.add_task("generating personas", total=n)
            for persona in builder.personas(n, months=months):
                stats["preferences"] += len(persona.preferences)
                stats["drift_events"] += len(persona.drift_events)
                progress.advance(task)
                yield persona

    count = write_personas(stream(), out)
    elapsed = time.perf_counter() - started
    Console().print(
        f"wrote {count} personas to {out}: {stats['preferences']} preferences "
        f"({stats['preferences'] / count:.1f} per persona), {stats['drift_events']} drift events, "
        f"{count / elapsed:,.0f} personas/s"
    )


@personas_app.command("show")
def show(
    persona_id: Annotated[str, typer.Argument(help="Persona id (e.g. p0000003) or index (3).")],
    file: Annotated[Path, typer.Option("--file", help="Parquet file from `personas generate`.")] = Path(
        "personas.parquet"
    ),
) -> None:
    """Print one persona: demographics, fake sensitive facts, and its timeline of preferences and changes."""
    from personasim.personas.io import read_personas
    from personasim.personas.timeline import PersonaTimeline

    try:
        personas = read_personas(file)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    wanted = persona_id
    match = [p for p in personas if p.id == wanted or (wanted.isdigit() and p.index == int(wanted))]
    if not match:
        fail(f"no persona {wanted!r} in {file} (ids run from {personas[0].id} to {personas[-1].id})")
    p = match[0]
    console = Console()
    d = p.demographics
    console.print(f"[bold]{p.id}[/] {d.name}, {d.age}, {d.gender}, {d.occupation}, {d.city}, {d.country} ({d.locale})")
    if p.sensitive_facts:
        facts = ", ".join(f"{k}={v}" for k, v in p.sensitive_facts.values().items())
        console.print(f"[yellow]fake sensitive facts:[/] {facts}", highlight=False)
    for line in PersonaTimeline.of(p).describe():
        console.print(line, highlight=False)


@worlds_app.command("list")
def worlds_list(
    domain: Annotated[str | None, typer.Option(help="List this domain's topics and scenarios.")] = None,
) -> None:
    """List domains (with topic and scenario counts), or one domain's topics and scenarios."""
    from personasim.worlds.graph import default_world
    from personasim.worlds.scenarios import load_scenario_catalog

    world = default_world()
    console = Console()
    if domain is None:
        table = Table(title="domains")
        for col in ("domain", "topics", "scenarios"):
            table.add_column(col)
        scenarios = load_scenario_catalog()
        for d in world.domains():
            table.add_row(d, str(len(world.topics_in(d))), str(sum(s.domain == d for s in scenarios.scenarios)))
        console.print(table)
        return
    if domain not in world.domains():
        fail(f"unknown domain {domain!r}; choose from {', '.join(world.domains())}")
    table = Table(title=f"topics in {domain}")
    table.add_column("topic")
    table.add_column("scenarios")
    for t in world.topics_in(domain):
        table.add_row(t, ", ".join(world.scenarios_for(t)))
    console.print(table)


@worlds_app.command("show")
def worlds_show(item: Annotated[str, typer.Argument(help="A scenario id or a topic id.")]) -> None:
    """Show a scenario (topics, intents) or a topic (options, cues, hint examples)."""
    from personasim.personas.catalog import load_topic_catalog
    from personasim.worlds.scenarios import load_scenario_catalog

    console = Console()
    scenarios = load_scenario_catalog()
    catalog = load_topic_catalog()
    try:
        s = scenarios.scenario(item)
    except KeyError:
        s = None
    if s is not None:
        console.print(f"[bold]{s.id}[/] ({s.domain}): {s.title}\ntopics: {', '.join(s.topics)}\nlead: {s.lead}")
        for intent in s.intents:
            console.print(f"  - {intent}")
        return
    try:
        topic = catalog.topic(item)
    except KeyError:
        fail(f"{item!r} is neither a scenario nor a topic; see `personasim worlds list`")
    sens = f", sensitive: {topic.sensitivity}" if topic.sensitivity else ""
    console.print(f"[bold]{topic.id}[/] ({topic.domain}, {topic.kind}{sens}): {topic.name}")
    for o in topic.options:
        hint = catalog.hints(topic.id, o.id, "likes", "anecdote")[0].text
        console.print(f"  [bold]{o.id}[/]: {o.label}\n     e.g. {hint}", highlight=False)
