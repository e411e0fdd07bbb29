"""The shape of a long-horizon run, measured from the store: is it the benchmark it was meant to be?

A run configured for PersonaMem-v2's shape (``personasim/presets/pmv2-32k.yaml``: a 32k-token
history per user, sparse reveals woven into tasks, most revealed preferences updated and about a
third asked to be forgotten, questions at three checkpoints) only *aims* at that shape: the
history target is met session by session, the reveal rate is a probability, drift is random. So the
shape is a result to measure, not a setting to trust, and a benchmark whose users reach 9k tokens
instead of 32k, or whose chatbot repeats one reply a thousand times, says little about long
contexts. ``horizon_shape`` measures each figure the issue asks of such a run, from the store alone
(plain SQL over ``turns``, ``preferences``, ``drift_events``, ``forget_requests``, ``sessions`` and
``questions``; the target from ``store_runs.read_run``), so a bench, a report or a test can check it.

Definitions (every count is of the run's rows):

* a user's *history* is the sum of ``turns.tokens`` over all its sessions, filler included: what a
  full-history memory would hold at the horizon, and what ``dialogue.history_tokens`` targets;
* the *reveal rate* is the share of non-filler user turns with a ``revealed_preference_id`` (filler
  turns are pre-written padding that never reveals anything, so they would only dilute the rate);
* an *adjacent reveal* is a pair of consecutive non-filler user turns of one session that both
  reveal; a *same-topic reveal within 2* is a pair of revealing user turns of one session, on the
  same topic, at most 2 user turns apart (the rationed planner promises neither happens);
* a revealed own preference (``owner = 'self'``) is *updated* when a drift event closes it
  (``old_preference_id``) and either drops it (no new preference) or replaces it by a different
  option or polarity (a strength-only gradual change keeps the preference, so it is no update).
"""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from personasim.sim.store import StoreError
from personasim.sim.store_runs import read_run

__all__ = [
    "WITHIN_TARGET",
    "HistoryShape",
    "HorizonShape",
    "QuestionShape",
    "ReplyShape",
    "RevealShape",
    "UpdateShape",
    "horizon_shape",
]

#: A user's history is "on target" within this relative distance of ``dialogue.history_tokens``.
WITHIN_TARGET = 0.10


class HistoryShape(BaseModel):
    """History tokens per user at the horizon (every turn of every session, filler included)."""

    min: int
    median: float
    max: int
    target: int | None = Field(description="dialogue.history_tokens (or the caller's target); None: no target.")
    within_target_share: float | None = Field(
        description=f"Share of users within {WITHIN_TARGET:.0%} of the target; None without a target.")


class RevealShape(BaseModel):
    """How sparse and how spread out the reveals are."""

    user_turns: int = Field(description="Non-filler user turns.")
    reveals: int = Field(description="Of them, turns that reveal a preference.")
    reveal_rate: float | None = Field(description="reveals / user_turns; None without user turns.")
    others_share: float | None = Field(
        description="Share of reveals about someone else (preferences.owner != 'self'); None without reveals.")
    adjacent_violations: int = Field(description="Pairs of consecutive revealing user turns within a session.")
    same_topic_within_2: int = Field(
        description="Pairs of same-topic revealing user turns at most 2 user turns apart within a session.")


class ReplyShape(BaseModel):
    """The chatbot's own replies (filler excluded): varied, or a handful of templates?"""

    count: int
    distinct_share: float | None = Field(description="Distinct texts / replies; None without replies.")
    top_reply_count: int = Field(description="How often the most frequent reply text occurs.")
    top_reply_share: float | None = Field(description="top_reply_count / replies; None without replies.")
    mean_tokens: float | None
    min_tokens: int | None
    max_tokens: int | None


class UpdateShape(BaseModel):
    """Per user: own preferences revealed (topics), and how many of them changed or were asked to be forgotten.

    Means and minimums are over users; a share is undefined (left out) for a user who revealed
    none of their own preferences."""

    revealed_mean: float
    revealed_min: int
    updated_share_mean: float | None
    updated_share_min: float | None
    forgotten_share_mean: float | None
    forgotten_share_min: float | None


class QuestionShape(BaseModel):
    """The benchmark's questions, per user and per type."""

    count: int
    per_user_mean: float
    checkpoints_per_user_mean: float = Field(description="Distinct asked_at per user, averaged over users.")
    checkpoints_per_user_min: int
    type_shares: dict[str, float] = Field(description="question_type -> share of the run's questions.")


