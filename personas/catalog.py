"""The preference space: topics, their options, and every way each option can be revealed.

It is data, validated here: one file per domain in ``personas/data/topics/`` plus the shared
sentence templates in ``personas/data/templates.json``. Researchers extend the world by adding
a file, not code. Each option carries *cues* (concrete behaviour that implies it without naming
it); rendered into the templates they form the implicit-hint bank, five kinds of revelation with
several phrasings each, for liking and for disliking.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache, cached_property
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

HintKind = Literal["behaviour", "circumstance", "complaint", "comparison", "anecdote"]
HINT_KINDS: tuple[HintKind, ...] = ("behaviour", "circumstance", "complaint", "comparison", "anecdote")
PolarityName = Literal["likes", "dislikes"]
TopicKind = Literal["exclusive", "multi"]
SensitivityCategory = Literal["health", "finance", "religion", "politics", "sexuality", "family"]

_STOPWORDS = {"and", "the", "with", "for", "from", "into", "your", "food", "style", "time", "very", "more",
              "less", "about", "over", "than", "that", "this"}


class Hint(BaseModel):
    """An implicit revelation: lets an attentive listener infer the option without naming it."""

    kind: HintKind
    text: str = Field(min_length=1)


class TopicOption(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    label: str = Field(description="Noun phrase: 'I love {label}.'")
    keywords: list[str] = Field(min_length=1, description="Words that name the option outright.")
    cues: list[str] = Field(min_length=1, description="Gerund phrases that imply the option without naming it.")
    detail: str = Field(description="Personalised advice that follows 'Since you prefer {label}, '.")
    statement: str | None = Field(default=None, description="A natural explicit statement, if any.")
    hints: list[Hint] = Field(default_factory=list, description="Extra hand-written implicit hints (likes).")

    @cached_property
    def naming_pattern(self) -> re.Pattern[str]:
        """Matches any word that would give this option away (whole words, any case)."""
        words = sorted(self.naming_words(), key=len, reverse=True)
        return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)

    def naming_words(self) -> set[str]:
        """Words that would give the option away; implicit hints must contain none of them."""
        words = {k.lower() for k in self.keywords}
        words |= {w.lower() for w in re.split(r"[\s\-/]+", self.label) if len(w) > 3 and w.lower() not in _STOPWORDS}
        words |= {w for w in self.id.split("_") if len(w) > 3 and w not in _STOPWORDS}
        words.add(self.id.replace("_", " "))
        return words


class Topic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    domain: str = ""
    name: str
    kind: TopicKind
    sensitivity: SensitivityCategory | None = None
    likes_only: bool = Field(
        default=False, description="A state one has (a condition, a situation), never 'dislikes'."
    )
    statement_templates: list[str] | None = Field(
        default=None, description="Overrides the shared 'likes' statements, e.g. 'I live with {label}.'"
    )
    response_template: str | None = Field(
        default=None, description="Overrides the shared response, e.g. 'Since you live with {label}, {detail}'."
    )
    options: list[TopicOption] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique_options(self) -> Topic:
        ids = [o.id for o in self.options]
        if len(set(ids)) != len(ids):
            raise ValueError(f"topic {self.id!r} has duplicate option ids")
        return self

    @property
    def sensitive(self) -> bool:
        return self.sensitivity is not None

    @property
    def exclusive(self) -> bool:
        return self.kind == "exclusive"

    def option(self, option_id: str) -> TopicOption:
        for o in self.options:
            if o.id == option_id:
                return o
        raise KeyError(f"topic {self.id!r} has no option {option_id!r}")


class DomainFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str
    topics: list[Topic] = Field(min_length=1)


class Templates(BaseModel):
    """Sentence templates shared by every topic (``personas/data/templates.json``)."""

    version: int = 1
    statements: dict[PolarityName, list[str]]
    hints: dict[PolarityName, dict[HintKind, list[str]]]
    responses: dict[TopicKind, str]
    generic: list[str] = Field(
        default_factory=list, description="Non-personalised replies: correct when no preference is known."
    )

    @model_validator(mode="after")
    def _complete(self) -> Templates:
        for polarity in ("likes", "dislikes"):
            missing = set(HINT_KINDS) - set(self.hints.get(polarity, {}))  # type: ignore[call-overload]
            if missing:
                raise ValueError(f"hint templates for {polarity} lack kinds {sorted(missing)}")
        return self


class PreferenceStatement(BaseModel):
    topic: str
    option: str
    polarity: PolarityName
    text: str


class TopicCatalog(BaseModel):
    """All topics of all domains, with the templates that turn them into sentences."""

    topics: list[Topic] = Field(min_length=1)
    templates: Templates

    @model_validator(mode="after")
    def _unique_topics(self) -> TopicCatalog:
        ids = [t.id for t in self.topics]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate topic ids in topic catalog: {dupes}")
        return self

    @cached_property
    def _index(self) -> dict[str, Topic]:
        return {t.id: t for t in self.topics}

    def topic(self, topic_id: str) -> Topic:
        found = self._index.get(topic_id)
        if found is None:
            raise KeyError(f"unknown topic {topic_id!r}")
        return found

    @property
    def domains(self) -> list[str]:
        return sorted({t.domain for t in self.topics})

    def topics_in(self, domain: str) -> list[Topic]:
        return [t for t in self.topics if t.domain == domain]

    # -- sentences --------------------------------------------------------------------------
    @cached_property
    def _statement_cache(self) -> dict[tuple[str, str, str], list[str]]:
        return {}

    @cached_property
    def _hint_cache(self) -> dict[tuple[str, str, str, str | None], list[Hint]]:
        return {}

    def statements(self, topic_id: str, option_id: str, polarity: PolarityName) -> list[str]:
        """Explicit first-person statements of one preference (the option's own one first).

        Cached, so millions of preferences share one string object per statement."""
        key = (topic_id, option_id, polarity)
        cached = self._statement_cache.get(key)
        if cached is None:
            topic = self.topic(topic_id)
            option = topic.option(option_id)
            out = [option.statement] if (option.statement and polarity == "likes") else []
            templates = self.templates.statements[polarity]
            if polarity == "likes" and topic.statement_templates:
                templates = topic.statement_templates
            out += [_capitalise(t.format(label=option.label)) for t in templates]
            cached = self._statement_cache[key] = list(dict.fromkeys(out))
        return list(cached)

    def hints(self, topic_id: str, option_id: str, polarity: PolarityName, kind: HintKind | None = None) -> list[Hint]:
        """The implicit-hint bank of one preference: every cue in every template of ``kind``.

        Cached like ``statements``: a session plans its hints from it, and the reply composer's
        sentence index reads every bank once per process."""
        key = (topic_id, option_id, polarity, kind)
        cached = self._hint_cache.get(key)
        if cached is None:
            cached = self._hint_cache[key] = self._hints(topic_id, option_id, polarity, kind)
        return list(cached)

    def hint_texts(self, topic_id: str, option_id: str, polarity: PolarityName) -> list[str]:
        """The texts of ``hints`` (every kind), without building a ``Hint`` for each: the reply
        composer indexes every bank of the catalog, a hundred thousand texts, in each process."""
        return [text for _, text in self._hint_pairs(topic_id, option_id, polarity, None)]

    def _hints(self, topic_id: str, option_id: str, polarity: PolarityName, kind: HintKind | None) -> list[Hint]:
        return [h if isinstance(h, Hint) else Hint(kind=h[0], text=h[1])
                for h in self._hint_pairs(topic_id, option_id, polarity, kind, keep_hints=True)]

    def _hint_pairs(self, topic_id: str, option_id: str, polarity: PolarityName, kind: HintKind | None,
                    keep_hints: bool = False) -> list:
        """(kind, text) per hint in bank order; the option's own hand-written ``Hint`` objects as
        they are when ``keep_hints``."""
        option = self.topic(topic_id).option(option_id)
        kinds = [kind] if kind else list(HINT_KINDS)
        out: list = []
        for k in kinds:
            for template in self.templates.hints[polarity][k]:
                if option.naming_pattern.search(template.replace("{cue}", " ")):
                    continue  # e.g. "Last weekend ..." would name the option "weekend breaks"
                out += [(k, _capitalise(template.format(cue=cue))) for cue in option.cues]
            if polarity == "likes":
                out += [h if keep_hints else (h.kind, h.text) for h in option.hints if h.kind == k]
        return out

    def response(self, topic_id: str, option_id: str) -> str:
        """The assistant advice personalised to liking this option."""
        topic = self.topic(topic_id)
        option = topic.option(option_id)
        template = topic.response_template or self.templates.responses[topic.kind]
        return template.format(label=option.label, detail=option.detail)

    def preference_statements(self) -> Iterator[PreferenceStatement]:
        """Every distinct explicit preference statement: topics x options x polarity x templates."""
        seen: set[str] = set()
        for topic in self.topics:
            for option in topic.options:
                for polarity in ("likes",) if topic.likes_only else ("likes", "dislikes"):
                    for text in self.statements(topic.id, option.id, polarity):  # type: ignore[arg-type]
                        if text not in seen:
                            seen.add(text)
                            yield PreferenceStatement(topic=topic.id, option=option.id, polarity=polarity, text=text)  # type: ignore[arg-type]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def load_topic_catalog(path: str | Path | None = None) -> TopicCatalog:
    """Load and validate a catalog folder (``topics/*.json`` + ``templates.json``); ``None``: the shipped one."""
    if path is None:
        return _shipped_catalog()
    return _parse_folder(Path(path))


@cache
def _shipped_catalog() -> TopicCatalog:
    return _parse_folder(resources.files("personasim.personas").joinpath("data"))


def _parse_folder(folder: Path | Traversable) -> TopicCatalog:
    templates_file = folder.joinpath("templates.json")
    templates = Templates.model_validate(_read_json(templates_file))
    topics: list[Topic] = []
    topic_dir = folder.joinpath("topics")
    files = sorted((f for f in topic_dir.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    if not files:
        raise ValueError(f"no topic files (*.json) in {topic_dir}")
    for f in files:
        try:
            doc = DomainFile.model_validate(_read_json(f))
        except ValidationError as exc:
            raise ValueError(f"invalid topic file {f}: {exc}") from exc
        for topic in doc.topics:
            topics.append(topic.model_copy(update={"domain": doc.domain}))
    try:
        return TopicCatalog(topics=topics, templates=templates)
    except ValidationError as exc:
        raise ValueError(f"invalid topic catalog {folder}: {exc}") from exc


def _read_json(f: Path | Traversable) -> object:
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{f} is not valid JSON: {exc}") from exc
