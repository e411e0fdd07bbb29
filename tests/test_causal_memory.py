"""The causal memory protocol (issue 10, part 3).

A memory strategy builds its state from the conversation before the question's time only and
never sees the question or its options; a user's memory is built once during the simulation and
carried forward across sessions (one snapshot per session, never one per question). Questions
are asked at several checkpoints of each user's timeline, each answered from the memory as it was
then.
"""

from __future__ import annotations

from collections import defaultdict

import duckdb
import pytest

from personasim.agents.memory import MemorySettings, memory_class
from personasim.analysis import answer_items
from personasim.analysis.evaluate import answer_questions
from personasim.analysis.reader import ReaderAnswer
from personasim.sim.rows import QuestionRow
from personasim.sim.store_read import read_questions


class _RecordingReader:
    """Answers (a) every time and records the memory context each question was answered from."""

    name = "recording"

    def __init__(self) -> None:
        self.contexts: list[tuple[str, list[str]]] = []

    def answer(self, context_items: list[str], query: str, options: list[str]) -> ReaderAnswer:
        self.contexts.append((query, list(context_items)))
        return ReaderAnswer(chosen_index=0, scores=[0.0] * len(options))


@pytest.fixture(scope="module")
def store(small_run):
    _, db = small_run
    con = duckdb.connect(str(db), read_only=True)
    (run_id,) = con.execute("SELECT run_id FROM runs").fetchone()
    yield con, run_id
    con.close()


def _memory_states(con, run_id: str, questions: list[QuestionRow], strategies: list[str], monkeypatch):
    """For each (question, strategy): the snapshot id and the memory items handed to the strategy's
    context selection (the strategy's whole state at question time), recorded byte for byte."""
    seen: list[tuple[str, ...]] = []

    def recording_class(name: str):
        real = memory_class(name)

        class Recording:
            @staticmethod
            def select_context(items, query, embedder, settings):
                seen.append(tuple(items))
                return real.select_context(items, query, embedder, settings)

        return Recording

    monkeypatch.setattr(answer_items, "memory_class", recording_class)
    answers = answer_questions(con, run_id, questions, strategies, _RecordingReader(), MemorySettings())
    assert len(seen) == len(answers) == len(questions) * len(strategies)
    # answer_questions walks questions, then strategies: the recorded states line up with the answers
    return {(a.question_id, a.strategy): (a.snapshot_id, items) for a, items in zip(answers, seen, strict=True)}


def test_questions_are_asked_at_three_checkpoints_each_before_the_next_session(store):
    con, run_id = store
    questions = read_questions(con, run_id)
    by_user: dict[str, set] = defaultdict(set)
    for q in questions:
        by_user[q.persona_id].add(q.asked_at)
    assert len(by_user) == 12
    for persona, times in by_user.items():
        assert len(times) >= 3, persona
        sessions = con.execute(
            "SELECT session_index, started_at, ended_at FROM sessions WHERE persona_id = ? ORDER BY session_index",
            [persona],
        ).fetchall()
        for t in times:
            before = [s for s in sessions if s[2] <= t]
            after = [s for s in sessions if s[2] > t]
            assert before, "a checkpoint follows at least one session"
            assert all(s[1] >= t for s in after), "no session is under way at a checkpoint"
    for q in questions:  # the checkpoint is part of the id: the same preference asked twice stays two rows
        label = q.question_id.split("/")[2]
        (index,) = con.execute(
            "SELECT max(session_index) FROM sessions WHERE persona_id = ? AND ended_at <= ?", [q.persona_id, q.asked_at]
        ).fetchone()
        assert label == f"s{index}"


