"""Which catalog topics a memory item is about, so that forgetting reaches notes that never name it.

A user who says "Please forget what I told you about my drinks" may have told the memory about
drinks only implicitly ("Unlike my friends, I'd do almost anything rather than be stuck adding lime
and cucumber slices to a tall glass of chilled bubbly mineral water"). Such a note is far from the
word "drinks" (MiniLM cosine about 0.2), so similarity to the request alone keeps it. A memory does
not know the truth, but it knows the world's topic catalog, and that is enough to ask a better
question: of all 170 topics, which is this note most likely about?

``TopicIndex`` answers it with MiniLM similarity to per-topic *descriptors* built from what the
catalog says openly about a topic (``topic_descriptors``): its name, its options' labels and
keywords, their explicit statements and the advice the chatbot gives for each option. It never
uses the catalog's implicit-hint bank (the cues and the hints rendered from them): that is the
held-out test of this very question (``bench/forget_topics.py``), and an LLM user writes hints of
its own. The advice, though, was written with the cues in mind, so the benchmark also reports
recall without it (0.67) and on the hints that share no word with it (0.81): on hints the catalog
did not anticipate, expect recall nearer those figures than the bank's 0.95.

An item is scored one sentence at a time (a raw message is about a topic if any of its sentences
is), a topic's score being the mean of its two best descriptors in a space centred on the
descriptors' mean; a topic counts as one of the sentence's topics when it ranks among its ``k``
best and within ``margin`` of its best score. ``k`` and ``margin`` are ``MemorySettings`` fields,
chosen by the benchmark (recall on the hint bank against deletions of other topics' hints).

Cost: the descriptor vectors (about 12k short texts) take ~20 s on two CPU threads, once per
process and embedder (``topic_index``), on the first forget request that names a topic; after
that, classifying 1,000 new items takes a few seconds (their sentences are embedded once).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from personasim.personas.catalog import TopicCatalog, load_topic_catalog

_TAGS = re.compile(r"^(\s*\[[^\]]*\]\s*)+")
_ROLE = re.compile(r"^(user|assistant|system)\s*:\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+")
_ADVICE_PARTS = re.compile(r"[,;]|\band\b|\bor\b")
# words a forget request wraps around a topic name ("my drink preferences", "the answer length stuff")
_FILLER = {"my", "your", "the", "a", "an", "about", "preference", "preferences", "pref", "prefs", "stuff", "things",
           "thing", "taste", "tastes", "choice", "choices", "what", "i", "told", "you", "said", "everything", "of",
           "in", "on", "for", "regarding", "around", "all", "any", "favourite", "favorite", "like", "how", "is",
           "are", "way", "much"}


def item_text(item: str) -> str:
    """The words of a memory item: leading tags ("[2025-01-06]", "[since ...]") and a role prefix
    ("user: ") removed, since they are the same on every item and only blur its meaning."""
    text = _TAGS.sub("", item).strip()
    return _ROLE.sub("", text, count=1).strip()


def sentences(text: str) -> list[str]:
    """The sentences of one item's text (the whole text when it has no sentence break)."""
    parts = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    return parts or ([text.strip()] if text.strip() else [])


def _stem(word: str) -> str:
    """Crude singular, so that "drink" finds "drinks" and "pets" finds "pet"."""
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _words(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower())]


@dataclass(frozen=True)
class TopicMatch:
    """The topics a forget subject resolved to, and how (``name``: the topic's name is in the
    subject; ``nearest``: the closest topic by meaning; ``none``: nothing close enough)."""

    topics: tuple[str, ...]
    how: str
    similarity: float = 1.0


