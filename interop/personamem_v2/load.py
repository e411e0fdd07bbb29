"""Load PersonaMem-v2's published files into a personasim store, as one completed run.

Why: the same evaluation (memory strategies, readers, scores) then runs on their benchmark and
on ours, so numbers are comparable. Everything is deterministic: the run id is a hash of the
files, times are synthetic (a fixed base plus one minute per message, since the files carry no
times), and option order comes from a seeded stream, not Python's salted ``hash()`` the
authors shuffle with.

What goes where:
- each chat-history file is one session (its system prompt kept as a ``system`` turn, so export
  is exact); each raw-persona conversation is one more session;
- each CSV row is one question, asked an hour after the end of the history it links to (the
  user's next session starts after that, so no memory sees more than the history before the
  question); the row's cells are kept verbatim in ``questions.source_json``;
- ``source_files`` keeps, per file, what export needs: a CSV's columns, a history's metadata and
  session, a raw file's UUID (``metadata_json`` is ``{"metadata": <the file's own metadata>,
  "session_id": ...}`` for histories, ``{"columns": [...], "stem": ...}`` for CSVs);
- raw persona files add preferences (with ``preference_updates`` as drift events), sensitive facts
  and demographics.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from personasim.agents.backends import BackendConfig, create_client
from personasim.agents.memory import MemorySettings, check_memory_names
from personasim.agents.tokens import count_tokens
from personasim.analysis.questions import QUESTION_TYPES
from personasim.interop.personamem_v2.format import (
    BenchmarkFile,
    BenchmarkRow,
    ChatHistory,
    ChatMessage,
    PersonaMemFormatError,
    RawPersonaFile,
    check_window,
    read_benchmark_csv,
    read_chat_history,
    read_raw_persona,
)
from personasim.personas.catalog import load_topic_catalog
from personasim.personas.seeding import rng_for
from personasim.sim.ids import session_id, turn_id
from personasim.sim.rows import (
    DriftEventRow,
    MemorySnapshotRow,
    PersonaRow,
    PreferenceRow,
    QuestionRow,
    SensitiveFactRow,
    SessionRow,
    SourceFileRow,
    TurnRow,
)
from personasim.sim.session import replay_into_memories
from personasim.sim.store import StoreError, TrajectoryStore
from personasim.sim.store_read import read_rows
from personasim.sim.store_runs import (
    PERSONAMEM_WINDOW_TOKENS,
    LoadedPersonaMemConfig,
    RunExistsError,
    read_run,
    set_loaded_memory_backend,
    start_run,
)

__all__ = ["build_memory_snapshots", "load_personamem_v2", "personamem_v2_run_id", "read_sources"]

SOURCE = "personamem_v2"
BASE_TIME = datetime(2025, 1, 1)
MESSAGE_STEP = timedelta(minutes=1)
QUESTION_DELAY = timedelta(hours=1)
DEFAULT_STRATEGIES = ["none", "full_history", "agentic"]
WINDOW_TOKENS = PERSONAMEM_WINDOW_TOKENS
T = TypeVar("T")
_FORGET_PREFIX = re.compile(r"^\s*do not remember:\s*", re.IGNORECASE)


def persona_key(index: int) -> str:
    return f"pmv2-persona{index}"


def slug(text: str, limit: int = 60) -> str:
    """A readable id part; long statements are cut and made unique by a short hash."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not s:
        return "unknown"
    if len(s) > limit:
        s = s[:limit].rstrip("-") + "-" + hashlib.blake2b(text.encode(), digest_size=3).hexdigest()
    return s


def question_type(row: BenchmarkRow) -> str:
    """PersonaMem-v2's row flags in personasim's question-type vocabulary (first match wins).

    A file exported by personasim carries the exact type in an extra ``question_type`` column."""
    own = row.cells.get("question_type", "")
    if own in QUESTION_TYPES:
        return own
    if row.updated:
        return "updated_preference"
    if row.pref_type == "ask_to_forget":
        return "forget_compliance"
    if row.pref_type == "sensitive_info" or row.sensitive_info:  # the flag alone marks one too
        return "sensitive_info"
    if row.who == "others":
        return "others_preference"
    return "implicit_inference"