class HorizonShape(BaseModel):
    """What a long-horizon run measured to be; see the module docstring for each definition."""

    run_id: str
    users: int
    sessions: int
    scenarios: int = Field(description="Distinct sessions.scenario_id in use.")
    history: HistoryShape
    filler_token_share: float | None = Field(description="Filler tokens / all turn tokens; None without turns.")
    reveals: RevealShape
    replies: ReplyShape
    updates: UpdateShape
    questions: QuestionShape


def horizon_shape(con: duckdb.DuckDBPyConnection, run_id: str, target: int | None = None) -> HorizonShape:
    """Measure a stored run's long-horizon shape (module docstring: what each figure means).

    ``target`` is the history length to compare against; by default the run's own
    ``dialogue.history_tokens`` (None for a run without a target, or a loaded PersonaMem-v2 run:
    then ``within_target_share`` is None). Raises ``StoreError`` if the store has no such run."""
    stored = read_run(con, run_id)
    if target is None and stored.run_config is not None:
        target = stored.run_config.dialogue.history_tokens
    users = _users(con, run_id)
    if not users:
        raise StoreError(f"run {run_id!r} has no users in the store yet; nothing to measure")
    sessions, scenarios = con.execute(
        "SELECT count(*), count(DISTINCT scenario_id) FROM sessions WHERE run_id = ?", [run_id]).fetchall()[0]
    total_tokens, filler_tokens = con.execute(
        "SELECT coalesce(sum(tokens), 0), coalesce(sum(tokens) FILTER (WHERE coalesce(filler, false)), 0)"
        " FROM turns WHERE run_id = ?",
        [run_id]).fetchall()[0]
    return HorizonShape(
        run_id=run_id, users=len(users), sessions=sessions, scenarios=scenarios,
        history=_history(con, run_id, users, target),
        filler_token_share=filler_tokens / total_tokens if total_tokens else None,
        reveals=_reveals(con, run_id), replies=_replies(con, run_id), updates=_updates(con, run_id, users),
        questions=_questions(con, run_id, users),
    )


# -- the parts ------------------------------------------------------------------------------------

def _users(con: duckdb.DuckDBPyConnection, run_id: str) -> list[str]:
    """Every user of the run: the personas table, and anyone with turns (a run still going has
    turns before its personas are written)."""
    rows = con.execute(
        "SELECT persona_id FROM personas WHERE run_id = $1"
        " UNION SELECT DISTINCT persona_id FROM turns WHERE run_id = $1 ORDER BY 1", [run_id]).fetchall()
    return [r[0] for r in rows]


def _history(con: duckdb.DuckDBPyConnection, run_id: str, users: list[str], target: int | None) -> HistoryShape:
    per_user = dict(con.execute(
        "SELECT persona_id, sum(tokens) FROM turns WHERE run_id = ? GROUP BY persona_id", [run_id]).fetchall())
    tokens = np.array([int(per_user.get(u, 0)) for u in users], dtype=np.int64)
    within = None
    if target is not None:
        within = float(np.mean(np.abs(tokens - target) <= WITHIN_TARGET * target))
    return HistoryShape(min=int(tokens.min()), median=float(np.median(tokens)), max=int(tokens.max()),
                        target=target, within_target_share=within)