def test_memory_is_built_once_per_session_and_answers_use_the_latest_before_the_question(store):
    con, run_id = store
    per_session = con.execute(
        "SELECT count(*), count(DISTINCT (persona_id, session_index, strategy)) FROM memory_snapshots WHERE run_id = ?",
        [run_id],
    ).fetchone()
    assert per_session[0] == per_session[1] == 12 * 6 * 3, "one snapshot per user, session and strategy"
    rows = con.execute(
        "SELECT q.question_id, a.strategy, q.asked_at, s.time, s.session_index FROM answers a "
        "JOIN questions q USING (run_id, question_id) JOIN memory_snapshots s USING (run_id, snapshot_id) "
        "WHERE a.run_id = ?",
        [run_id],
    ).fetchall()
    assert rows
    for question_id, strategy, asked_at, snap_time, snap_session in rows:
        assert snap_time <= asked_at
        (later,) = con.execute(
            "SELECT count(*) FROM memory_snapshots s JOIN questions q ON q.persona_id = s.persona_id "
            "WHERE q.question_id = ? AND s.strategy = ? AND s.time > ? AND s.time <= ?",
            [question_id, strategy, snap_time, asked_at],
        ).fetchone()
        assert later == 0, "the answer used the latest snapshot before the question"
        assert f"/s{snap_session}/" in question_id


def test_two_questions_for_one_user_at_one_time_receive_identical_memory(store, monkeypatch):
    con, run_id = store
    questions = read_questions(con, run_id)
    strategies = ["none", "full_history", "agentic"]
    states = _memory_states(con, run_id, questions, strategies, monkeypatch)
    groups: dict[tuple, list[str]] = defaultdict(list)
    for q in questions:
        groups[(q.persona_id, q.asked_at)].append(q.question_id)
    shared = [ids for ids in groups.values() if len(ids) > 1]
    assert len(shared) >= 12 * 3 - 3, "most checkpoints ask several questions"
    for ids in shared:
        for strategy in strategies:
            first = states[(ids[0], strategy)]
            for other in ids[1:]:
                assert states[(other, strategy)] == first, (ids[0], other, strategy)
    # and the memory changes between checkpoints of one user: it is carried forward, not frozen
    agentic = defaultdict(set)
    for (persona, _), ids in groups.items():
        agentic[persona].add(states[(ids[0], "agentic")])
    assert all(len(states_) >= 2 for states_ in agentic.values())


def test_changing_a_question_changes_nothing_in_the_memory(store, monkeypatch):
    con, run_id = store
    questions = read_questions(con, run_id)[:60]
    strategies = ["full_history", "agentic"]
    snapshots_before = con.execute(
        "SELECT * FROM memory_snapshots WHERE run_id = ? ORDER BY snapshot_id", [run_id]
    ).fetchall()
    original = _memory_states(con, run_id, questions, strategies, monkeypatch)
    changed = [
        q.model_copy(update={
            "query": "Something else entirely: what is the capital of France?",
            "options": [f"Option {i}: {text[::-1]}" for i, text in enumerate(reversed(q.options))],
            "option_sources": list(reversed(q.option_sources)),
            "correct_index": len(q.options) - 1 - q.correct_index,
            "question_type": "abstention",
            "topic": "unrelated",
        })
        for q in questions
    ]
    assert _memory_states(con, run_id, changed, strategies, monkeypatch) == original
    snapshots_after = con.execute(
        "SELECT * FROM memory_snapshots WHERE run_id = ? ORDER BY snapshot_id", [run_id]
    ).fetchall()
    assert snapshots_after == snapshots_before, "answering never writes or rebuilds a memory"


def test_memory_snapshots_never_mention_the_questions(store):
    """Strategies never see the questions: no option text appears in any memory (options are
    assistant replies written at question time, after the conversation)."""
    con, run_id = store
    (leaks,) = con.execute(
        "SELECT count(*) FROM memory_snapshots s JOIN questions q USING (run_id, persona_id) "
        "WHERE s.run_id = ? AND list_has_any(q.options, s.items)",
        [run_id],
    ).fetchone()
    assert leaks == 0
    (generic,) = con.execute(
        "SELECT count(*) FROM memory_snapshots WHERE run_id = ? AND position('Since many people' IN text) > 0",
        [run_id],
    ).fetchone()
    assert generic == 0
