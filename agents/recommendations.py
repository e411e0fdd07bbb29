"""Recommendations in assistant replies, and whether the user accepted them.

The exposure drift model needs to know when the chatbot's own behaviour could move a user: an
assistant reply that recommends an option (names its label) followed by a user turn that accepts.
Detection is by text, so it works the same for the scripted backend and for real LLMs.
"""

from __future__ import annotations

import re

from personasim.personas.catalog import TopicCatalog

RECOMMENDATION_LEAD = "You might also like"
_ACCEPTANCE = re.compile(
    r"\b(I'll give (that|it) a try|I'll try (that|it)|sounds good|I'll do that|let's do that)\b", re.IGNORECASE
)


def accepts(user_text: str) -> bool:
    return bool(_ACCEPTANCE.search(user_text))


_LABEL_INDEX: dict[int, list[tuple[re.Pattern[str], str, str]]] = {}


def _label_index(catalog: TopicCatalog) -> list[tuple[re.Pattern[str], str, str]]:
    index = _LABEL_INDEX.get(id(catalog))
    if index is None:
        index = _LABEL_INDEX[id(catalog)] = [
            (re.compile(rf"\b{re.escape(o.label)}\b", re.IGNORECASE), t.id, o.id)
            for t in catalog.topics for o in t.options if len(o.label) > 3
        ]
    return index


def recommended_options(assistant_text: str, catalog: TopicCatalog) -> list[tuple[str, str]]:
    """(topic, option) pairs whose label follows a recommendation phrase in the reply."""
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+", assistant_text):
        if not re.search(r"\b(might also like|recommend|suggest|you could try|try)\b", sentence, re.IGNORECASE):
            continue
        hits = [(m.span(), t, o) for pattern, t, o in _label_index(catalog) if (m := pattern.search(sentence))]
        # "Korean food" also contains "Korean" (a language): keep only the longest overlapping label
        out += [
            (t, o) for (a, b), t, o in hits
            if not any(c <= a and b <= d and (d - c) > (b - a) for (c, d), _, _ in hits)
        ]
    return out


_KEYWORD_INDEX: dict[int, tuple[re.Pattern[str], dict[str, list[tuple[str, str]]]]] = {}


def _keyword_index(catalog: TopicCatalog) -> tuple[re.Pattern[str], dict[str, list[tuple[str, str]]]]:
    index = _KEYWORD_INDEX.get(id(catalog))
    if index is None:
        owners: dict[str, list[tuple[str, str]]] = {}
        for t in catalog.topics:
            for o in t.options:
                for k in o.keywords:
                    owners.setdefault(k.lower(), []).append((t.id, o.id))
        pattern = re.compile(r"\b(" + trie_pattern(list(owners)) + r")\b", re.IGNORECASE)
        index = _KEYWORD_INDEX[id(catalog)] = (pattern, owners)
    return index


def trie_pattern(words: list[str]) -> str:
    """One regex for many words, as a prefix tree: ``korean(?: food)?`` instead of an alternation.

    Python's ``re`` tries every branch of a flat alternation at every position; a trie shares
    prefixes, which made keyword detection about 10x faster. Longer words win because every
    continuation is tried before the word may end here (greedy ``?``), as in a longest-first
    alternation."""
    trie: dict = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def render(node: dict) -> str:
        ends = "" in node
        branches = [re.escape(char) + render(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends:
            return "(?:" + body + ")?" if len(branches) > 1 or len(body) > 1 else body + "?"
        return body

    return render(trie)


def mentioned_options(user_text: str, catalog: TopicCatalog) -> list[tuple[str, str]]:
    """Options a user message names outright (by keyword), e.g. in an explicit statement."""
    pattern, owners = _keyword_index(catalog)
    found: list[tuple[str, str]] = []
    for match in pattern.finditer(user_text):
        for pair in owners[match.group(1).lower()]:
            if pair not in found:
                found.append(pair)
    return found