class SourceSet(BaseModel):
    """Every file of a folder, parsed; paths relative to the folder (posix), in sorted order."""

    folder: Path
    window: str
    csvs: dict[str, BenchmarkFile]
    histories: dict[str, ChatHistory]
    raws: dict[str, RawPersonaFile]
    digest: str


def _relative(folder: Path, path: Path) -> str:
    """``path`` relative to ``folder``, refusing what resolves outside it (a symlink out of the
    dataset would let a crafted folder read any file)."""
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        raise PersonaMemFormatError(
            f"{path}: links to {path.resolve()}, outside the dataset folder {folder}; copy the file into the "
            "folder instead of linking to it"
        ) from None


#: The release's text splits: ``benchmark/text/{benchmark,train,val}.csv`` (or the same names at the top).
SPLITS = ("benchmark", "train", "val")


def read_sources(folder: Path, window: str = "32k", split: str = "benchmark") -> SourceSet:
    """Find and parse the PersonaMem-v2 files of ``folder`` for one split; links must resolve inside it.

    Only ``split``'s CSV is read (``benchmark``, ``train`` or ``val``): merging them would score a
    model on its own training questions. Chat histories and raw persona files are shared."""
    check_window(window)
    if split not in SPLITS:
        raise PersonaMemFormatError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise PersonaMemFormatError(f"{folder}: not a folder; give the PersonaMem-v2 dataset root")
    all_csvs = sorted(folder.glob("*.csv")) + sorted((folder / "benchmark" / "text").glob("*.csv"))
    csv_paths = [p for p in all_csvs if p.stem == split]
    if all_csvs and not csv_paths:
        found = ", ".join(sorted({p.stem for p in all_csvs}))
        raise PersonaMemFormatError(
            f"{folder}: no {split}.csv (at the top level or under benchmark/text/); the CSVs there are: {found}; "
            "choose one with --split"
        )
    history_paths = sorted((folder / "data" / f"chat_history_{window}").glob("*.json"))
    raw_paths = sorted((folder / "data" / "raw_data").glob("*_persona*.json"))
    if not (csv_paths or history_paths or raw_paths):
        raise PersonaMemFormatError(
            f"{folder}: no PersonaMem-v2 files found; looked for *.csv at the top level and under benchmark/text/, "
            f"chat histories under data/chat_history_{window}/, raw persona files under data/raw_data/"
        )
    csvs = {_relative(folder, p): read_benchmark_csv(p) for p in csv_paths}
    for bench in csvs.values():
        if not bench.rows:
            raise PersonaMemFormatError(
                f"{bench.path}: a header and no question rows, so there is nothing to evaluate; is the file truncated?"
            )
    stems = [Path(rel).stem for rel in csvs]
    if len(set(stems)) != len(stems):
        raise PersonaMemFormatError(f"{folder}: two benchmark CSVs share a file name ({', '.join(sorted(csvs))})")
    histories = {_relative(folder, p): read_chat_history(p) for p in history_paths}
    for rel, bench in csvs.items():
        for row in bench.rows:
            link = _linked_history(folder, rel, row, window)
            if link not in histories:
                histories[link] = read_chat_history(folder / link)
            expected = histories[link].persona_index(folder / link)
            if row.persona_id != expected:
                raise PersonaMemFormatError(
                    f"{bench.path} row {row.row}, field persona_id: expected {expected} (the persona of {link}), "
                    f"got {row.persona_id}"
                )
    raws = {_relative(folder, p): read_raw_persona(p) for p in raw_paths}
    digest = hashlib.blake2b(f"personamem_v2|{window}".encode(), digest_size=8)
    for rel in sorted({*csvs, *histories, *raws}):
        digest.update(rel.encode() + b"\0" + (folder / rel).read_bytes() + b"\0")
    return SourceSet(folder=folder, window=window, csvs=csvs, histories=dict(sorted(histories.items())), raws=raws,
                    digest=digest.hexdigest())


