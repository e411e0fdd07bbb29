"""Export a run as PersonaMem-v2 files (benchmark CSV + one chat history per user).

Why: their evaluation scripts, and anyone else's PersonaMem-v2 loader, can then run on
personasim's benchmark unchanged. Two cases:
- a run loaded from PersonaMem-v2 is written back exactly (the CSV cells kept in
  ``questions.source_json``, the messages from ``turns``/``content_json``, the file metadata from
  ``source_files``), at the paths it was loaded from: load -> export is an identity;
- a generated run becomes ``benchmark/text/benchmark.csv`` and
  ``data/chat_history_<window>/chat_history_<run>_persona<N>.json``: the persona as JSON in a
  system prompt, then every turn up to the question time, cut to the window's token budget.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import duckdb

from personasim.agents.tokens import count_tokens
from personasim.analysis.stored_questions import USERS_PER_CHUNK, grouped_by_user
from personasim.interop.personamem_v2.format import (
    RELEASED_COLUMNS,
    ChatHistory,
    ChatMessage,
    benchmark_csv_writer,
    check_window,
    format_cell,
    message_from_store,
    window_columns,
    write_benchmark_csv,
)
from personasim.interop.personamem_v2.load import SOURCE, WINDOW_TOKENS
from personasim.sim.rows import QuestionRow
from personasim.sim.store import StoreError
from personasim.sim.store_read import question_users, read_questions
from personasim.sim.store_runs import run_status

SYSTEM_PROMPT = (
    "You are an AI assistant helping a user with the following persona:\n\n{persona}\n\n"
    "Please respond in a way that's appropriate for this user's background, interests, and communication style."
)


def export_personamem_v2(con: duckdb.DuckDBPyConnection, run_id: str, out_dir: Path, window: str = "32k") -> list[Path]:
    """Write the run's questions and chat histories under ``out_dir``; returns the files written.

    A run loaded from PersonaMem-v2 is reproduced as loaded (its own window); ``window`` applies
    to generated runs."""
    check_window(window)
    if run_status(con, run_id) is None:
        raise StoreError(f"the store holds no run {run_id}")
    out_dir = Path(out_dir)
    sources = con.execute(
        "SELECT path, kind, metadata_json FROM source_files WHERE run_id = ? ORDER BY path", [run_id]
    ).fetchall()
    if sources:
        return _export_loaded(con, run_id, out_dir, sources)
    return _export_generated(con, run_id, out_dir, window)


def _export_loaded(con: duckdb.DuckDBPyConnection, run_id: str, out_dir: Path,
                   sources: list[tuple[str, str, str]]) -> list[Path]:
    questions = [q for q in read_questions(con, run_id) if q.source == SOURCE and q.source_json]
    by_stem: dict[str, list[tuple[int, QuestionRow]]] = defaultdict(list)
    for q in questions:
        stem, index = q.question_id.rsplit("/", 2)[-2:]
        by_stem[stem].append((int(index), q))
    written = []
    for path, kind, metadata_json in sources:
        meta = json.loads(metadata_json)
        if kind == "benchmark_csv":
            columns = meta["columns"]
            cells = [json.loads(q.source_json or "{}") for _, q in sorted(by_stem[meta["stem"]], key=lambda e: e[0])]
            rows = [[r.get(c, "") for c in columns] for r in cells]
            written.append(write_benchmark_csv(out_dir / path, columns, rows))
        elif kind == "chat_history":
            turns = con.execute(
                "SELECT role, text, content_json FROM turns WHERE run_id = ? AND session_id = ? ORDER BY turn_index",
                [run_id, meta["session_id"]],
            ).fetchall()
            history = ChatHistory(metadata=meta["metadata"], chat_history=[message_from_store(*t) for t in turns])
            written.append(_write(out_dir / path, history.dumps()))
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def persona_json(row: dict[str, Any]) -> dict[str, Any]:
    """A personas-table row in the authors' key style (as embedded in their system prompts)."""
    where = ", ".join(v for v in (row["city"], row["country"]) if v)
    age = f"{row['age']}-year-old " if row["age"] >= 0 else ""
    short = f"A {age}{row['occupation'] or 'person'}" + (f" living in {where}" if where else "")
    return {
        "short_persona": short, "name": row["name"], "age": row["age"], "gender": row["gender"],
        "occupation": {"job_title": row["occupation"]},
        "location": {"city": row["city"], "country": row["country"]},
    }