class TopicIndex:
    """Classifies texts into the catalog's topics by MiniLM similarity to per-topic descriptors.

    Build one per (catalog, embedder) through ``topic_index``: the descriptor vectors (a few
    thousand short texts) are computed once per process.
    """

    #: A subject that names no topic resolves to its nearest topics only when at least this similar
    #: (below it, "the weather on Mars" would erase a whole unrelated topic) ...
    resolve_threshold = 0.5
    #: ... and to every topic this close to the nearest ("music": playing music and music genres).
    resolve_tie = 0.03
    #: Labels and keywords count this much less than a topic's own name when resolving.
    label_discount = 0.15
    #: A word of topic names is distinctive when at most this many topic names use it ("workout"
    #: is; "habits", "style" and "pet" are not).
    distinctive_names = 3
    #: Sentences whose topic scores are kept (680 bytes each: 14 MB).
    scores_kept = 20_000

    def __init__(self, catalog: TopicCatalog, embedder: Any, advice: bool = True) -> None:
        self.catalog = catalog
        self.embedder = embedder
        self.advice = advice
        self.topic_ids = [t.id for t in catalog.topics]
        self._position = {t: i for i, t in enumerate(self.topic_ids)}
        self._names = {" ".join(_words(t.name)): t.id for t in catalog.topics}
        texts: list[str] = []
        owner: list[int] = []
        names: list[str] = []
        names_owner: list[int] = []
        for i, topic in enumerate(catalog.topics):
            for text in dict.fromkeys(topic_descriptors(catalog, topic.id, advice)):
                texts.append(text)
                owner.append(i)
            for text in dict.fromkeys([topic.name] + [w for o in topic.options for w in (o.label, *o.keywords)]):
                names.append(text)
                names_owner.append(i)
        name_words = {t.id: {w for w in _words(t.name) if w not in _FILLER} for t in catalog.topics}
        frequency: dict[str, int] = {}
        for ws in name_words.values():
            for w in ws:
                frequency[w] = frequency.get(w, 0) + 1
        self._distinct_words = {t: {w for w in ws if frequency[w] <= self.distinctive_names and len(w) > 2}
                                for t, ws in name_words.items()}
        self._descriptors = texts
        self._owner = np.asarray(owner)
        bounds = np.flatnonzero(np.r_[True, np.diff(self._owner) != 0, True])
        self._slices = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self._name_texts = names
        self._name_owner = np.asarray(names_owner)
        # 0 for a topic's own name (the first of its texts), 1 for its option labels and keywords
        self._name_kind = np.asarray([0 if i == 0 or names_owner[i - 1] != o else 1 for i, o in enumerate(names_owner)])
        self._center: np.ndarray | None = None
        self._vectors: np.ndarray | None = None
        self._name_vectors: np.ndarray | None = None
        self._lock = threading.Lock()
        self._scores: dict[str, np.ndarray] = {}

    @property
    def fixed_texts(self) -> tuple[list[str], list[str]]:
        """The two text sets the index embeds whole, through the embedder's disk store: the topic
        descriptors and the topic names, labels and keywords."""
        return self._descriptors, self._name_texts

    # -- vectors, once ----------------------------------------------------------------------
    def _ensure(self) -> np.ndarray:
        """The descriptor vectors, centred on their mean: every sentence shares a first-person
        "I ..." direction that says nothing about its topic, and removing it sharpens the ranking
        of topics (bench/forget_topics.py).

        Held as one contiguous column per descriptor: a forget request multiplies a few sentences
        by all 12k descriptors, which reads the whole matrix, and the product with a few rows runs
        30% faster from this layout than from the transposed rows (11 rows: 2.35 ms against 3.31),
        with the same bits."""
        with self._lock:
            if self._vectors is None:
                raw = np.asarray(self._encode_stored(self._descriptors), dtype=np.float32)
                self._center = raw.mean(axis=0)
                self._vectors = np.ascontiguousarray(self._centre(raw, self._center).T)
            return self._vectors

    def _ensure_names(self) -> np.ndarray:
        """Vectors of topic names, option labels and keywords (for resolving subjects; a few seconds)."""
        with self._lock:
            if self._name_vectors is None:
                self._name_vectors = np.asarray(self._encode_stored(self._name_texts), dtype=np.float32)
            return self._name_vectors

    def _encode_stored(self, texts: list[str]) -> np.ndarray:
        """Through the embedder's disk store when it has one (test doubles may not)."""
        stored = getattr(self.embedder, "encode_stored", None)
        return stored(texts) if stored is not None else self.embedder.encode(texts)

    @staticmethod
    def _centre(vectors: np.ndarray, center: np.ndarray) -> np.ndarray:
        out = np.asarray(vectors, dtype=np.float32) - center
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)

    def centred(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors moved into the descriptors' centred space (unit norm again)."""
        self._ensure()
        assert self._center is not None
        return self._centre(vectors, self._center)

    def _per_topic_max(self, similarity: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """(rows, descriptors) -> (rows, topics): each topic's best descriptor."""
        out = np.full((similarity.shape[0], len(self.topic_ids)), -1.0, dtype=np.float32)
        np.maximum.at(out.T, owner, similarity.T)
        return out

    def _per_topic_top2(self, similarity: np.ndarray) -> np.ndarray:
        """(rows, descriptors) -> (rows, topics): the mean of each topic's two best descriptors.

        Steadier than the best one alone: one stray descriptor ("cards" in a topic about payments)
        then needs a second to lift its topic (bench: +1 point of recall at the same collateral).
        Whole-matrix reductions rather than a partition per topic (a Python loop over the topics
        was a third of forgetting by topic); the same float32 values (tests/test_forget_topics.py)."""
        starts = np.fromiter((a for a, _ in self._slices), dtype=np.intp, count=len(self._slices))
        lengths = np.fromiter((b - a for a, b in self._slices), dtype=np.intp, count=len(self._slices))
        best = np.maximum.reduceat(similarity, starts, axis=1)
        is_best = similarity == np.repeat(best, lengths, axis=1)
        ties = np.add.reduceat(is_best, starts, axis=1, dtype=np.intp)
        runner_up = np.maximum.reduceat(np.where(is_best, np.float32(-np.inf), similarity), starts, axis=1)
        second = np.where(ties >= 2, best, runner_up)  # the best twice over is its own second
        return np.where(lengths >= 2, (best + second) / np.float32(2), best).astype(np.float32, copy=False)

    # -- subjects ---------------------------------------------------------------------------
    def resolve(self, subject: str) -> TopicMatch:
        """The topic(s) a forget subject ("drinks", "my drink preferences", "coffee") is about.

        In order: the subject is a topic's name (plural or singular, "my ... preferences" around
        it); it contains one (the longest wins); its words are all distinctive words of topic
        names ("my workouts": the three workout topics); else the nearest topic by meaning, scored on
        the topic's name, or on its option labels and keywords at a discount (they are shared
        between topics: "coffee" is a drink and a self-care treat), with every topic within
        ``resolve_tie`` of the best, provided the best reaches ``resolve_threshold``."""
        all_words = _words(subject)
        words = [w for w in all_words if w not in _FILLER]
        joined = " ".join(words)
        if joined in self._names:
            return TopicMatch(topics=(self._names[joined],), how="name")
        padded = f" {' '.join(all_words)} "
        named = [(len(n), t) for n, t in self._names.items() if f" {n} " in padded]
        if named:
            longest = max(length for length, _ in named)
            return TopicMatch(topics=tuple(sorted(t for length, t in named if length == longest)), how="name")
        if words:
            within = sorted(t for t, distinct in self._distinct_words.items() if set(words) <= distinct)
            if within:
                return TopicMatch(topics=tuple(within), how="name words")
        if not joined:
            return TopicMatch(topics=(), how="none", similarity=0.0)
        name_vectors = self._ensure_names()
        similarity = np.asarray(self.embedder.encode([subject]), dtype=np.float32) @ name_vectors.T
        similarity = similarity - self.label_discount * (self._name_kind != 0)[None, :]
        scores = self._per_topic_max(similarity, self._name_owner)[0]
        best = float(scores.max())
        if best < self.resolve_threshold:
            return TopicMatch(topics=(), how="none", similarity=best)
        near = tuple(self.topic_ids[i] for i in np.flatnonzero(scores >= best - self.resolve_tie))
        return TopicMatch(topics=near, how="nearest", similarity=best)

    # -- items ------------------------------------------------------------------------------
    def sentence_scores(self, texts: list[str]) -> np.ndarray:
        """(texts, topics): each text's score for each topic (mean of the topic's two best descriptors).

        Scores are kept by text (``scores_kept``, oldest first out). A forget request classifies
        every sentence the user said, again at each request, and users share sentences from finite
        banks: half the sentences of a 300-user run's requests had been classified before. The
        product against the 12k descriptors was a tenth of a shard's time. A row's scores depend on
        its text alone (``scores_of_vectors``), so a kept row is the row computing it again gives."""
        if not texts:
            return np.zeros((0, len(self.topic_ids)), dtype=np.float32)
        kept = self._scores
        missing = [t for t in dict.fromkeys(texts) if t not in kept]
        computed = dict(zip(missing, self.scores_of_vectors(
            np.asarray(self.embedder.encode(missing), dtype=np.float32)), strict=True)) if missing else {}
        with self._lock:
            out = np.stack([computed[t] if t in computed else kept[t] for t in texts])
            kept.update(computed)
            while len(kept) > self.scores_kept:
                del kept[next(iter(kept))]
        return out

    def scores_of_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """``sentence_scores`` from embeddings already computed (raw MiniLM vectors, one per row).

        A row's bits do not depend on the rows beside it (tested), except that a product of one
        row takes BLAS's matrix-vector path, which sums in another order: a lone row is computed
        beside a copy of itself."""
        descriptors = self._ensure()
        out = np.empty((len(vectors), len(self.topic_ids)), dtype=np.float32)
        for start in range(0, len(vectors), 2048):
            chunk = self.centred(vectors[start:start + 2048])
            if len(chunk) == 1:
                out[start] = self._per_topic_top2(np.repeat(chunk, 2, axis=0) @ descriptors)[0]
            else:
                out[start:start + 2048] = self._per_topic_top2(chunk @ descriptors)
        return out

    def about(self, items: list[str], topics: list[str] | tuple[str, ...], k: int, margin: float) -> list[bool]:
        """For each memory item: is one of its sentences about one of ``topics``?

        About means: the topic ranks among the sentence's ``k`` best topics and scores within
        ``margin`` of the sentence's best topic."""
        columns = [self._position[t] for t in topics if t in self._position]
        if not items or not columns or k <= 0:
            return [False] * len(items)
        owner, texts = item_sentences(items)
        scores = self.sentence_scores(texts)
        hits = topic_hits(scores, columns, k, margin)
        out = [False] * len(items)
        for i, hit in zip(owner, hits, strict=True):
            out[i] = out[i] or bool(hit)
        return out


def item_sentences(items: list[str]) -> tuple[list[int], list[str]]:
    """Every sentence of every item (date tags and role prefixes stripped), with its item's index:
    a note is about a topic when any one of its sentences is, so sentences are classified alone."""
    owner: list[int] = []
    texts: list[str] = []
    for i, item in enumerate(items):
        for sentence in sentences(item_text(item)):
            texts.append(sentence)
            owner.append(i)
    return owner, texts


def topic_descriptors(catalog: TopicCatalog, topic_id: str, advice: bool = True) -> list[str]:
    """What the catalog says openly about one topic: its name, and per option the label, the
    keywords, "{topic}: {label}", the option's own statement if it has one, and either the
    personalised advice the chatbot gives (``advice``: "try single-origin beans from a local
    roastery ...", whole and cut at commas, semicolons, "and" and "or", since a note matches one
    concrete part of it) or, without it, a few templated statements ("I love {label}.", "I can't
    stand {label}."). The templated statements help a little alone and crowd the advice out when
    both are there (bench/forget_topics.py), hence one or the other.

    Never the implicit-hint bank. The advice is not part of it, but it was written with the same
    cues in mind (94% of hints share a content word with their option's advice), so it helps far
    more on the scripted user's hints than it will on an LLM user's: the benchmark reports recall
    with and without it, and on the hints that share no word with the advice."""
    topic = catalog.topic(topic_id)
    out = [topic.name]
    for option in topic.options:
        out += [option.label, *option.keywords, f"{topic.name}: {option.label}"]
        if option.statement:
            out.append(option.statement)
        if advice:
            out.append(option.detail)
            out += [p.strip() for p in _ADVICE_PARTS.split(option.detail) if len(p.split()) >= 2]
        else:
            out += catalog.statements(topic.id, option.id, "likes")[:3]
            if not topic.likes_only:
                out += catalog.statements(topic.id, option.id, "dislikes")[:2]
    return list(dict.fromkeys(t for t in out if t.strip()))


def topic_hits(scores: np.ndarray, columns: list[int], k: int, margin: float) -> np.ndarray:
    """Rows of ``scores`` (texts x topics) for which one of ``columns`` is among the k best topics
    and within ``margin`` of the row's best. Shared by ``TopicIndex.about`` and the benchmark."""
    if scores.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    best = scores.max(axis=1)
    hit = np.zeros(scores.shape[0], dtype=bool)
    for c in columns:
        own = scores[:, c]
        rank = (scores > own[:, None]).sum(axis=1)  # topics strictly better than this one
        hit |= (rank < k) & (own >= best - margin)
    return hit


_indexes: dict[tuple[int, int, bool], tuple[TopicCatalog, Any, TopicIndex]] = {}
_indexes_lock = threading.Lock()


def topic_index(embedder: Any, catalog: TopicCatalog | None = None, advice: bool = True) -> TopicIndex:
    """The process's index for this embedder and catalog (default: the shipped catalog)."""
    catalog = catalog if catalog is not None else load_topic_catalog()
    key = (id(catalog), id(embedder), advice)
    with _indexes_lock:
        found = _indexes.get(key)
        if found is None:
            # the catalog and embedder are kept alive with the index, so their ids stay theirs
            found = _indexes[key] = (catalog, embedder, TopicIndex(catalog, embedder, advice))
        return found[2]