def _linked_history(folder: Path, csv_rel: str, row: BenchmarkRow, window: str) -> str:
    column, link = row.link(window)
    where = f"{folder / csv_rel} row {row.row}, field {column}"
    if link is None:
        raise PersonaMemFormatError(f"{where}: expected the path of the user's {window} chat history, got ''")
    target = folder / link
    try:
        rel = _relative(folder, target)
    except ValueError:
        raise PersonaMemFormatError(f"{where}: linked chat history {link} lies outside {folder}") from None
    if not target.is_file():
        raise PersonaMemFormatError(f"{where}: linked chat history {target} does not exist")
    return rel


# -- rows ----------------------------------------------------------------------------------------

class _Persona:
    """One user's rows as they are built: demographics, sessions on a per-user synthetic clock."""

    def __init__(self, run_id: str, index: int) -> None:
        self.run_id, self.index, self.id = run_id, index, persona_key(index)
        self.clock = BASE_TIME
        self.demographics: dict[str, Any] = {}
        self.sessions: list[SessionRow] = []
        self.turns: list[TurnRow] = []
        self.preference_ids: dict[str, str] = {}  # statement -> preference_id

    def add_session(self, scenario_id: str, messages: list[ChatMessage]) -> SessionRow:
        k = len(self.sessions)
        sid = session_id(self.id, k)
        start = self.clock
        for i, m in enumerate(messages):
            self.turns.append(TurnRow(
                run_id=self.run_id, turn_id=turn_id(self.id, k, i), session_id=sid, persona_id=self.id,
                session_index=k, turn_index=i, role=m.role, text=m.text, time=self.clock, tokens=count_tokens(m.text),
                prompt_tokens=None, completion_tokens=None, revealed_preference_id=None, reveal_mode=None,
                hint_kind=None, forget_preference_id=None, leak_similarity=None, leaked=None,
                content_json=m.content_json,
            ))
            self.clock += MESSAGE_STEP
        end = self.clock - MESSAGE_STEP if messages else start
        session = SessionRow(run_id=self.run_id, session_id=sid, persona_id=self.id, session_index=k,
                             scenario_id=scenario_id, started_at=start, ended_at=end, n_turns=len(messages),
                             status="completed")
        self.sessions.append(session)
        return session

    def preference_id(self, statement: str) -> str:
        statement = _FORGET_PREFIX.sub("", statement)
        if statement not in self.preference_ids:
            s = slug(statement)
            taken = set(self.preference_ids.values())
            version = 0
            while f"{self.id}/{s}/{s}#{version}" in taken:
                version += 1
            self.preference_ids[statement] = f"{self.id}/{s}/{s}#{version}"
        return self.preference_ids[statement]

    def row(self) -> PersonaRow:
        d = self.demographics
        return PersonaRow(run_id=self.run_id, persona_id=self.id, user_index=self.index, locale="",
                          name=d.get("name", ""), age=d.get("age", -1), gender=d.get("gender", ""),
                          occupation=d.get("occupation", ""), city=d.get("city", ""), country=d.get("country", ""))


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # {"first": ..., "last": ...} or {"title": ...}
        parts = [value.get(k) for k in ("first", "middle", "last")]
        if any(parts):
            return " ".join(p for p in parts if isinstance(p, str) and p)
        found = value.get("job_title") or value.get("title")
        return found if isinstance(found, str) else ""
    return ""


def persona_from_system_prompt(text: str) -> dict[str, Any]:
    """Demographics from the persona JSON the authors embed in each history's system prompt."""
    start = text.find("{")
    if start < 0:
        return {}
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return {}
    if not isinstance(obj, dict):
        return {}
    return demographics_from(obj)


#: Where the release's persona layouts put a job and a home (three layouts seen so far: a job under
#: ``occupation.job_title``, ``occupation.current_position`` or ``employment.job_title``; a home under
#: ``location``, ``current_residence`` or only as the job's ``work_location``). Any dict-shaped
#: layout is searched the same way, one section level deep.
_JOB_SECTIONS = ("occupation", "employment", "job", "work", "career", "profession", "professional_life")
_JOB_KEYS = ("job_title", "title", "current_position", "position", "role", "current_role", "occupation",
             "profession")
