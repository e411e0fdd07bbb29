"""Batched and parallel answering (issue 17): the same answers as one question at a time.

The embedding reader answers a user's questions together (each text embedded once) and a large
evaluation is answered by a pool of Ray actors. Neither may change an answer: a text's MiniLM
vector moves by about 1e-6 with the batch it is embedded in, so chosen options must be identical
and scores equal to 1e-5."""

from __future__ import annotations

import duckdb
import pytest

from personasim.agents.embedding import default_embedder, size_torch_threads
from personasim.agents.tokens import count_tokens
from personasim.analysis import answer_pool
from personasim.analysis.evaluate import answer_questions
from personasim.analysis.questions import generate_questions, generate_questions_by_user
from personasim.analysis.reader import EmbeddingReader
from personasim.sim.store_read import read_questions, read_snapshots


@pytest.fixture(scope="module")
def stored(small_run):
    _, db = small_run
    con = duckdb.connect(str(db), read_only=True)
    run_id = con.execute("SELECT run_id FROM runs").fetchall()[0][0]
    yield con, run_id, read_questions(con, run_id)
    con.close()


class _OneAtATime:
    """The embedding reader without ``answer_many``: every question answered on its own."""

    name = "embedding"

    def __init__(self, reader: EmbeddingReader) -> None:
        self.reader = reader

    def answer(self, context_items, query, options):  # type: ignore[no-untyped-def]
        return self.reader.answer(context_items, query, options)


def _same(a, b) -> None:  # type: ignore[no-untyped-def]
    assert [x.answer_id for x in a] == [y.answer_id for y in b]
    assert [x.chosen_index for x in a] == [y.chosen_index for y in b]
    worst = max(abs(s - t) for x, y in zip(a, b, strict=True) for s, t in zip(x.scores, y.scores, strict=True))
    assert worst <= 1e-5


def test_answering_per_user_in_batches_gives_the_answers_of_one_question_at_a_time(stored):
    con, run_id, questions = stored
    strategies = ["none", "full_history", "agentic"]
    reader = EmbeddingReader(default_embedder())
    batched = answer_questions(con, run_id, questions, strategies, reader)
    single = answer_questions(con, run_id, questions, strategies, _OneAtATime(reader))
    assert len(batched) == len(questions) * len(strategies)
    _same(batched, single)
    assert {a.strategy for a in batched} == set(strategies)
    assert any(a.correct for a in batched) and not all(a.correct for a in batched)


def test_the_bfloat16_embedder_answers_alike_in_any_batch_and_close_to_minilm(stored):
    """``minilm-bf16``: a text's vector is the same bits whatever it is embedded with, so one
    question at a time and several users at once give identical scores; and its choices are
    MiniLM's for nearly every answer (2,062 of 2,073 on the default run)."""
    from personasim.agents.embedding import Embedder

    con, run_id, questions = stored
    strategies = ["none", "full_history", "agentic"]
    exact = answer_questions(con, run_id, questions, strategies, EmbeddingReader(default_embedder()))
    fast = EmbeddingReader(Embedder(precision="bfloat16"))
    batched = answer_questions(con, run_id, questions, strategies, fast)
    fast.embedder.clear_cache()
    single = answer_questions(con, run_id, questions, strategies, _OneAtATime(fast))
    assert [(r.chosen_index, r.scores) for r in batched] == [(r.chosen_index, r.scores) for r in single]
    assert fast.model_name == "minilm-bf16" and {r.reader_model for r in batched} == {"minilm-bf16"}
    agree = sum(a.chosen_index == b.chosen_index for a, b in zip(exact, batched, strict=True)) / len(exact)
    assert agree >= 0.97
    assert [r.scores for r in exact] != [r.scores for r in batched]  # another computation, not MiniLM renamed


def test_users_taken_a_chunk_at_a_time_give_the_same_rows_each_stored_once(stored, monkeypatch):
    """A large run's evaluation reads snapshots a chunk of users at a time; nothing about an
    answer may depend on the chunk it was in."""
    from personasim.analysis import answer_items

    con, run_id, questions = stored
    strategies = ["none", "full_history", "agentic"]
    reader = EmbeddingReader(default_embedder())
    whole = answer_questions(con, run_id, questions, strategies, reader)
    monkeypatch.setattr(answer_items, "USERS_PER_CHUNK", 2)
    batches: list[list] = []
    kept = answer_questions(con, run_id, questions, strategies, reader, on_batch=batches.append, keep_rows=False)
    streamed = sorted((r for batch in batches for r in batch), key=lambda r: [a.answer_id for a in whole].index(
        r.answer_id))
    assert kept == []  # a caller that only stores the rows holds none of them
    assert [r.model_dump() for r in streamed] == [r.model_dump() for r in whole]
    assert {r.context_tokens for r in whole if r.strategy == "full_history"} != {0}


