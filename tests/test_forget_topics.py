"""Forgetting by topic: a note that implies a preference without naming its topic is forgotten too.

The descriptor vectors of the topic index take ~20 s to build on two CPU threads, once per process;
the ``index`` fixture builds them once for this module (in its setup, not inside one test).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import numpy as np
import pytest

from personasim.agents import ScriptedChatCompletionClient
from personasim.agents.embedding import default_embedder
from personasim.agents.memory import MemorySettings, create_memory, message_content
from personasim.agents.memory.base import forget_subject
from personasim.agents.memory.topics import TopicIndex, item_text, sentences, topic_descriptors, topic_index
from personasim.personas.catalog import load_topic_catalog

T0 = datetime(2025, 3, 1, 9)
# an implicit note about drinks (sparkling water) that names neither "drinks" nor any option keyword
LIME = ("Unlike my friends, I'd do almost anything rather than be stuck adding lime and cucumber slices to a tall "
        "glass of chilled bubbly mineral water.")
# one written here, not taken from the catalog's hint bank
FIZZY = "Every evening I pour myself something fizzy with a squeeze of lemon and lots of ice."
RUST = "I spent Sunday fixing a bug in my Rust side project."  # programming languages
HIKE = "I keep a paper diary of every hike I do in the Alps."  # time in nature, outdoor hobbies
FORGET_DRINKS = "Please forget what I told you about my drinks."
REQUESTS = ("Please forget my preference about {topic}.", "Please forget what I told you about my {topic}.")


@pytest.fixture(scope="module")
def index() -> TopicIndex:
    built = topic_index(default_embedder())
    built.sentence_scores(["warm-up"])  # the descriptor vectors, once for the module
    return built


def _memory(name: str, **settings):
    return create_memory(name, MemorySettings(**settings), ScriptedChatCompletionClient())


def _run(memory, sessions: list[list[tuple[str, str]]], close_last: bool = True):
    async def run():
        for k, session in enumerate(sessions):
            t = T0 + timedelta(days=7 * k)
            for role, text in session:
                await memory.add(message_content(role, text, t))
            if close_last or k < len(sessions) - 1:
                await memory.end_session(t + timedelta(minutes=10))

    asyncio.run(run())
    return memory


def test_item_text_strips_date_tags_and_role_prefixes():
    assert item_text("[2025-01-06] I love tea.") == "I love tea."
    assert item_text("[since 2025-01-06] I love tea.") == "I love tea."
    assert item_text("[2025-01-06T09:00] user: I love tea.") == "I love tea."
    assert item_text("[2025-01-06T09:00] assistant: Try oolong.") == "Try oolong."
    assert item_text("I love tea.") == "I love tea."
    assert sentences("Can you help? I love tea. Thanks!") == ["Can you help?", "I love tea.", "Thanks!"]


def test_descriptors_never_use_the_hint_bank():
    catalog = load_topic_catalog()
    for topic in catalog.topics:
        described = set(topic_descriptors(catalog, topic.id))
        for option in topic.options:
            assert not described & set(option.cues), topic.id
            for polarity in ("likes",) if topic.likes_only else ("likes", "dislikes"):
                hints = {h.text for h in catalog.hints(topic.id, option.id, polarity)}  # type: ignore[arg-type]
                assert not described & hints, topic.id


@pytest.mark.parametrize("request_template", REQUESTS)
def test_every_topic_name_resolves_to_its_topic(request_template):
    catalog = load_topic_catalog()
    resolver = TopicIndex(catalog, embedder=None)  # by name: no vector is needed (nor an embedder)
    for topic in catalog.topics:
        match = resolver.resolve(forget_subject(request_template.format(topic=topic.name)))
        assert match.topics == (topic.id,), (topic.name, match)
        assert match.how == "name"


def test_subjects_that_are_not_a_topic_name(index):
    assert index.resolve("my drink preferences").topics == ("drinks",)
    assert index.resolve("my workouts").topics == ("workout_schedule", "workout_setting", "workout_type")
    assert "drinks" in index.resolve("coffee").topics
    assert index.resolve("spicy food").topics == ("spice_tolerance",)
    assert index.resolve("the weather on Mars").topics == ()


def test_classifier_finds_the_topic_of_notes_that_never_name_it(index):
    settings = MemorySettings()
    k, margin = settings.forget_topic_k, settings.forget_topic_margin
    picnic = f"[2025-01-06T09:00] user: Can you help me plan a picnic for Saturday? {LIME} What should I pack?"
    assert index.about([LIME, FIZZY, picnic, RUST, HIKE], ["drinks"], k, margin) == [True, True, True, False, False]
    assert index.about([RUST], ["programming_language"], k, margin) == [True]
    assert index.about([LIME], ["drinks"], 0, margin) == [False]


def test_topic_index_is_built_once_per_embedder(index):
    assert topic_index(default_embedder()) is index


@pytest.mark.parametrize("name", ["fact_list", "temporal", "agentic"])
def test_forgetting_a_topic_drops_implicit_notes_and_keeps_the_rest(name, index):
    memory = _run(_memory(name), [[("user", LIME), ("user", RUST)], [("user", FIZZY), ("user", HIKE)],
                                  [("user", FORGET_DRINKS)]])
    text = memory.snapshot().text
    assert "cucumber" not in text and "fizzy" not in text, f"{name} kept an implicit note about drinks"
    assert "Rust side project" in text and "hike" in text, f"{name} forgot more than drinks"
    assert "Please forget" not in text


def test_without_the_topic_rule_the_implicit_note_survives(index):
    """The note is far from the word "drinks": similarity to the request alone never reached it."""
    memory = _run(_memory("fact_list", forget_topic_k=0), [[("user", LIME)], [("user", FORGET_DRINKS)]])
    assert "cucumber" in memory.snapshot().text


def test_agentic_memory_forgets_what_is_still_pending(index):
    """Said and asked to forget within one session: the note never reaches the rewrite."""
    memory = _run(_memory("agentic"), [[("user", RUST), ("user", LIME), ("assistant", "Noted."),
                                        ("user", FORGET_DRINKS)]])
    text = memory.snapshot().text
    assert "cucumber" not in text and "Rust side project" in text


class _RecordingClient(ScriptedChatCompletionClient):
    """The scripted client, keeping each request it was sent: what an LLM writer would read."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    async def create(self, messages, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.requests += [m.content for m in messages if isinstance(m.content, str)]
        return await super().create(messages, *args, **kwargs)