_HOME_SECTIONS = ("location", "current_residence", "residence", "current_location", "home", "address", "lives_in")
_CITY_KEYS = ("city", "town", "municipality", "locality")
_COUNTRY_KEYS = ("country", "nation")


def demographics_from(obj: dict[str, Any]) -> dict[str, Any]:
    """Name, age, gender, occupation, city and country from any dict-shaped persona: the fields
    the ``persona_prior`` blind reader reads. Missing ones are empty (age -1)."""
    nested = ("demographics", "basic_info", "profile")
    sections = [obj, *(v for k, v in obj.items() if k in nested and isinstance(v, dict))]

    def first(keys: tuple[str, ...], where: list[dict[str, Any]]) -> Any:
        for section in where:
            for key in keys:
                if section.get(key) not in (None, "", [], {}):
                    return section[key]
        return None

    job = ""
    for section in sections:
        for key in (*_JOB_SECTIONS, *_JOB_KEYS):
            value = section.get(key)
            if isinstance(value, str) and value.strip():
                job = value.strip()
            elif isinstance(value, dict):
                found = first(_JOB_KEYS, [value])
                job = found.strip() if isinstance(found, str) else ""
            if job:
                break
        if job:
            break
    city = country = ""
    home = first(_HOME_SECTIONS, sections)
    if home is None:  # only where they work is said
        work = first(_JOB_SECTIONS, sections)
        home = work.get("work_location") if isinstance(work, dict) else None
    if isinstance(home, dict):
        city, country = _text(first(_CITY_KEYS, [home])), _text(first(_COUNTRY_KEYS, [home]))
    elif isinstance(home, str) and home.strip():
        parts = [part.strip() for part in home.split(",") if part.strip()]
        city = parts[0] if parts else ""
        country = parts[-1] if len(parts) > 2 else ""  # "Austin, TX, USA": the last part; "Washington, D.C.": none
    if not country:
        country = _text(first(_COUNTRY_KEYS, sections))
    return {
        "name": _text(first(("name", "full_name"), sections)), "age": _age(first(("age",), sections)),
        "gender": _text(first(("gender", "sex"), sections)), "occupation": job, "city": city, "country": country,
    }


def _age(value: Any) -> int:
    """An age as the release writes it (34, "34", "34 years old"); -1 when there is none."""
    if isinstance(value, bool):
        return -1
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        digits = re.match(r"\s*(\d{1,3})\b", value)
        return int(digits.group(1)) if digits else -1
    return -1


