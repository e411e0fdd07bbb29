"""The scripted chatbot's replies: substantive, specific to the session's task, tailored by memory.

A reply is composed from data, never from the persona's truth: the task is recognised from the
user's opening request (the scenario's intents), its content comes from the scenario's own points
(``worlds/data/scenarios``) and the phrasing of its task kind (``worlds/data/replies.json``), and
the one personal line comes from what the chatbot's live memory says. That line follows the
memory whether it is right or stale, which is what makes a stale memory visible in the
conversation: the user's reaction to it (``user_reaction``) shows whether it still fits.

Memory lines are read the way a model would read a user's own words: a sentence the user said
that expresses liking an option (a statement or an implicit hint of the world's hint bank) is
recognised as that option. Sentences the world does not know (an LLM user's own phrasing) are not
recognised, and the reply then invites the user to say more instead.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from functools import cache, lru_cache
from importlib import resources

from pydantic import BaseModel, ConfigDict

from personasim.agents.memory.base import MEMORY_HEADER, forget_subject, is_forget_request
from personasim.agents.recommendations import RECOMMENDATION_LEAD, mentioned_options
from personasim.agents.tokens import count_tokens
from personasim.personas.catalog import TopicCatalog
from personasim.worlds.scenarios import Scenario, ScenarioCatalog, load_scenario_catalog

__all__ = ["ReplyComposer", "tailored_option", "user_reaction"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LINE_PREFIX = re.compile(r"^(\s*\[[^\]]*\]\s*)+")
_ROLE = re.compile(r"^(user|assistant|system)\s*:\s*", re.IGNORECASE)


class ReplyPhrases(BaseModel):
    """How the assistant words each kind of task (``worlds/data/replies.json``)."""

    model_config = ConfigDict(extra="forbid")

    openers: dict[str, list[str]]
    follow_up_leads: list[str]
    formats: dict[str, dict[str, list[str] | str]]
    elaborations: dict[str, list[str]]
    tailored: list[str]
    invitations: list[str]
    closers: list[str]
    forget_acks: list[str]


@cache
def load_reply_phrases() -> ReplyPhrases:
    text = resources.files("personasim.worlds").joinpath("data/replies.json").read_text(encoding="utf-8")
    return ReplyPhrases.model_validate(json.loads(text))


@cache
def _tailored_patterns() -> list[re.Pattern[str]]:
    return [re.compile(re.escape(t).replace(re.escape("{label}"), r"(?P<label>[^.]+?)") + r"(?:\s|$)")
            for t in load_reply_phrases().tailored]


_LABELS: dict[int, dict[str, list[tuple[str, str]]]] = {}


def tailored_option(reply: str, catalog: TopicCatalog) -> list[tuple[str, str]]:
    """(topic, option) pairs the reply says it was tailored to (a label may belong to several topics)."""
    labels = _LABELS.get(id(catalog))
    if labels is None:
        labels = _LABELS[id(catalog)] = {}
        for t in catalog.topics:
            for o in t.options:
                labels.setdefault(o.label.lower(), []).append((t.id, o.id))
    for pattern in _tailored_patterns():
        match = pattern.search(reply)
        if match:
            return list(labels.get(match.group("label").lower(), []))
    return []


REACTIONS_FITTING = (
    "Yes, that part fits me well.",
    "That part is spot on for me.",
    "Good, that bit suits me.",
)
REACTIONS_OFF = (
    "Hmm, that part doesn't really fit me any more.",
    "That bit isn't quite me these days.",
    "I'm not sure that part suits me now.",
)


def user_reaction(reply: str, likes: Sequence[str], scenario_topics: Sequence[str], catalog: TopicCatalog,
                  rng: random.Random) -> str | None:
    """How the user takes a reply tailored to an option of the task's topics: warmly when they like it
    now, lukewarm when they do not (a stale or wrong memory). Never names the option: a reaction
    reveals no preference of its own."""
    tailored = [(t, o) for t, o in tailored_option(reply, catalog) if t in scenario_topics]
    if not tailored:
        return None
    fits = any(f"{t}/{o}" in likes for t, o in tailored)
    return rng.choice(REACTIONS_FITTING if fits else REACTIONS_OFF)


def _normalise(sentence: str) -> str:
    return " ".join(sentence.lower().split()).rstrip(".!? ")


class _SentenceIndex:
    """Every sentence of the world's statements and hints, to the (topic, option, polarity) it expresses."""

    def __init__(self, catalog: TopicCatalog) -> None:
        index: dict[str, tuple[str, str, str] | None] = {}
        for topic in catalog.topics:
            for option in topic.options:
                for polarity in ("likes", "dislikes"):
                    texts = list(catalog.statements(topic.id, option.id, polarity))  # type: ignore[arg-type]
                    texts += catalog.hint_texts(topic.id, option.id, polarity)  # type: ignore[arg-type]
                    for text in texts:
                        for sentence in _SENTENCE_END.split(text):
                            key = _normalise(sentence)
                            if len(key) < 20:
                                continue
                            found = (topic.id, option.id, polarity)
                            if index.get(key, found) != found:
                                index[key] = None  # said of two options: it tells nothing
                            else:
                                index[key] = found
        self.index = index
        # a memory line is read again at every reply while it is remembered: what it says (and
        # whether the user said it) is worked out once (this was a tenth of a large run's shard)
        self.user_line_reveals = lru_cache(maxsize=65536)(self._user_line_reveals)

    def lookup(self, line: str) -> list[tuple[str, str, str]]:
        body = _ROLE.sub("", _LINE_PREFIX.sub("", line))
        out = []
        for sentence in _SENTENCE_END.split(body):
            found = self.index.get(_normalise(sentence))
            if found is not None:
                out.append(found)
        return out

    def _user_line_reveals(self, line: str) -> tuple[tuple[str, str, str], ...]:
        """What a memory line expresses, unless it is the assistant's (or anyone but the user's)."""
        role = _ROLE.match(_LINE_PREFIX.sub("", line))
        if role is not None and role.group(1).lower() != "user":
            return ()  # the assistant's own past words are not what the user said
        return tuple(self.lookup(line))


