"""PersonaMem-v2's published file kinds, parsed strictly and written back byte for byte.

Three kinds (see the shared FORMAT.md): benchmark CSV rows, one chat-history JSON per user and
context window, and raw persona JSON files. Their data was produced by scripts and edited by
hand, so the same field shows up as JSON or as a Python literal, booleans as ``True`` or
``true``, optional cells as empty or ``NaN``. Reading accepts all of that; anything else is a
:class:`PersonaMemFormatError` naming the file, the row (CSV, 1-based data row) or JSON location,
the field, and what was expected: a malformed benchmark must fail loudly at load time, not
skew scores later.

Round trips are exact because nothing is normalised away: a CSV row keeps its raw cells, a
message keeps its original ``content`` (string or list of parts), and JSON is written in the
authors' layout (two-space indent, UTF-8 unescaped, no trailing newline).
"""

from __future__ import annotations

import ast
import csv
import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ROLES = ("system", "user", "assistant")
WINDOWS = ("32k", "128k")

#: The released benchmark's columns, in the released order (the window's token columns last).
RELEASED_COLUMNS = (
    "persona_id", "chat_history_32k_link", "chat_history_128k_link", "preference", "prev_pref", "updated", "who",
    "sensitive_info", "pref_type", "topic_preference", "topic_query", "conversation_scenario",
    "related_conversation_snippet", "user_query", "correct_answer", "incorrect_answers",
)
TOKEN_COLUMNS = (
    "total_tokens_in_chat_history_{w}", "distance_from_related_snippet_to_query_{w}",
    "num_persona_relevant_tokens_{w}", "num_persona_irrelevant_tokens_{w}",
)
#: Per window, the link column names: released first, then the older release's.
LINK_COLUMNS = {"32k": ("chat_history_32k_link", "chat_history_link"),
                "128k": ("chat_history_128k_link", "chat_history_multimodal_link")}
REQUIRED_COLUMNS = (
    "persona_id", "preference", "updated", "who", "sensitive_info", "pref_type", "topic_preference", "topic_query",
    "conversation_scenario", "related_conversation_snippet", "user_query", "correct_answer", "incorrect_answers",
)
_MISSING = {"", "nan", "none", "null"}
_PERSONA_IN_NAME = re.compile(r"_persona(\d+)\.json$")


class PersonaMemFormatError(ValueError):
    """A PersonaMem-v2 file does not have the published shape; the message says where and why."""


def window_columns(window: str) -> list[str]:
    check_window(window)
    return [c.format(w=window) for c in TOKEN_COLUMNS]


def check_window(window: str) -> str:
    if window not in WINDOWS:
        raise ValueError(f"unknown context window {window!r}; choose from {', '.join(WINDOWS)}")
    return window


def persona_index_from_name(path: Path) -> int | None:
    """``chat_history_<stamp>_persona7.json`` -> 7 (the authors name every per-user file this way)."""
    match = _PERSONA_IN_NAME.search(path.name)
    return int(match.group(1)) if match else None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- messages ------------------------------------------------------------------------------------

def _check_part(part: object) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise ValueError(f"expected a content part object, got {_shown(part)}")
    kind = part.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        return part
    image = part.get("image_url")
    if kind == "image_url" and isinstance(image, dict) and isinstance(image.get("url"), str):
        return part
    raise ValueError(
        'expected a content part {"type": "text", "text": str} or {"type": "image_url", "image_url": {"url": str}}, '
        f"got {_shown(part)}"
    )