def _fit(messages: list[ChatMessage], budget: int) -> list[ChatMessage]:
    """The system message and the most recent messages whose tokens fit ``budget``."""
    system, rest = messages[0], messages[1:]
    left = budget - count_tokens(system.text)
    kept: list[ChatMessage] = []
    for m in reversed(rest):
        left -= count_tokens(m.text)
        if left < 0:
            break
        kept.append(m)
    return [system, *reversed(kept)]


def _snippet(history: list[ChatMessage], reveals: list[str | None], preference_id: str) -> list[int]:
    """Positions of the user turns revealing ``preference_id``, each with the reply that follows."""
    picked: list[int] = []
    for i, (m, pid) in enumerate(zip(history, reveals, strict=True)):
        if m.role == "user" and pid == preference_id:
            picked.append(i)
            if i + 1 < len(history) and history[i + 1].role == "assistant":
                picked.append(i + 1)
    return picked


def _pref_type(q: QuestionRow, pref: tuple[Any, ...] | None) -> str:
    if q.pref_type:
        return q.pref_type
    if q.question_type == "forget_compliance":
        return "ask_to_forget"
    if pref is not None and pref[2] == "health":
        return "health_and_medical"
    return pref[3] if pref is not None and pref[3] != "neutral" else "stereotypical"


def _export_generated(con: duckdb.DuckDBPyConnection, run_id: str, out_dir: Path, window: str) -> list[Path]:
    """Users in their order, read ``USERS_PER_CHUNK`` at a time (their questions and turns one query
    each), and the CSV written as they come: a 10,000-user run's questions alone take 4 GB as objects."""
    # personasim's own question type rides along as an extra column: their loaders read columns by
    # name and ignore it; ours reads it back, so a generated benchmark keeps its types both ways
    columns = [*RELEASED_COLUMNS, *window_columns(window), "question_type"]
    stamp = re.sub(r"[^0-9A-Za-z]+", "_", run_id).strip("_")
    personas = {r[0]: dict(zip(("persona_id", "user_index", "locale", "name", "age", "gender", "occupation", "city",
                                "country"), r, strict=True)) for r in con.execute(
        "SELECT persona_id, user_index, locale, name, age, gender, occupation, city, country FROM personas"
        " WHERE run_id = ?", [run_id]).fetchall()}
    prefs = {r[0]: r for r in con.execute(
        "SELECT preference_id, sensitive, sensitivity, stereotype, statement FROM preferences WHERE run_id = ?",
        [run_id]).fetchall()}
    users = question_users(con, run_id)
    if unknown := next((p for p in users if p not in personas), None):
        raise StoreError(f"question of persona {unknown} in run {run_id}, but the personas table lacks it")
    users.sort(key=lambda p: personas[p]["user_index"])
    csv_path = out_dir / "benchmark" / "text" / "benchmark.csv"
    written = [csv_path]
    with benchmark_csv_writer(csv_path, columns) as csv_rows:
        for start in range(0, len(users), USERS_PER_CHUNK):
            chunk = users[start:start + USERS_PER_CHUNK]
            questions = grouped_by_user(read_questions(con, run_id, chunk))
            cutoffs = {p: max(q.asked_at for q in questions[p]) for p in chunk}
            turns = _users_messages(con, run_id, cutoffs)
            for pid in chunk:
                user = _user_files(run_id, personas[pid], questions[pid], turns.get(pid, []), prefs, columns,
                                   window, stamp)
                written.append(_write(out_dir / user.path, user.history_json))
                csv_rows.writerows(user.rows)
    return written


