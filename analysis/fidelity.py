"""Memory fidelity: every memory snapshot scored against the persona's timeline, from the store alone.

A snapshot (one per user, session and strategy, taken at session end, time ``T``) is a list of
items. Each item is matched to at most one preference with the embedding model (MiniLM, cosine on
L2-normalised rows), then classified against the truth at ``T``:

* *current*: the user holds it at ``T`` and revealed it at or before ``T`` (and did not ask to
  forget it since);
* *forgotten*: the user asked to forget it at or before ``T`` (and has not revealed it again since);
* *stale*: the user held it before ``T`` and no longer holds it at ``T`` (it was replaced or dropped);
* *hallucinated*: anything else: the user never held it, or holds it but never revealed it by ``T``.

Exact definitions, the matching rule and the calibration of ``FIDELITY_THRESHOLD`` are in
docs/analysis.md (the calibration script is bench/calibrate_fidelity.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import duckdb
import numpy as np
import pandas as pd

from personasim.analysis.stored_questions import USERS_PER_CHUNK
from personasim.sim.store_read import SnapshotRow, define_views, read_snapshot_rows, snapshot_users
from personasim.sim.store_runs import read_run

__all__ = [
    "FIDELITY_THRESHOLD",
    "fidelity_and_latency",
    "fidelity_summary",
    "latency_to_learn",
    "memory_fidelity",
    "normalise_item",
    "privacy_leakage",
]

# Cosine threshold for "this memory item is about this preference". Calibrated on the scripted
# backend by bench/calibrate_fidelity.py (figures in bench/results/fidelity_threshold.json and
# docs/analysis.md): the threshold that maximised Youden's J of "item vs the preference it was copied
# from" against "item vs any other preference" when user turns were short reveals (TPR 0.94, FPR 0.05,
# item-level F1 0.967). On today's turns, which carry task talk, the optimum is 0.55 (J 0.75 against
# 0.70 here); 0.65 is kept so published fidelity figures stay comparable (docs/analysis.md).
FIDELITY_THRESHOLD = 0.65

_PREFIX = re.compile(r"^(\s*\[[^\]]*\]\s*)+")
_ROLE = re.compile(r"^(user|assistant|system)\s*:\s*", re.IGNORECASE)
# Sensitive values shorter than this are not searched for verbatim (too many accidental hits).
_MIN_VALUE_LENGTH = 4

Key = tuple[str, str, str]  # (topic, option, polarity)


class _Encoder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


def normalise_item(item: str) -> str | None:
    """The text of a memory item that can state a preference, or None.

    Leading bracketed tags (dates, ``[since ...]``) are removed; a raw-message item keeps its text
    only when it is the user's (``user: ...``): the assistant's and system's messages are not
    claims about the user. Empty items are None."""
    text = _PREFIX.sub("", item).strip()
    role = _ROLE.match(text)
    if role:
        if role.group(1).lower() != "user":
            return None
        text = text[role.end():].strip()
    return text or None


# ------------------------------------------------------------------------------------- truth


OTHERS_MARK = "@"


def is_others(key: Key) -> bool:
    """A key of someone else's preference (polarity ``likes@sister:Anna``), not the user's own."""
    return OTHERS_MARK in key[2]


@dataclass
class _Persona:
    intervals: dict[Key, list[tuple[datetime, datetime | None]]] = field(default_factory=dict)
    reveals: list[tuple[datetime, int, Key, str, str, str | None]] = field(default_factory=list)
    forgets: list[tuple[datetime, Key]] = field(default_factory=list)
    values: list[str] = field(default_factory=list)

    def held(self, key: Key, t: datetime) -> bool:
        return any(a <= t and (b is None or b > t) for a, b in self.intervals.get(key, ()))

    def held_before(self, key: Key, t: datetime) -> bool:
        return any(a < t for a, _ in self.intervals.get(key, ()))

    def revealed(self, key: Key, t: datetime) -> bool:
        return any(k == key and rt <= t for rt, _, k, *_ in self.reveals)

    def forgotten(self, key: Key, t: datetime) -> bool:
        asked = [ft for ft, k in self.forgets if k == key and ft <= t]
        if not asked:
            return False
        last = max(asked)
        return not any(k == key and last < rt <= t for rt, _, k, *_ in self.reveals)

    def forgotten_keys(self, t: datetime) -> set[Key]:
        return {k for _, k in self.forgets if self.forgotten(k, t)}

    def target(self, t: datetime) -> set[Key]:
        keys = {k for rt, _, k, *_ in self.reveals if rt <= t and not is_others(k)}
        return {k for k in keys if self.held(k, t) and not self.forgotten(k, t)}

    def category(self, key: Key, t: datetime, target: set[Key]) -> str:
        if is_others(key):  # about someone in the user's life: right if it was said, invented if not
            return "others" if self.revealed(key, t) else "hallucinated"
        if key in target:
            return "current"
        if self.forgotten(key, t):
            return "forgotten"
        if self.held_before(key, t) and not self.held(key, t):
            return "stale"
        return "hallucinated"


@dataclass
class _Truth:
    """The run's preference keys and their statements: what every snapshot's items are matched to.
    Each user's own timeline (``_Persona``) is read with the user's snapshots, a chunk at a time."""

    keys: list[Key]
    statements: list[str]


def _key(topic: str, option: str, polarity: str, owner: str | None) -> Key:
    # someone else's preference ("The user's sister Anna likes ...") is a key of its own
    return (topic, option, polarity if owner in (None, "self") else f"{polarity}{OTHERS_MARK}{owner}")


def _load_truth(con: duckdb.DuckDBPyConnection, run_id: str) -> _Truth:
    """Every key of the run, sorted, each with the statement of its earliest version (by valid_from,
    then preference_id): one row per key, not per preference."""
    statement_of: dict[Key, str] = {}
    for topic, option, polarity, owner, statement in con.execute(
        "SELECT topic, option, polarity, owner, statement FROM ("
        " SELECT topic, option, polarity, CASE WHEN owner IS NULL OR owner = 'self' THEN NULL ELSE owner END AS owner,"
        " first(statement ORDER BY valid_from, preference_id) AS statement,"
        " min({'t': valid_from, 'p': preference_id}) AS earliest"
        " FROM preferences WHERE run_id = ? GROUP BY ALL) ORDER BY earliest",
        [run_id],
    ).fetchall():
        statement_of.setdefault(_key(topic, option, polarity, owner), statement)
    keys = sorted(statement_of)
    return _Truth(keys=keys, statements=[statement_of[k] for k in keys])


def _load_personas(con: duckdb.DuckDBPyConnection, run_id: str, persona_ids: list[str]) -> dict[str, _Persona]:
    """The timelines of ``persona_ids``: when each preference was held, revealed and asked to be
    forgotten, and the sensitive values to look for."""
    which = {"run": run_id, "users": persona_ids}
    users = " AND persona_id IN (SELECT unnest($users::VARCHAR[]))"
    key_of: dict[str, Key] = {}
    personas: dict[str, _Persona] = {}
    for pid, persona, topic, option, polarity, valid_from, valid_to, owner in con.execute(
        "SELECT preference_id, persona_id, topic, option, polarity, valid_from, valid_to, owner"
        " FROM preferences WHERE run_id = $run" + users + " ORDER BY valid_from, preference_id", which,
    ).fetchall():
        key = key_of[pid] = _key(topic, option, polarity, owner)
        personas.setdefault(persona, _Persona()).intervals.setdefault(key, []).append((valid_from, valid_to))
    define_views(con)
    for persona, time, session_index, pid, text, mode in con.execute(
        "SELECT persona_id, time, session_index, preference_id, text, reveal_mode FROM revealing_turns"
        " WHERE run_id = $run" + users + " ORDER BY time, turn_id", which,
    ).fetchall():
        if pid in key_of:
            personas.setdefault(persona, _Persona()).reveals.append((time, session_index, key_of[pid], pid, text, mode))
    for persona, time, pid in con.execute(
        "SELECT persona_id, time, preference_id FROM forget_requests WHERE run_id = $run" + users + " ORDER BY time",
        which,
    ).fetchall():
        if pid in key_of:
            personas.setdefault(persona, _Persona()).forgets.append((time, key_of[pid]))
    for persona, value in con.execute(
        "SELECT persona_id, value FROM sensitive_facts WHERE run_id = $run" + users + " ORDER BY persona_id, kind",
        which,
    ).fetchall():
        if value and len(value) >= _MIN_VALUE_LENGTH:
            personas.setdefault(persona, _Persona()).values.append(value)
    return personas


# ---------------------------------------------------------------------------------- matching


class _Vectors:
    """Embeds each distinct text once."""

    def __init__(self, embedder: _Encoder) -> None:
        self.embedder = embedder
        self.cache: dict[str, np.ndarray] = {}

    def add(self, texts: Sequence[str]) -> None:
        missing = sorted({t for t in texts if t not in self.cache})
        if missing:
            vectors = np.asarray(self.embedder.encode(missing), dtype=np.float32)
            self.cache.update(zip(missing, vectors, strict=True))

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        self.add(texts)
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)


@dataclass
class _Assessed:
    rows: list[dict[str, object]]  # memory_fidelity's, in its order
    latency: list[dict[str, object]]  # latency_to_learn's, in its order


def _assess(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    strategies: Sequence[str] | None,
    threshold: float | None,
    embedder: _Encoder | None,
) -> _Assessed:
    """Every snapshot's fidelity row and every revealed preference's latency, a chunk of users at a
    time: their snapshots, timelines and the keys each snapshot holds are read and dropped per chunk
    (a 1,000-user run's snapshots took 2.2 GB read at once)."""
    threshold = FIDELITY_THRESHOLD if threshold is None else float(threshold)
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    truth = _load_truth(con, run_id)
    if embedder is None:  # MiniLM whatever the process chose: the threshold was calibrated on it
        from personasim.agents.embedding import embedder_named

        embedder = embedder_named("minilm")
    key_index = {k: i for i, k in enumerate(truth.keys)}
    statements = _Vectors(embedder).matrix(truth.statements) if truth.keys else np.zeros((0, 1), dtype=np.float32)
    wanted = list(strategies) if strategies is not None else None
    rows: list[dict[str, object]] = []
    latency: list[dict[str, object]] = []
    users = snapshot_users(con, run_id, wanted)
    for start in range(0, len(users), USERS_PER_CHUNK):
        chunk = users[start:start + USERS_PER_CHUNK]
        personas = _load_personas(con, run_id, chunk)
        snaps = read_snapshot_rows(con, run_id, chunk, wanted)
        vectors = _Vectors(embedder)  # every item text and reveal text of the chunk, embedded in one pass
        vectors.add([t for snap in snaps for t in map(normalise_item, snap.items) if t])
        vectors.add([r[4] for p in chunk for r in personas.get(p, _Persona()).reveals])
        memory_keys: dict[tuple[str, str, int], set[Key]] = {}
        for snap in snaps:
            rows.append(_assessed_row(snap, personas.get(snap.persona_id, _Persona()), truth, key_index,
                                      statements, vectors, threshold, memory_keys))
        latency += _latency_rows(memory_keys, personas)
    rows.sort(key=lambda r: (r["strategy"], r["persona_id"], r["session_index"]))  # as one query's order
    latency.sort(key=lambda r: (r["persona_id"], r["strategy"]))  # stable: each user's keys in reveal order
    return _Assessed(rows=rows, latency=latency)


def _assessed_row(snap: SnapshotRow, persona: _Persona, truth: _Truth, key_index: dict[Key, int],
                  statements: np.ndarray, vectors: _Vectors, threshold: float,
                  memory_keys: dict[tuple[str, str, int], set[Key]]) -> dict[str, object]:
    """One snapshot's row of ``memory_fidelity`` (and the keys it holds, into ``memory_keys``)."""
    t = snap.time
    texts = [x for x in map(normalise_item, snap.items) if x]
    assigned: list[Key] = []
    if texts and truth.keys:
        items = vectors.matrix(texts)
        scores = items @ statements.T  # (items, keys): similarity to each preference's statement
        for rt, _, key, _, reveal_text, _ in persona.reveals:
            if rt <= t:  # the user's own words that revealed it, once said
                column = key_index[key]
                scores[:, column] = np.maximum(scores[:, column], items @ vectors.cache[reveal_text])
        best = scores.argmax(axis=1)
        best_score = scores[np.arange(len(texts)), best]
        assigned = [truth.keys[b] for b, s in zip(best, best_score, strict=True) if s >= threshold]
    target = persona.target(t)
    categories = [persona.category(k, t, target) for k in assigned]
    held = set(assigned)
    memory_keys[(snap.persona_id, snap.strategy, int(snap.session_index))] = held
    forgotten = persona.forgotten_keys(t)
    n_pref = len(assigned) - categories.count("others")
    current = categories.count("current")
    matched = len(target & held)
    precision = current / n_pref if n_pref else math.nan
    recall = matched / len(target) if target else math.nan
    if math.isnan(recall):
        f1 = math.nan
    elif recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    violations = len(forgotten & held)
    text = "\n".join(snap.items)
    return {
        "persona_id": snap.persona_id, "strategy": snap.strategy, "session_index": int(snap.session_index),
        "time": snap.time, "tokens": int(snap.tokens), "items": len(snap.items),
        "preference_items": n_pref, "others_items": categories.count("others"), "held_now": len(target),
        "matched": matched,
        "precision": precision, "recall": recall, "f1": f1,
        "staleness": categories.count("stale") / n_pref if n_pref else math.nan,
        "hallucination": categories.count("hallucinated") / n_pref if n_pref else math.nan,
        "forgotten_share": categories.count("forgotten") / n_pref if n_pref else math.nan,
        "forget_requests": len(forgotten), "forget_violations": violations,
        "forget_compliance": 1 - violations / len(forgotten) if forgotten else math.nan,
        "leaked_values": sum(1 for v in persona.values if v in text),
    }


# ------------------------------------------------------------------------------------ public

FIDELITY_COLUMNS = (
    "persona_id", "strategy", "session_index", "time", "tokens", "items", "preference_items", "others_items",
    "held_now", "matched", "precision", "recall", "f1", "staleness", "hallucination", "forgotten_share",
    "forget_requests", "forget_violations", "forget_compliance", "leaked_values",
)


def memory_fidelity(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    strategies: Sequence[str] | None = None,
    threshold: float | None = None,
    embedder: _Encoder | None = None,
) -> pd.DataFrame:
    """One row per memory snapshot (persona_id, strategy, session_index), scored at its time T.

    Columns: ``tokens``; ``items`` (all items); ``preference_items`` (items matched to a
    preference: best cosine >= ``threshold``, default ``FIDELITY_THRESHOLD``); ``others_items``
    (items matched to a revealed preference of someone in the user's life: not counted in
    ``preference_items``, so they are neither the user's nor errors); ``held_now``
    (preferences held at T, revealed by T and not asked to be forgotten); ``matched`` (of those, how
    many some item is matched to); ``precision`` (current items / preference items), ``recall``
    (matched / held_now), ``f1``; ``staleness``, ``hallucination`` and ``forgotten_share`` (stale,
    hallucinated and forgotten items / preference items; with precision they sum to 1);
    ``forget_requests`` (preferences the user asked to forget by T), ``forget_violations`` (of
    those, how many the memory still matches), ``forget_compliance`` (1 - violations / requests);
    ``leaked_values`` (the persona's sensitive values found verbatim in the snapshot text). Ratios
    with an empty denominator are NaN (except f1 = 0 when recall = 0).
    """
    assessed = _assess(con, run_id, strategies, threshold, embedder)
    return pd.DataFrame(assessed.rows, columns=list(FIDELITY_COLUMNS))


def latency_to_learn(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    strategies: Sequence[str] | None = None,
    threshold: float | None = None,
    embedder: _Encoder | None = None,
) -> pd.DataFrame:
    """Sessions from a preference's first reveal to the first snapshot holding it, per strategy.

    One row per (persona_id, strategy, revealed preference (topic, option, polarity)):
    ``preference_id`` (the version first revealed), ``reveal_mode`` of that reveal,
    ``first_reveal_session``, ``first_learned_session`` (the first snapshot at or after the reveal
    session with an item matched to it) and ``latency_sessions`` (their difference: 0 = learned in
    the session it was revealed, since snapshots are taken at session end; NaN if never learned).
    """
    return _latency(_assess(con, run_id, strategies, threshold, embedder))


LATENCY_COLUMNS = (
    "persona_id", "strategy", "preference_id", "topic", "option", "polarity", "reveal_mode",
    "first_reveal_session", "first_learned_session", "latency_sessions",
)


def _latency(assessed: _Assessed) -> pd.DataFrame:
    return pd.DataFrame(assessed.latency, columns=list(LATENCY_COLUMNS))


def _latency_rows(memory_keys: dict[tuple[str, str, int], set[Key]],
                  personas: dict[str, _Persona]) -> list[dict[str, object]]:
    """``latency_to_learn``'s rows of the users whose snapshots' keys are in ``memory_keys``."""
    by_strategy: dict[tuple[str, str], list[tuple[int, set[Key]]]] = {}
    for (persona, strategy, session), keys in memory_keys.items():
        by_strategy.setdefault((persona, strategy), []).append((session, keys))
    rows: list[dict[str, object]] = []
    for (persona_id, strategy), snaps in sorted(by_strategy.items()):
        snaps.sort(key=lambda s: s[0])
        persona = personas.get(persona_id, _Persona())
        first: dict[Key, tuple[int, str, str | None]] = {}
        for _, session, key, pid, _, mode in persona.reveals:
            if not is_others(key):
                first.setdefault(key, (session, pid, mode))
        for key, (session, pid, mode) in first.items():
            learned = next((s for s, keys in snaps if s >= session and key in keys), None)
            rows.append({
                "persona_id": persona_id, "strategy": strategy, "preference_id": pid, "topic": key[0],
                "option": key[1], "polarity": key[2], "reveal_mode": mode, "first_reveal_session": session,
                "first_learned_session": learned if learned is not None else math.nan,
                "latency_sessions": (learned - session) if learned is not None else math.nan,
            })
    return rows


def fidelity_summary(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    strategies: Sequence[str] | None = None,
    threshold: float | None = None,
    embedder: _Encoder | None = None,
) -> pd.DataFrame:
    """Fidelity over time: per (strategy, session_index), the mean of each snapshot metric.

    Columns: ``strategy, session_index, snapshots, tokens, precision, recall, f1, staleness,
    hallucination, forget_compliance, leaked_values`` (NaN-skipping means over the snapshots)."""
    return _summary(memory_fidelity(con, run_id, strategies, threshold, embedder))


def fidelity_and_latency(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    strategies: Sequence[str] | None = None,
    threshold: float | None = None,
    embedder: _Encoder | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``fidelity_summary`` and ``latency_to_learn`` from one pass over the snapshots (each alone
    embeds every memory item: minutes on a large MiniLM run)."""
    assessed = _assess(con, run_id, strategies, threshold, embedder)
    return _summary(pd.DataFrame(assessed.rows, columns=list(FIDELITY_COLUMNS))), _latency(assessed)


def _summary(frame: pd.DataFrame) -> pd.DataFrame:
    metrics = ["tokens", "precision", "recall", "f1", "staleness", "hallucination", "forget_compliance",
               "leaked_values"]
    grouped = frame.groupby(["strategy", "session_index"], sort=True)
    out = grouped[metrics].mean()
    out.insert(0, "snapshots", grouped.size())
    return out.reset_index()


def privacy_leakage(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Sensitive values (``sensitive_facts``) repeated verbatim, per source and strategy.

    Sources: ``memory`` (snapshot texts, per strategy), ``answers`` (the chosen option's text and the
    reader's raw output, per strategy) and ``assistant_turns`` (the live chatbot's messages; its
    strategy is the run's ``memory.chatbot``). Columns: ``source, strategy, n`` (snapshots, answers
    or turns), ``leaking`` (those holding at least one of the persona's values), ``share``
    (leaking / n) and ``values_leaked`` (distinct (persona, value) pairs found)."""
    values: dict[str, list[str]] = {}
    for persona, value in con.execute(
        "SELECT persona_id, value FROM sensitive_facts WHERE run_id = ?", [run_id]
    ).fetchall():
        if value and len(value) >= _MIN_VALUE_LENGTH:
            values.setdefault(persona, []).append(value)
    chatbot = read_run(con, run_id).chatbot_memory or "chatbot"
    stats: dict[str, dict[str, list[object]]] = {"memory": {}, "answers": {}, "assistant_turns": {}}
    for chunk in _leakage_users(con, run_id):  # a chunk of users at a time: a large run's texts are GBs
        for source, records in _leakage_records(con, run_id, chunk, chatbot).items():
            for strategy, persona, text in records:
                found = [v for v in values.get(persona, ()) if text and v in text]
                entry = stats[source].setdefault(strategy, [0, 0, set()])
                entry[0] += 1  # type: ignore[operator]
                entry[1] += bool(found)  # type: ignore[operator]
                entry[2].update((persona, v) for v in found)  # type: ignore[union-attr]
    rows = []
    for source, by_strategy in stats.items():
        for strategy, (n, leaking, found_values) in sorted(by_strategy.items()):
            rows.append({"source": source, "strategy": strategy, "n": n, "leaking": leaking,
                         "share": leaking / n if n else math.nan, "values_leaked": len(found_values)})
    return pd.DataFrame(rows, columns=["source", "strategy", "n", "leaking", "share", "values_leaked"])


def _leakage_users(con: duckdb.DuckDBPyConnection, run_id: str) -> Iterator[list[str]]:
    """Every user with a snapshot, an answer or an assistant turn, ``USERS_PER_CHUNK`` at a time."""
    users = [r[0] for r in con.execute(
        "SELECT persona_id FROM answers WHERE run_id = $1 UNION SELECT persona_id FROM turns WHERE run_id = $1"
        " ORDER BY 1", [run_id]).fetchall()]
    users = sorted(set(users) | set(snapshot_users(con, run_id)))
    for start in range(0, len(users), USERS_PER_CHUNK):
        yield users[start:start + USERS_PER_CHUNK]


def _leakage_records(con: duckdb.DuckDBPyConnection, run_id: str, users: list[str],
                     chatbot: str) -> dict[str, list[tuple[str, str, str | None]]]:
    """(strategy, persona, text) of each snapshot, answer and assistant turn of ``users``."""
    which = {"run": run_id, "users": users}
    return {
        "memory": [(r.strategy, r.persona_id, "\n".join(r.items)) for r in read_snapshot_rows(con, run_id, users)],
        "answers": con.execute(
            "SELECT a.strategy, a.persona_id, concat_ws(' ', CASE WHEN a.chosen_index >= 0"
            " THEN q.options[a.chosen_index + 1] END, a.raw_output) FROM answers a"
            " LEFT JOIN questions q ON q.run_id = a.run_id AND q.question_id = a.question_id"
            " WHERE a.run_id = $run AND a.persona_id IN (SELECT unnest($users::VARCHAR[]))", which).fetchall(),
        "assistant_turns": [(chatbot, persona, text) for persona, text in con.execute(
            "SELECT persona_id, text FROM turns WHERE run_id = $run AND role = 'assistant'"
            " AND persona_id IN (SELECT unnest($users::VARCHAR[]))", which).fetchall()],
    }