class ChatMessage(BaseModel):
    """One chat message as published; ``content`` is kept exactly as it was (string or parts)."""

    model_config = ConfigDict(extra="forbid")

    role: str
    content: str | list[dict[str, Any]]

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: object) -> object:
        if value not in ROLES:
            raise ValueError(f"expected one of {', '.join(ROLES)}, got {_shown(value)}")
        return value

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: object) -> object:
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return [_check_part(p) for p in value]
        raise ValueError(f"expected a string or a list of content parts, got {_shown(value)}")

    @property
    def text(self) -> str:
        """The text a reader sees: the string, or the text parts of a multimodal message joined."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p["text"] for p in self.content if p.get("type") == "text")

    @property
    def content_json(self) -> str | None:
        """The original content when it was not plain text (keeps image references for export)."""
        return None if isinstance(self.content, str) else json.dumps(self.content, ensure_ascii=False)

    def as_json(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content}


def message_from_store(role: str, text: str, content_json: str | None) -> ChatMessage:
    """Rebuild a message from a turn row (``content_json`` wins: it is the original)."""
    return ChatMessage(role=role, content=json.loads(content_json) if content_json else text)


def _validation_message(path: Path, exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    loc = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "extra_forbidden":
        msg = "unexpected field (not in the published format)"
    elif not msg.startswith("expected"):
        msg = f"{msg.replace('Input should be', 'expected', 1)}, got {_shown(err.get('input'))}"
    return f"{path}: {loc.lstrip('.') or 'top level'}: {msg}"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        what = exc.msg.removesuffix(" at")  # "Unterminated string starting at" names its place below
        at_end = exc.pos >= len(exc.doc.rstrip()) - 1 or exc.msg.startswith("Unterminated")
        truncated = " (is the file truncated?)" if at_end else ""
        raise PersonaMemFormatError(
            f"{path}: not valid JSON: {what}, line {exc.lineno} column {exc.colno}{truncated}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise PersonaMemFormatError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def dump_json(obj: Any) -> str:
    """The authors' layout: two-space indent, non-ASCII kept, no trailing newline."""
    return json.dumps(obj, indent=2, ensure_ascii=False)


# -- chat histories ------------------------------------------------------------------------------

class ChatHistory(BaseModel):
    """``{"metadata": {...}, "chat_history": [messages]}``; metadata is kept verbatim for export."""

    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, Any]
    chat_history: list[ChatMessage]

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in ("total_messages", "final_token_count", "persona_id", "trimmed_from_total_messages"):
            if key in value and (isinstance(value[key], bool) or not isinstance(value[key], int)):
                raise ValueError(f"expected metadata.{key} to be an integer, got {_shown(value[key])}")
        return value

    def persona_index(self, path: Path) -> int:
        """The user's index: the metadata's ``persona_id``, else the file name's ``persona<N>``."""
        found = self.metadata.get("persona_id", persona_index_from_name(path))
        if found is None:
            raise PersonaMemFormatError(
                f"{path}: metadata.persona_id: required (or a file name ending in _persona<N>.json)"
            )
        return int(found)

    def dumps(self) -> str:
        return dump_json({"metadata": self.metadata, "chat_history": [m.as_json() for m in self.chat_history]})


def read_chat_history(path: Path) -> ChatHistory:
    obj = _read_json(path)
    if not isinstance(obj, dict):
        raise PersonaMemFormatError(f"{path}: top level: expected an object with metadata and chat_history")
    try:
        return ChatHistory.model_validate(obj)
    except ValidationError as exc:
        raise PersonaMemFormatError(_validation_message(path, exc)) from exc


# -- raw persona files ---------------------------------------------------------------------------

class RawConversation(BaseModel):
    """One conversation that reveals one preference. Extra keys (the authors add question fields) are kept."""

    model_config = ConfigDict(extra="allow")

    preference: str
    pref_type: str = ""
    who: Literal["self", "others"] = "self"
    conversations: list[ChatMessage]
    updated: bool = False
    image_path: str | None = None