_INDEXES: dict[int, _SentenceIndex] = {}


class ReplyComposer:
    """Composes one reply from the messages the chatbot was given (deterministic in them)."""

    def __init__(self, catalog: TopicCatalog, scenarios: ScenarioCatalog | None = None) -> None:
        self.catalog = catalog
        self.scenarios = scenarios or load_scenario_catalog()
        self.phrases = load_reply_phrases()
        self._intents = sorted(
            ((intent, s) for s in self.scenarios.scenarios for intent in s.intents), key=lambda x: -len(x[0])
        )
        # a session's opening is read at each of its replies; bounded, since every session has its own
        self.scenario_of = lru_cache(maxsize=4096)(self._scenario_of)
        self._domain_points: dict[str, list[str]] = {}

    @property
    def sentences(self) -> _SentenceIndex:
        index = _INDEXES.get(id(self.catalog))
        if index is None:
            index = _INDEXES[id(self.catalog)] = _SentenceIndex(self.catalog)
        return index

    def _scenario_of(self, opening: str) -> Scenario | None:
        """The task the user opened the session with, recognised by its request."""
        return next((s for intent, s in self._intents if intent in opening), None)

    def remembered_option(self, memory_lines: Sequence[str], topics: Sequence[str]) -> str | None:
        """The label of the newest liked option of these topics that the memory holds (stale or not)."""
        reveals = self.sentences.user_line_reveals
        for line in reversed(memory_lines):
            for topic, option, polarity in reveals(line):
                if topic in topics and polarity == "likes":
                    return self.catalog.topic(topic).option(option).label
        return None

    def compose(self, conversation: Sequence[tuple[str, str]], memory_lines: Sequence[str], min_tokens: int,
                max_tokens: int) -> str:
        """``conversation``: the session so far as (role, text), the user's message last."""
        last_user = next((text for role, text in reversed(conversation) if role == "user"), "")
        digest = hashlib.blake2b(
            json.dumps([list(conversation), list(memory_lines)]).encode(), digest_size=8).hexdigest()
        rng = random.Random(digest)
        phrases = self.phrases
        if is_forget_request(last_user):
            return rng.choice(phrases.forget_acks).format(subject=forget_subject(last_user).rstrip(".!? "))
        opening = next((text for role, text in conversation if role == "user"), "")
        scenario = self.scenario_of(opening)
        kind = scenario.task if scenario else "plan"
        task = _as_task(scenario.title) if scenario else "get this done"
        earlier = [text for role, text in conversation if role == "assistant"]
        target = rng.randint(min_tokens, max_tokens)

        head: list[str] = []
        if not earlier:
            head.append(rng.choice(phrases.openers[kind]).format(task=task))
        else:
            head.append(rng.choice(phrases.follow_up_leads))
        label = self.remembered_option(memory_lines, scenario.topics) if scenario else None
        if label is not None and (not earlier or rng.random() < 0.3):
            head.append(rng.choice(phrases.tailored).format(label=label))
        elif not earlier and memory_lines == [] and rng.random() < 0.3:
            head.append(rng.choice(phrases.invitations))

        said = " ".join(earlier)
        fresh: list[str] = []
        taken: set[str] = set()  # what fresh holds, for membership
        for pool in self._pools(scenario, kind):  # the task's own points first, then its kind's, then its domain's
            unused = [p for p in pool if p not in taken and p not in said]
            rng.shuffle(unused)
            fresh += unused
            taken.update(unused)
        tail: list[str] = []
        named = mentioned_options(last_user, self.catalog)
        if named and rng.random() < 0.5:  # a suggestion next to what the user named (exposure drift)
            topic_id, option_id = named[0]
            others = [o for o in self.catalog.topic(topic_id).options if o.id != option_id]
            tail.append(f"{RECOMMENDATION_LEAD} {rng.choice(others).label}.")
        tail.append(rng.choice(phrases.closers))

        fixed = count_tokens(" ".join(head + tail))
        body: list[str] = []
        used = fixed
        for sentence in fresh:
            n = count_tokens(sentence) + 2
            if used >= target or used + n > max_tokens:
                break
            body.append(sentence)
            used += n
        if not body and fresh:
            body.append(fresh[0])
        return "\n\n".join([" ".join(head), self._laid_out(kind, body, rng), " ".join(tail)]).strip()

    def _pools(self, scenario: Scenario | None, kind: str) -> list[list[str]]:
        own = list(scenario.points) if scenario else []
        domain: list[str] = []
        if scenario is not None:
            domain = self._domain_points.get(scenario.domain) or []
            if not domain:
                domain = [p for s in self.scenarios.scenarios if s.domain == scenario.domain for p in s.points]
                self._domain_points[scenario.domain] = domain
        return [own, list(self.phrases.elaborations.get(kind, [])), domain]

    def _laid_out(self, kind: str, body: list[str], rng: random.Random) -> str:
        fmt = self.phrases.formats.get(kind, {"intro": [""], "style": "paragraph"})
        intro = rng.choice(list(fmt["intro"])) if fmt.get("intro") else ""
        style = fmt.get("style", "paragraph")
        if style == "numbered":
            text = "\n".join(f"{i}. {s}" for i, s in enumerate(body, start=1))
        elif style == "bullets":
            text = "\n".join(f"- {s}" for s in body)
        else:
            text = " ".join(body)
        return f"{intro}\n{text}" if intro else text


_PERSON = {"my": "your", "me": "you", "i": "you", "myself": "yourself", "mine": "yours", "i'm": "you're"}


def _as_task(title: str) -> str:
    """A scenario title ("Cut my monthly costs") as the task it asks for, addressed to the user
    ("cut your monthly costs")."""
    words = title.split()
    words = [_PERSON.get(w.lower(), w) for w in words]
    text = " ".join(words)
    return text[:1].lower() + text[1:]


def memory_lines_of(system_texts: Sequence[str]) -> list[str]:
    """The lines of the memory the chatbot was handed (``memory_prompt``), if any."""
    lines: list[str] = []
    for text in system_texts:
        if text.startswith(MEMORY_HEADER):
            lines += [line for line in text[len(MEMORY_HEADER):].splitlines() if line.strip()]
    return lines