def _raw_rows(p: _Persona, raw: RawPersonaFile, rel: str) -> tuple[list[Any], list[Any]]:
    """Preferences (updates as drift), sensitive facts, and one session per raw conversation.

    The files give no times: an update happens when the first conversation revealing the new
    preference starts, or after the user's last message when none does."""
    persona = raw.persona
    p.demographics = {
        "name": persona.full_name(), "age": persona.age if persona.age is not None else -1, "gender": persona.gender,
        "occupation": persona.job(), "city": _text(persona.location.get("city")),
        "country": _text(persona.location.get("country")),
    }
    first_reveal: dict[str, datetime] = {}
    session_ids = []
    for kind, groups in persona.conversations.items():
        for group in groups:
            if group.conversations:
                session = p.add_session(kind, group.conversations)
                session_ids.append(session.session_id)
                first_reveal.setdefault(group.preference, session.started_at)
    kinds: dict[str, tuple[str, str | None]] = {}
    for statements, stereotype, sensitivity in (
        (persona.stereotypical_preferences, "stereotypical", None),
        (persona.anti_stereotypical_preferences, "anti_stereotypical", None),
        (persona.therapy_background, "neutral", "health"),
    ):
        for s in statements:
            kinds.setdefault(s, (stereotype, sensitivity))
    valid: dict[str, list[datetime | None]] = {s: [BASE_TIME, None] for s in kinds}
    drifts = []
    for i, (old, new) in enumerate(persona.preference_updates.items()):
        t = first_reveal.get(new, p.clock)
        kinds.setdefault(old, ("neutral", None))
        kinds.setdefault(new, ("neutral", None))
        valid.setdefault(old, [BASE_TIME, None])[1] = t
        valid[new] = [t, None]
        drifts.append(DriftEventRow(
            run_id=p.run_id, event_id=f"{p.id}/drift/{i}", persona_id=p.id, time=t,
            cause="personamem_v2 preference_updates", topic=slug(new), old_preference_id=p.preference_id(old),
            new_preference_id=p.preference_id(new), kind="topic_swap",
        ))
    prefs = [
        PreferenceRow(
            run_id=p.run_id, preference_id=p.preference_id(s), persona_id=p.id, domain=SOURCE, topic=slug(s),
            option=slug(s), statement=s, polarity="likes", strength=1.0, sensitive=sensitivity is not None,
            valid_from=valid[s][0] or BASE_TIME, valid_to=valid[s][1], sensitivity=sensitivity, stereotype=stereotype,
        )
        for s, (stereotype, sensitivity) in kinds.items()
    ]
    facts = [
        SensitiveFactRow(run_id=p.run_id, persona_id=p.id, kind=k,
                         value=v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
        for k, v in persona.sensitive_information.items()
    ]
    source = SourceFileRow(run_id=p.run_id, path=rel, kind="raw_persona", persona_id=p.id, metadata_json=json.dumps(
        {"uuid": raw.uuid, "persona": persona.persona, "session_ids": session_ids}, ensure_ascii=False))
    return [*prefs, *drifts, *facts], [source]


def _question(run_id: str, p: _Persona, stem: str, i: int, row: BenchmarkRow, asked_at: datetime,
              window: str) -> QuestionRow:
    """One CSV row as a question; option order from a seeded stream keyed by the question id."""
    qid = f"{p.id}/pmv2/{stem}/{i}"
    entries = [(row.correct_answer, "correct")] + [(a, "incorrect") for a in row.incorrect_answers]
    rng_for(0, "option-order", qid).shuffle(entries)
    distance = row.token_count(f"distance_from_related_snippet_to_query_{window}")
    return QuestionRow(
        run_id=run_id, question_id=qid, persona_id=p.id, question_type=question_type(row), asked_at=asked_at,
        topic=row.topic_query, scenario_id=row.conversation_scenario, query=row.user_query.text,
        options=[e[0] for e in entries], option_sources=[e[1] for e in entries],
        correct_index=[e[1] for e in entries].index("correct"), preference_id=p.preference_id(row.preference),
        stale_preference_id=p.preference_id(row.prev_pref) if row.prev_pref else None, reveal_mode="unknown",
        reveals=len(row.related_conversation_snippet), sessions_since_reveal=0,
        tokens_since_reveal=-1 if distance is None else distance, preference_statement=row.preference,
        stale_statement=row.prev_pref, pref_type=row.pref_type, who=row.who, source=SOURCE,
        source_json=json.dumps(row.cells, ensure_ascii=False),
    )


def _stated_preferences(p: _Persona, row: BenchmarkRow, known: set[str]) -> list[PreferenceRow]:
    """The preferences a CSV row states (``preference``, and ``prev_pref`` when it was updated) that
    no raw persona file already gave, so every question's ``preference_id`` resolves.

    The CSV gives no times: a stated preference holds from the start of the user's timeline; a
    replaced one (``prev_pref``) held until then and is closed at that instant, so it is never
    current. ``who = others`` rows are owned by "others" (the release does not name the person)."""
    sensitive = bool(row.sensitive_info) or row.pref_type == "sensitive_info"
    out = []
    for statement, stale in ((row.preference, False), (row.prev_pref, True)):
        if not statement or p.preference_id(statement) in known:
            continue
        out.append(PreferenceRow(
            run_id=p.run_id, preference_id=p.preference_id(statement), persona_id=p.id, domain=SOURCE,
            topic=slug(row.topic_preference or statement), option=slug(statement), statement=statement,
            polarity="likes", strength=1.0, sensitive=sensitive, valid_from=BASE_TIME,
            valid_to=BASE_TIME if stale else None, sensitivity="sensitive_info" if sensitive else None,
            stereotype=row.pref_type if row.pref_type in ("stereotypical", "anti_stereotypical") else "neutral",
            owner="others" if row.who == "others" else "self",
        ))
    return out


class LoadedRows(BaseModel):
    """Every row of one loaded run, by table, before anything is written."""

    run_id: str
    config: LoadedPersonaMemConfig
    users: int
    sessions_per_user: int
    world_hash: str
    tables: dict[str, list[Any]]


def build_rows(sources: SourceSet, strategies: list[str]) -> LoadedRows:
    """All rows of the run, in memory: histories first (one session each), then raw conversations,
    then one question per CSV row (it needs its history's end time)."""
    run_id = f"pmv2-{sources.digest}"
    indices = {r.persona_id for b in sources.csvs.values() for r in b.rows}
    indices |= {h.persona_index(sources.folder / rel) for rel, h in sources.histories.items()}
    indices |= {raw.persona_index for raw in sources.raws.values()}
    personas = {i: _Persona(run_id, i) for i in sorted(indices)}
    tables: dict[str, list[Any]] = {k: [] for k in (
        "preferences", "drift_events", "sensitive_facts", "questions", "source_files")}
    history_end: dict[str, datetime] = {}
    for rel, history in sources.histories.items():
        p = personas[history.persona_index(sources.folder / rel)]
        if history.chat_history and history.chat_history[0].role == "system" and not p.demographics:
            p.demographics = persona_from_system_prompt(history.chat_history[0].text)
        session = p.add_session(SOURCE, history.chat_history)
        history_end[rel] = session.ended_at
        p.clock += QUESTION_DELAY  # the next session starts after this history's questions were asked
        tables["source_files"].append(SourceFileRow(
            run_id=run_id, path=rel, kind="chat_history", persona_id=p.id, metadata_json=json.dumps(
                {"metadata": history.metadata, "session_id": session.session_id, "window": sources.window},
                ensure_ascii=False)))
    for rel, raw in sorted(sources.raws.items()):
        p = personas[raw.persona_index]
        facts, files = _raw_rows(p, raw, rel)
        for row in facts:
            table = {PreferenceRow: "preferences", DriftEventRow: "drift_events"}.get(type(row), "sensitive_facts")
            tables[table].append(row)
        tables["source_files"] += files
    for rel, bench in sources.csvs.items():
        stem = Path(rel).stem
        for i, row in enumerate(bench.rows):
            link = _linked_history(sources.folder, rel, row, sources.window)
            tables["questions"].append(_question(run_id, personas[row.persona_id], stem, i, row,
                                                 history_end[link] + QUESTION_DELAY, sources.window))
        tables["source_files"].append(SourceFileRow(
            run_id=run_id, path=rel, kind="benchmark_csv", persona_id=None,
            metadata_json=json.dumps({"columns": bench.columns, "stem": stem, "rows": len(bench.rows)})))
    known = {r.preference_id for r in tables["preferences"]}
    for bench in sources.csvs.values():
        for row in bench.rows:
            for pref in _stated_preferences(personas[row.persona_id], row, known):
                tables["preferences"].append(pref)
                known.add(pref.preference_id)
    tables["personas"] = [p.row() for p in personas.values()]
    tables["sessions"] = [s for p in personas.values() for s in p.sessions]
    tables["turns"] = [t for p in personas.values() for t in p.turns]
    config = LoadedPersonaMemConfig(
        source=SOURCE, folder=sources.folder.resolve().name, window=sources.window,
        files=sorted({*sources.csvs, *sources.histories, *sources.raws}), strategies=strategies)
    return LoadedRows(run_id=run_id, config=config, users=len(personas), world_hash=sources.digest,
                      sessions_per_user=max((len(p.sessions) for p in personas.values()), default=0), tables=tables)


# -- memory snapshots ----------------------------------------------------------------------------

def _secret_values(value: str) -> list[str]:
    if value.startswith("["):
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            return [value]
        return [str(v) for v in items] if isinstance(items, list) else [value]
    return [value]


def _memory_rows(run_id: str, tables: dict[str, list[Any]], strategies: list[str],
                 settings: MemorySettings, client: Any = None) -> list[MemorySnapshotRow]:
    """Each persona's sessions, in order, into fresh memories; one snapshot per session end (the
    session runner's feeding, so loaded and simulated histories reach memories the same way).

    The system prompt is skipped, as the authors' own preprocessing does: it states the persona
    outright, which would make every memory trivially right."""
    if not strategies:
        return []
    secrets: dict[str, list[str]] = {}
    for f in tables.get("sensitive_facts", []):
        secrets.setdefault(f.persona_id, []).extend(_secret_values(f.value))
    return _run_sync(replay_into_memories(run_id, tables["sessions"], tables["turns"], secrets, strategies,
                                          settings, chatbot_client=client))


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, also from code that already runs an event loop (a notebook): then in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def build_memory_snapshots(store: TrajectoryStore, run_id: str, strategies: list[str] | None = None,
                           settings: MemorySettings | None = None,
                           memory_backend: BackendConfig | None = None) -> list[MemorySnapshotRow]:
    """(Re)build the ``memory_snapshots`` of ``strategies`` for a run already in the store.

    ``memory_backend``: the model that writes the memories a model writes (agentic), e.g. an
    OpenAI-compatible server, as PersonaMem-v2's agentic memory is; without it the scripted
    note-taker writes them, a rule-based baseline. The run records which (``memory_writer``).
    Existing snapshots of those strategies are replaced in the same transaction, so calling it
    again (other settings, a new strategy) never leaves duplicates or a half-written table."""
    strategies = check_memory_names(list(DEFAULT_STRATEGIES if strategies is None else strategies))
    if not store.has_run(run_id):
        raise StoreError(f"{store.path} holds no run {run_id}; load it first")
    tables = {table: read_rows(store.con, table, run_id) for table in ("sessions", "turns", "sensitive_facts")}
    client = create_client(memory_backend, load_topic_catalog()) if memory_backend is not None else None
    rows = _memory_rows(run_id, tables, strategies, settings or read_run(store, run_id).memory_settings, client)
    store.replace_rows({"memory_snapshots": {"run_id": run_id, "strategy": strategies}}, [("memory_snapshots", rows)])
    set_loaded_memory_backend(store, run_id, memory_backend)
    return rows


# -- entry points --------------------------------------------------------------------------------

def personamem_v2_run_id(folder: Path, window: str = "32k", split: str = "benchmark") -> str:
    """The run id ``load_personamem_v2`` gives this folder, without writing anything (to skip a reload)."""
    return f"pmv2-{read_sources(Path(folder), window, split).digest}"


def load_personamem_v2(folder: Path, store: TrajectoryStore, window: str = "32k", strategies: list[str] | None = None,
                       settings: MemorySettings | None = None, overwrite: bool = False,
                       split: str = "benchmark") -> str:
    """Load a PersonaMem-v2 folder (benchmark CSVs, chat histories, raw persona files) as one run.

    Returns the run id (``pmv2-`` + a hash of the files and the window). Everything, memory
    snapshots included, is written in one transaction; malformed files raise
    :class:`PersonaMemFormatError` before anything is written. ``settings`` defaults to the
    window's context size for ``full_history``."""
    strategies = check_memory_names(list(DEFAULT_STRATEGIES if strategies is None else strategies))
    sources = read_sources(Path(folder), window, split)
    run_id = f"pmv2-{sources.digest}"
    if store.has_run(run_id) and not overwrite:
        raise RunExistsError(
            f"{store.path} already holds run {run_id} (loaded from the same files); pass overwrite=True "
            "(--overwrite) to replace it"
        )
    # full_history sees the whole window (it is the raw history, as in the seed's long context)
    settings = settings or MemorySettings(full_history_max_tokens=WINDOW_TOKENS[window])
    loaded = build_rows(sources, strategies)
    snapshots = _memory_rows(run_id, loaded.tables, strategies, settings)
    order = ["personas", "preferences", "drift_events", "sensitive_facts", "sessions", "turns", "questions",
             "source_files"]
    start_run(store, run_id, loaded.config, overwrite=True, users=loaded.users,
              sessions_per_user=loaded.sessions_per_user, world_hash=loaded.world_hash, status="completed",
              rows=[*((t, loaded.tables[t]) for t in order), ("memory_snapshots", snapshots)])
    return run_id