class RawPersona(BaseModel):
    """The persona part of a raw file; only what personasim uses is typed, the rest passes through."""

    model_config = ConfigDict(extra="allow")

    persona: str = ""
    name: str | dict[str, str | None] = ""
    age: int | None = None
    gender: str = ""
    location: dict[str, Any] = Field(default_factory=dict)
    occupation: str | dict[str, Any] = ""
    stereotypical_preferences: list[str] = Field(default_factory=list)
    anti_stereotypical_preferences: list[str] = Field(default_factory=list)
    therapy_background: list[str] = Field(default_factory=list)
    sensitive_information: dict[str, str | list[str]] = Field(default_factory=dict)
    preference_updates: dict[str, str] = Field(default_factory=dict)
    conversations: dict[str, list[RawConversation]] = Field(default_factory=dict)

    def full_name(self) -> str:
        if isinstance(self.name, str):
            return self.name
        return " ".join(self.name[k] or "" for k in ("first", "middle", "last") if self.name.get(k)).strip()

    def job(self) -> str:
        if isinstance(self.occupation, str):
            return self.occupation
        return str(self.occupation.get("title") or self.occupation.get("job_title") or "")


class RawPersonaFile(BaseModel):
    uuid: str
    persona_index: int
    persona: RawPersona


def read_raw_persona(path: Path) -> RawPersonaFile:
    """``interactions_<stamp>_persona<N>.json``: one object keyed by the persona's UUID."""
    index = persona_index_from_name(path)
    if index is None:
        raise PersonaMemFormatError(f"{path}: file name: expected ..._persona<N>.json")
    obj = _read_json(path)
    if not isinstance(obj, dict) or len(obj) != 1 or not isinstance(next(iter(obj.values())), dict):
        raise PersonaMemFormatError(f"{path}: top level: expected one object keyed by the persona's UUID")
    uuid, body = next(iter(obj.items()))
    try:
        persona = RawPersona.model_validate(body)
    except ValidationError as exc:
        raise PersonaMemFormatError(_validation_message(path, exc, prefix=uuid)) from exc
    return RawPersonaFile(uuid=uuid, persona_index=index, persona=persona)


# -- benchmark CSV -------------------------------------------------------------------------------

class BenchmarkRow(BaseModel):
    """One question row: typed fields for personasim, and ``cells`` exactly as read for export."""

    row: int
    cells: dict[str, str]
    persona_id: int
    preference: str
    prev_pref: str | None
    updated: bool
    who: str
    sensitive_info: bool
    pref_type: str
    topic_preference: str
    topic_query: str
    conversation_scenario: str
    related_conversation_snippet: list[ChatMessage]
    user_query: ChatMessage
    correct_answer: str
    incorrect_answers: list[str]

    def link(self, window: str) -> tuple[str, str | None]:
        """(column, relative path) of the chat history for ``window``; either naming is accepted."""
        names = LINK_COLUMNS[check_window(window)]
        for name in names:
            if name in self.cells:
                return name, _optional(self.cells[name])
        return names[0], None

    def token_count(self, column: str) -> int | None:
        return _optional_int(self.cells.get(column, ""))


class BenchmarkFile(BaseModel):
    path: Path
    columns: list[str]
    rows: list[BenchmarkRow]


def _optional(cell: str) -> str | None:
    return None if cell.strip().lower() in _MISSING else cell


def _optional_int(cell: str) -> int | None:
    if _optional(cell) is None:
        return None
    value = float(cell)  # pandas writes integer columns holding NaN as 12.0
    if not math.isfinite(value) or value != int(value):
        raise ValueError(cell)
    return int(value)


_NOT_PARSED = object()


def _structured(cell: str) -> Any:
    try:
        return json.loads(cell)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(cell)  # literals only: never evaluates code
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return _NOT_PARSED