def _users_messages(con: duckdb.DuckDBPyConnection, run_id: str,
                    cutoffs: dict[str, datetime]) -> dict[str, list[tuple[Any, ...]]]:
    """Each user's messages up to their cutoff, in time order, for a chunk of users in one query."""
    rows = con.execute(
        "SELECT t.persona_id, role, text, content_json, time, revealed_preference_id"
        " FROM turns t JOIN (SELECT unnest($users::VARCHAR[]) AS persona_id, unnest($cutoffs::TIMESTAMP[]) AS cutoff)"
        " c ON t.persona_id = c.persona_id AND t.time <= c.cutoff WHERE t.run_id = $run"
        " ORDER BY t.persona_id, time, session_index, turn_index",
        {"run": run_id, "users": list(cutoffs), "cutoffs": list(cutoffs.values())}).fetchall()
    by_user: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_user[row[0]].append(row[1:])
    return by_user


class _UserFiles(NamedTuple):
    """What one user contributes: their chat history file (path under the export, JSON text) and CSV rows."""

    path: str
    history_json: str
    rows: list[list[str]]


def _user_files(run_id: str, persona: dict[str, Any], questions: list[QuestionRow], turns: list[tuple[Any, ...]],
                prefs: dict[str, tuple[Any, ...]], columns: list[str], window: str, stamp: str) -> _UserFiles:
    link_column = f"chat_history_{window}_link"
    rows: list[list[str]] = []
    system = ChatMessage(role="system", content=SYSTEM_PROMPT.format(
        persona=json.dumps(persona_json(persona), indent=2, ensure_ascii=False)))
    full = [system, *(message_from_store(role, text, cj) for role, text, cj, _, _ in turns)]
    history = _fit(full, WINDOW_TOKENS[window])
    reveals = [None, *(t[4] for t in turns)][len(full) - len(history):]
    reveals[0] = None
    tokens = [count_tokens(m.text) for m in history]
    rel = f"data/chat_history_{window}/chat_history_{stamp}_persona{persona['user_index']}.json"
    metadata: dict[str, Any] = {"total_messages": len(history), "final_token_count": sum(tokens),
                                "persona_id": persona["user_index"],
                                "input_filename": f"personasim:{run_id}/{persona['persona_id']}"}
    if len(history) < len(full):
        metadata["trimmed_from_total_messages"] = len(full)
    for q in sorted(questions, key=lambda q: q.question_id):
        picked = _snippet(history, reveals, q.preference_id)
        relevant = sum(tokens[i] for i in picked)
        pref = prefs.get(q.preference_id)
        stale = prefs.get(q.stale_preference_id or "")
        values: dict[str, Any] = {
            "persona_id": persona["user_index"], link_column: rel,
            "preference": q.preference_statement or (pref[4] if pref else ""),
            "prev_pref": q.stale_statement or (stale[4] if stale else None),
            "updated": q.question_type == "updated_preference",
            "who": q.who, "sensitive_info": q.question_type == "sensitive_info" or bool(pref and pref[1]),
            "pref_type": _pref_type(q, pref), "topic_preference": q.topic, "topic_query": q.topic,
            "conversation_scenario": q.scenario_id,
            "related_conversation_snippet": [history[i].as_json() for i in picked],
            "user_query": {"role": "user", "content": q.query}, "correct_answer": q.options[q.correct_index],
            "incorrect_answers": [o for i, o in enumerate(q.options) if i != q.correct_index],
            f"total_tokens_in_chat_history_{window}": sum(tokens),
            f"distance_from_related_snippet_to_query_{window}": sum(tokens[picked[-1] + 1:]) if picked else None,
            f"num_persona_relevant_tokens_{window}": relevant,
            f"num_persona_irrelevant_tokens_{window}": sum(tokens) - relevant,
            "question_type": q.question_type,
        }
        rows.append([format_cell(values.get(c)) for c in columns])
    return _UserFiles(rel, ChatHistory(metadata=metadata, chat_history=history).dumps(), rows)