def test_a_pending_reply_goes_when_one_of_its_sentences_is_about_the_subject(index):
    """The chatbot's replies are judged by sentence: a long task reply as a whole is far from a
    one-word subject (0.21 here), the sentence about it is not (0.46). The topic rule is off, so
    similarity alone decides."""
    cat = "Your cat can nap on the warm windowsill while you work."
    plan = ["Here is a plan for your week of deep work.", "Block the mornings for writing and keep meetings "
            "after lunch.", "Put your phone in another room during focus blocks."]
    about_cat = " ".join([*plan, cat, "Review what you finished every Friday afternoon."])
    other = " ".join(plan)
    embedder = default_embedder()
    subject = forget_subject("Please forget what I told you about my cat.")
    assert float(embedder.encode([about_cat])[0] @ embedder.encode([subject])[0]) < 0.35  # the case in point

    client = _RecordingClient()
    memory = create_memory("agentic", MemorySettings(forget_topic_k=0), client)
    _run(memory, [[("user", RUST), ("assistant", about_cat), ("assistant", other),
                   ("user", "Please forget what I told you about my cat.")]])
    transcript = client.requests[-1]
    assert "windowsill" not in transcript, "the reply with a sentence about the cat reached the rewrite"
    assert other in transcript and "Rust side project" in transcript
    assert memory.forget_mask([about_cat, other], subject, by_sentence=True) == [True, False]
    assert memory.forget_mask([about_cat, other], subject) == [False, False]


def test_raw_messages_are_forgotten_when_one_sentence_is_about_the_topic(index):
    picnic = f"Can you help me plan a picnic for Saturday? {LIME} What should I pack?"
    memory = _run(_memory("full_history_forgetting"), [[("user", picnic), ("assistant", "Sure."), ("user", RUST)],
                                            [("user", FORGET_DRINKS)]])
    text = memory.snapshot().text
    assert "cucumber" not in text and "picnic" not in text
    assert "Rust side project" in text


def _top2_by_partition(similarity: np.ndarray, slices: list[tuple[int, int]]) -> np.ndarray:
    """The per-topic loop ``TopicIndex._per_topic_top2`` replaced: the reference it must equal."""
    out = np.empty((similarity.shape[0], len(slices)), dtype=np.float32)
    for t, (start, stop) in enumerate(slices):
        block = similarity[:, start:stop]
        if stop - start >= 2:
            out[:, t] = np.partition(block, stop - start - 2, axis=1)[:, -2:].mean(axis=1)
        else:
            out[:, t] = block[:, 0]
    return out


def test_a_sentences_topic_scores_are_the_same_bits_alone_in_any_batch_and_kept(index, monkeypatch):
    """Scores are kept by text, so a row must not depend on the rows computed beside it."""
    catalog = load_topic_catalog()
    texts = [LIME, FIZZY, RUST, HIKE] + [d for t in catalog.topics[:6] for d in topic_descriptors(catalog, t.id)][:60]
    vectors = np.asarray(index.embedder.encode(texts), dtype=np.float32)
    together = index.scores_of_vectors(vectors)
    for i in range(len(texts)):
        assert np.array_equal(index.scores_of_vectors(vectors[i:i + 1])[0], together[i])
    order = np.random.default_rng(1).permutation(len(texts))
    for part in (order[:2], order[:17], order[17:]):
        assert np.array_equal(index.scores_of_vectors(vectors[part]), together[part])
    monkeypatch.setattr(index, "_scores", {})
    monkeypatch.setattr(index, "scores_kept", 20)
    assert np.array_equal(index.sentence_scores(texts[:5]), together[:5])
    assert np.array_equal(index.sentence_scores(texts + texts[:3]), np.concatenate([together, together[:3]]))
    assert len(index._scores) == 20 and list(index._scores) == list(dict.fromkeys(texts))[-20:]


def test_per_topic_top2_gives_the_partition_loops_exact_values():
    """Same float32 bits as a partition per topic, ties (the best twice) and one-descriptor topics included."""
    index = TopicIndex(load_topic_catalog(), embedder=None)
    rng = np.random.default_rng(0)
    width = index._slices[-1][1]
    similarity = rng.standard_normal((300, width)).astype(np.float32)
    similarity[::7] = np.round(similarity[::7], 1)  # many ties
    assert np.array_equal(index._per_topic_top2(similarity), _top2_by_partition(similarity, index._slices))
    singles = [(0, 1), (1, 3), (3, 4), (4, 8)]
    index._slices = singles
    small = np.round(rng.standard_normal((50, 8)), 1).astype(np.float32)
    assert np.array_equal(index._per_topic_top2(small), _top2_by_partition(small, singles))