class _Cells:
    """Typed access to one CSV row; every failure names file, row and field."""

    def __init__(self, path: Path, row: int, cells: dict[str, str]) -> None:
        self.path, self.row, self.cells = path, row, cells

    def fail(self, field: str, expected: str) -> PersonaMemFormatError:
        return PersonaMemFormatError(
            f"{self.path} row {self.row}, field {field}: expected {expected}, got {_shown(self.cells.get(field, ''))}"
        )

    def text(self, field: str) -> str:
        value = self.cells[field]
        if _optional(value) is None:
            raise self.fail(field, "a non-empty text")
        return value

    def boolean(self, field: str) -> bool:
        value = self.cells[field].strip()
        if value in ("True", "true"):
            return True
        if value in ("False", "false"):
            return False
        raise self.fail(field, "True or False")

    def integer(self, field: str) -> int:
        try:
            value = _optional_int(self.cells[field])
        except ValueError:
            value = None
        if value is None:
            raise self.fail(field, "an integer")
        return value

    def optional_integer(self, field: str) -> None:
        if field in self.cells:
            try:
                _optional_int(self.cells[field])
            except ValueError:
                raise self.fail(field, "an integer or an empty/NaN cell") from None

    def message(self, field: str) -> ChatMessage:
        try:
            return ChatMessage.model_validate(_structured(self.cells[field]))
        except ValidationError:
            raise self.fail(field, 'a message {"role": ..., "content": ...} (JSON or Python literal)') from None

    def messages(self, field: str) -> list[ChatMessage]:
        value = _structured(self.cells[field])
        expected = 'a list of messages {"role": ..., "content": ...} (JSON or Python literal)'
        if not isinstance(value, list):
            raise self.fail(field, expected)
        try:
            return [ChatMessage.model_validate(v) for v in value]
        except ValidationError:
            raise self.fail(field, expected) from None

    def strings(self, field: str) -> list[str]:
        value = _structured(self.cells[field])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(field, "a list of strings (JSON or Python literal)")
        return value


def _parse_row(path: Path, row: int, cells: dict[str, str]) -> BenchmarkRow:
    c = _Cells(path, row, cells)
    who = c.text("who")
    if who not in ("self", "others"):
        raise c.fail("who", "self or others")
    for window in WINDOWS:
        for column in window_columns(window):
            c.optional_integer(column)
    return BenchmarkRow(
        row=row, cells=cells, persona_id=c.integer("persona_id"), preference=c.text("preference"),
        prev_pref=_optional(cells.get("prev_pref", "")), updated=c.boolean("updated"), who=who,
        sensitive_info=c.boolean("sensitive_info"), pref_type=c.text("pref_type"),
        topic_preference=cells["topic_preference"], topic_query=cells["topic_query"],
        conversation_scenario=cells["conversation_scenario"],
        related_conversation_snippet=c.messages("related_conversation_snippet"), user_query=c.message("user_query"),
        correct_answer=c.text("correct_answer"), incorrect_answers=c.strings("incorrect_answers"),
    )


def read_benchmark_csv(path: Path) -> BenchmarkFile:
    """Read and check every row; the whole file is rejected on the first bad cell."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheet exports start with a BOM
            records = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PersonaMemFormatError(f"{path}: not a readable UTF-8 CSV file ({exc})") from exc
    if not records:
        raise PersonaMemFormatError(f"{path}: empty file; expected a header row with {', '.join(REQUIRED_COLUMNS)}")
    columns = records[0]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if not any(name in columns for name in LINK_COLUMNS["32k"] + LINK_COLUMNS["128k"]):
        missing.append("chat_history_32k_link (or chat_history_link)")
    if missing:
        raise PersonaMemFormatError(f"{path}: missing required column(s): {', '.join(missing)}")
    if len(set(columns)) != len(columns):
        raise PersonaMemFormatError(f"{path}: header: a column name appears twice")
    rows = []
    for i, record in enumerate(records[1:], start=1):
        if len(record) != len(columns):
            raise PersonaMemFormatError(f"{path} row {i}: expected {len(columns)} cells, got {len(record)}")
        rows.append(_parse_row(path, i, dict(zip(columns, record, strict=True))))
    return BenchmarkFile(path=path, columns=columns, rows=rows)


def format_cell(value: Any) -> str:
    """A typed value as the released CSV writes it (structured fields as JSON)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def write_benchmark_csv(path: Path, columns: list[str], rows: list[list[str]]) -> Path:
    """Python's csv dialect (minimal quoting, CRLF), as the released files use."""
    with benchmark_csv_writer(path, columns) as writer:
        writer.writerows(rows)
    return path


@contextmanager
def benchmark_csv_writer(path: Path, columns: list[str]) -> Iterator[Any]:
    """A ``csv.writer`` on ``path`` with the header written, for rows written as they are made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        yield writer