def test_questions_a_user_at_a_time_are_the_run_questions_answered_the_same(stored, monkeypatch):
    """A run asks and answers its questions a few users at a time (personasim/api.py): the same
    questions as all at once, the same answers, and the users are generated as they are answered."""
    from personasim.analysis import answer_items

    con, run_id, questions = stored
    by_user = list(generate_questions_by_user(con, run_id, 0))
    personas = [user[0].persona_id for user in by_user]
    assert all({q.persona_id for q in user} == {user[0].persona_id} for user in by_user)
    assert personas == sorted(set(personas))  # each user once, in persona order
    flat = [q for user in by_user for q in user]
    every = generate_questions(con, run_id, 0)
    key = lambda q: q.question_id  # noqa: E731
    assert [q.model_dump() for q in sorted(flat, key=key)] == [q.model_dump() for q in sorted(every, key=key)]
    assert [q.model_dump() for q in sorted(flat, key=key)] == [q.model_dump() for q in sorted(questions, key=key)]

    strategies = ["none", "full_history", "agentic"]
    reader = EmbeddingReader(default_embedder())
    whole = answer_questions(con, run_id, flat, strategies, reader)
    monkeypatch.setattr(answer_items, "USERS_PER_CHUNK", 2)  # snapshots read for 2 users at a time
    monkeypatch.setattr(answer_pool, "USERS_PER_TASK", 2)  # and 2 users' texts embedded together
    pulled, pulled_at_first_batch = [0], []

    def lazily():
        for user in by_user:
            pulled[0] += 1
            yield user

    def on_batch(rows) -> None:  # type: ignore[no-untyped-def]
        if not pulled_at_first_batch:
            pulled_at_first_batch.append(pulled[0])

    streamed = answer_questions(con, run_id, lazily(), strategies, reader, on_batch=on_batch)
    assert [r.model_dump() for r in streamed] == [r.model_dump() for r in whole]
    assert pulled_at_first_batch == [2] and pulled[0] == len(by_user)  # one chunk read before answering


def test_a_snapshot_token_count_is_the_sum_of_its_lines():
    """What the evaluation counts for a snapshot used whole (its stored count) is the count of the
    lines it reads: no token spans the newline joining two lines."""
    assert count_tokens("I like tea.\nNo, coffee!") == count_tokens("I like tea.") + count_tokens("No, coffee!")


def test_every_stored_snapshot_counts_its_lines(stored):
    con, run_id, _ = stored
    snapshots = [s for refs in read_snapshots(con, run_id).values() for s in refs]
    assert len(snapshots) > 100
    assert all(s.tokens == sum(count_tokens(line) for line in s.items) for s in snapshots)


def test_the_pool_reads_tasks_as_it_has_room_not_all_at_once(ray_session):
    """The pool pulls each task when an actor has room, so the driver builds a few users' work
    ahead of the actors rather than the whole run's."""

    class Doubles:
        def double(self, n: int) -> int:
            return 2 * n

    pulled, done, ahead = [0], [0], []

    def tasks():  # type: ignore[no-untyped-def]
        for n in range(40):
            pulled[0] += 1
            ahead.append(pulled[0] - done[0])
            yield n, n

    def on_done(key: int, result: int) -> None:
        assert result == 2 * key
        done[0] += 1

    workers = 2
    answer_pool.in_pool(Doubles, (), "double", tasks(), workers, on_done)
    assert done[0] == 40
    assert max(ahead) <= workers * answer_pool.TASKS_IN_FLIGHT  # never more tasks in flight than actor slots


def test_torch_threads_follow_the_cores_given():
    import torch

    before = torch.get_num_threads()
    try:
        assert size_torch_threads(1) == 1 and torch.get_num_threads() == 1
        assert size_torch_threads(2.0) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_ray_worker_takes_the_cores_ray_gave_it(ray_session):
    from personasim.agents.embedding import size_torch_threads

    @ray_session.remote(num_cpus=1)
    def threads() -> tuple[int, int]:
        import torch

        torch.set_num_threads(4)  # as if torch had started one thread per core of a bigger machine
        return size_torch_threads(), torch.get_num_threads()

    assert ray_session.get(threads.remote()) == (1, 1)