def _user_turns(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Non-filler user turns in session order, with the revealed preference's topic and owner."""
    return con.execute(
        "SELECT t.persona_id, t.session_id, t.turn_index, t.revealed_preference_id, p.topic, p.owner"
        " FROM turns t LEFT JOIN preferences p ON p.run_id = t.run_id AND p.preference_id = t.revealed_preference_id"
        " WHERE t.run_id = ? AND t.role = 'user' AND NOT coalesce(t.filler, false)"
        " ORDER BY t.session_id, t.turn_index",
        [run_id]).df()


def _reveals(con: duckdb.DuckDBPyConnection, run_id: str) -> RevealShape:
    turns = _user_turns(con, run_id)
    revealing = turns[turns["revealed_preference_id"].notna()]
    adjacent = same_topic = 0
    for _, session in turns.groupby("session_id", sort=False):
        flags = session["revealed_preference_id"].notna().to_numpy()
        adjacent += int(np.sum(flags[1:] & flags[:-1]))
        positions = np.flatnonzero(flags)
        topics = session["topic"].to_numpy()[positions]
        for a in range(len(positions)):
            for b in range(a + 1, len(positions)):
                if positions[b] - positions[a] > 2:
                    break
                same_topic += int(pd.notna(topics[a]) and topics[a] == topics[b])
    n, k = len(turns), len(revealing)
    return RevealShape(
        user_turns=n, reveals=k, reveal_rate=k / n if n else None,
        others_share=float((revealing["owner"].notna() & (revealing["owner"] != "self")).mean()) if k else None,
        adjacent_violations=adjacent, same_topic_within_2=same_topic,
    )


def _replies(con: duckdb.DuckDBPyConnection, run_id: str) -> ReplyShape:
    """In SQL: a 128k run's replies are hundreds of megabytes of text, never worth fetching."""
    replies = "FROM turns WHERE run_id = $1 AND role = 'assistant' AND NOT coalesce(filler, false)"
    count, distinct, mean, low, high = con.execute(
        f"SELECT count(*), count(DISTINCT text), avg(tokens), min(tokens), max(tokens) {replies}", [run_id]
    ).fetchall()[0]
    if not count:
        return ReplyShape(count=0, distinct_share=None, top_reply_count=0, top_reply_share=None,
                          mean_tokens=None, min_tokens=None, max_tokens=None)
    (top,) = con.execute(f"SELECT max(n) FROM (SELECT count(*) AS n {replies} GROUP BY text)", [run_id]).fetchall()[0]
    return ReplyShape(
        count=count, distinct_share=distinct / count, top_reply_count=top, top_reply_share=top / count,
        mean_tokens=float(mean), min_tokens=low, max_tokens=high,
    )


def _updates(con: duckdb.DuckDBPyConnection, run_id: str, users: list[str]) -> UpdateShape:
    """Own revealed preferences per user (one per topic: an update makes a new version of the same
    preference, which is revealed in turn), and the shares of them that changed after a reveal
    (another option or polarity, or dropped) or were asked to be forgotten."""
    frame = con.execute(
        "WITH revealed AS ("
        "  SELECT DISTINCT t.persona_id, t.revealed_preference_id AS pid, p.topic, p.option, p.polarity"
        "  FROM turns t JOIN preferences p ON p.run_id = t.run_id AND p.preference_id = t.revealed_preference_id"
        "  WHERE t.run_id = $1 AND t.role = 'user' AND NOT coalesce(t.filler, false) AND p.owner = 'self'),"
        " versions AS (SELECT r.persona_id, r.topic,"
        "  EXISTS (SELECT 1 FROM drift_events d LEFT JOIN preferences n"
        "          ON n.run_id = d.run_id AND n.preference_id = d.new_preference_id"
        "          WHERE d.run_id = $1 AND d.old_preference_id = r.pid"
        "          AND (d.new_preference_id IS NULL OR n.option IS DISTINCT FROM r.option"
        "               OR n.polarity IS DISTINCT FROM r.polarity)) AS updated,"
        "  EXISTS (SELECT 1 FROM forget_requests f WHERE f.run_id = $1 AND f.preference_id = r.pid) AS forgotten"
        " FROM revealed r)"
        " SELECT persona_id, topic, bool_or(updated) AS updated, bool_or(forgotten) AS forgotten"
        " FROM versions GROUP BY persona_id, topic", [run_id]).df()
    grouped = frame.groupby("persona_id")
    revealed = grouped.size().reindex(users, fill_value=0)
    updated = grouped["updated"].mean()  # users with no own reveal are absent: their share is undefined
    forgotten = grouped["forgotten"].mean()
    return UpdateShape(
        revealed_mean=float(revealed.mean()), revealed_min=int(revealed.min()),
        updated_share_mean=_mean(updated), updated_share_min=_min(updated),
        forgotten_share_mean=_mean(forgotten), forgotten_share_min=_min(forgotten),
    )


def _questions(con: duckdb.DuckDBPyConnection, run_id: str, users: list[str]) -> QuestionShape:
    frame = con.execute(
        "SELECT persona_id, question_type, asked_at FROM questions WHERE run_id = ?", [run_id]).df()
    checkpoints = frame.groupby("persona_id")["asked_at"].nunique().reindex(users, fill_value=0)
    shares = frame["question_type"].value_counts(normalize=True).sort_index()
    return QuestionShape(
        count=len(frame), per_user_mean=len(frame) / len(users),
        checkpoints_per_user_mean=float(checkpoints.mean()), checkpoints_per_user_min=int(checkpoints.min()),
        type_shares={str(k): float(v) for k, v in shares.items()},
    )


def _mean(values: pd.Series) -> float | None:
    return None if values.empty else float(values.mean())


def _min(values: pd.Series) -> float | None:
    value = None if values.empty else float(values.min())
    return None if value is None or math.isnan(value) else value
