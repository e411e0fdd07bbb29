"""Failures are called failures, and bad input writes nothing (issue 18).

The probes are the rows of docs/failures.md: the test reads that table and runs each row, so the
table stays true. Probes that need a fresh process (an embedded Ray of their own, an environment
variable the Ray workers must see) run the real CLI in a subprocess; the rest use typer's runner.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from personasim.agents.secrets import REDACTED_SECRET, scrub_secrets
from tests.openai_server import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "failures.md"
MINI = Path(__file__).resolve().parent / "fixtures" / "personamem_v2" / "mini"
MINI_CSV = "benchmark/text/benchmark.csv"
MINI_HISTORY = "data/chat_history_32k/chat_history_250902_091500_persona3.json"
KEY = "sk-test-0123456789abcdefSECRET"


#: What a probe did: its exit status, everything it printed, the store it was pointed at, and that
#: store's runs just before the failing command (None when there was no store).
Outcome = tuple[int, str, Path, list[tuple] | None]


def _cli(args: list[str]) -> tuple[int, str]:
    from personasim.cli import app

    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def _subprocess(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-m", "personasim.cli", *args], capture_output=True, text=True,
                         timeout=300, env={**os.environ, **(env or {})})
    return out.returncode, out.stdout + out.stderr


def _contents(db: Path) -> list[tuple] | None:
    if not db.exists():
        return None
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT run_id, status, (SELECT count(*) FROM sessions), (SELECT count(*) FROM answers) "
                           "FROM runs ORDER BY run_id").fetchall()
    finally:
        con.close()


# -- probes --------------------------------------------------------------------------------------

def _mini(tmp: Path) -> Path:
    folder = tmp / "mini"
    shutil.copytree(MINI, folder)
    return folder


def _header_only(tmp: Path) -> Path:
    folder = _mini(tmp)
    (folder / MINI_CSV).write_text((folder / MINI_CSV).read_text(encoding="utf-8").splitlines()[0] + "\n")
    return folder


def _eval_folder(folder: Path, tmp: Path, *extra: str) -> Outcome:
    db = tmp / "eval.duckdb"
    code, output = _cli(["eval", "--personamem-v2", str(folder), "--db", str(db), "--quiet", *extra])
    return code, output, db, None


def probe_header_only(tmp: Path) -> Outcome:
    return _eval_folder(_header_only(tmp), tmp)


def probe_missing_split(tmp: Path) -> Outcome:
    return _eval_folder(_mini(tmp), tmp, "--split", "val")


def probe_symlink(tmp: Path) -> Outcome:
    folder = _mini(tmp)
    outside = tmp / "secret_persona3.json"
    outside.write_text("[]", encoding="utf-8")
    (folder / "data" / "chat_history_32k" / "extra_persona3.json").symlink_to(outside)
    return _eval_folder(folder, tmp)


def probe_truncated(tmp: Path) -> Outcome:
    folder = _mini(tmp)
    text = (folder / MINI_HISTORY).read_text(encoding="utf-8")
    (folder / MINI_HISTORY).write_text(text[: text.index('"content"') + 15], encoding="utf-8")
    return _eval_folder(folder, tmp)


def probe_existing_store(tmp: Path) -> Outcome:
    db = tmp / "eval.duckdb"
    code, output = _cli(["audit", "--personamem-v2", str(_mini(tmp)), "--db", str(db)])
    assert code == 0, output
    before = _contents(db)
    bad = tmp / "bad"
    bad.mkdir()
    return (*_cli(["audit", "--personamem-v2", str(_header_only(bad)), "--db", str(db)]), db, before)


_BOMB = "\n".join(["chatbot_backend:", "  kind: openai", "  model_info:",
                   "    a: &a [x, x, x, x, x, x, x, x, x]", "    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]",
                   "    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]", "    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]",
                   "    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]", "    f: [*e, *e, *e, *e, *e, *e, *e, *e, *e]"])


def _run_config(name: str, content: bytes) -> Callable[[Path], Outcome]:
    def probe(tmp: Path) -> Outcome:
        (tmp / name).write_bytes(content)
        db = tmp / "run.duckdb"
        code, output = _cli(["run", "--config", str(tmp / name), "--db", str(db), "--quiet"])
        assert name in output or "model_info" in output, output  # the message names the file or the field
        return code, output, db, None
    return probe


def probe_address(tmp: Path) -> Outcome:
    (tmp / "run.json").write_text(json.dumps({"engine": {"connect_timeout_s": 1}}))
    db = tmp / "run.duckdb"
    code, output = _subprocess(["run", "--config", str(tmp / "run.json"), "--users", "2", "--sessions", "1",
                                "--address", "127.0.0.1:1", "--db", str(db), "--quiet"])
    assert len(output.strip().splitlines()) == 1, output  # one line, no "Failed to connect to GCS" loop
    return code, output, db, None


def probe_refusing_server(tmp: Path) -> Outcome:
    db = tmp / "run.duckdb"
    with FakeOpenAIServer(fail_if=lambda body: True, fail_status=401, echo_key=True) as server:
        config = {"seed": 1, "population": {"users": 2}, "schedule": {"sessions": 2},
                  "memory": {"strategies": ["none", "full_history"], "chatbot": "full_history"},
                  "chatbot_backend": {"kind": "openai", "model": "m", "base_url": server.base_url,
                                      "api_key_env": "PERSONASIM_TEST_KEY", "max_retries": 0}}
        (tmp / "llm.json").write_text(json.dumps(config))
        code, output = _subprocess(["run", "--config", str(tmp / "llm.json"), "--db", str(db), "--quiet"],
                                   env={"PERSONASIM_TEST_KEY": KEY})
    assert "accuracy" not in output and KEY not in output
    con = duckdb.connect(str(db), read_only=True)
    errors = [e for (e,) in con.execute("SELECT error FROM sessions").fetchall()]
    con.close()
    assert errors and all("Incorrect API key provided" in e and REDACTED_SECRET in e and KEY not in e for e in errors)
    return code, output, db, None


#: A small finished run (``stored_run``, built once) and its run id.
StoredRun = tuple[Path, str]


def _copy_stored_run(tmp: Path, status: str, stored: StoredRun) -> Path:
    """A copy of the small finished run, its status then set as a kill (``interrupted``) or a failure leaves it."""
    from personasim.sim.store import open_store
    from personasim.sim.store_runs import set_run_status

    template, run_id = stored
    db = tmp / "run.duckdb"
    shutil.copy(template, db)
    if status != "completed":
        with open_store(db, write=True) as store:
            set_run_status(store, run_id, status)  # type: ignore[arg-type]
    return db


def _on_stored(status: str, *args: str) -> Callable[[Path, StoredRun], Outcome]:
    def probe(tmp: Path, stored: StoredRun) -> Outcome:
        db = _copy_stored_run(tmp, status, stored)
        run_id = stored[1]
        filled = [a.replace("{db}", str(db)).replace("{run}", run_id).replace("{tmp}", str(tmp)) for a in args]
        before = _contents(db)
        return (*_cli(filled), db, before)
    probe.on_stored_run = True  # type: ignore[attr-defined]  # the test passes it stored_run
    return probe


PROBES: dict[str, Callable[..., Outcome]] = {
    "header-only benchmark CSV": probe_header_only,
    "split not in the folder": probe_missing_split,
    "symlink out of the dataset": probe_symlink,
    "truncated chat-history JSON": probe_truncated,
    "bad files loaded into an existing store": probe_existing_store,
    "YAML alias bomb in `model_info`": _run_config("bomb.yaml", _BOMB.encode()),
    "self-referring YAML": _run_config("self.yaml", b"population: &p\n  users: 2\n  me: *p\n"),
    "100,000-deep nesting": _run_config("deep.json", b"[" * 100_000 + b"]" * 100_000),
    "config file not in UTF-8": _run_config("latin1.toml", "seed = 1 # caf\xe9\n".encode("latin-1")),
    "unknown `model_info` key": _run_config(
        "info.yaml", b"chatbot_backend:\n  kind: openai\n  model_info: {vision: false, payload: 'x'}\n"),
    "nothing listens at `--address`": probe_address,
    "server refuses every call, 401 echoing the key": probe_refusing_server,
    "`eval` on a killed run": _on_stored("interrupted", "eval", "--db", "{db}"),
    "`report` on a killed run": _on_stored("interrupted", "report", "--db", "{db}", "--out", "{tmp}/report"),
    "`audit` on a killed run": _on_stored("interrupted", "audit", "--db", "{db}"),
    "`export` on a killed run": _on_stored("interrupted", "export", "--db", "{db}", "--out", "{tmp}/export"),
    "`eval` on a failed run": _on_stored("failed", "eval", "--db", "{db}"),
    "`--resume` on a completed run": _on_stored("completed", "run", "--resume", "--db", "{db}", "--run", "{run}"),
    "`--resume` with a flag that differs": _on_stored(
        "interrupted", "run", "--resume", "--db", "{db}", "--users", "2", "--sessions", "1", "--seed", "5",
        "--memory", "none"),
    "`--resume` and `--overwrite` together": _on_stored(
        "interrupted", "run", "--resume", "--overwrite", "--db", "{db}"),
    "LLM reader at an unreachable server": _on_stored(
        "completed", "eval", "--db", "{db}", "--reader", "llm", "--reader-model", "m", "--reader-base-url",
        "http://127.0.0.1:1/v1", "--reader-max-retries", "0", "--strategies", "none", "--quiet"),
}


def _table() -> list[dict[str, str]]:
    """docs/failures.md's table, one dict per row (cells without their backticks where they quote)."""
    rows = []
    lines = [line for line in TABLE.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    for line in lines[1:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def test_the_table_and_the_probes_name_the_same_cases():
    assert [row["probe"] for row in _table()] == list(PROBES)


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory, ray_session) -> StoredRun:
    """The small finished run the probes on a stored run are pointed at: built once, each probe gets a copy."""
    from personasim.api import run
    from personasim.config import build_config

    db = tmp_path_factory.mktemp("stored") / "run.duckdb"
    config = build_config(users=2, sessions=1, seed=3, memory="none")
    run(config, db)
    return db, config.run_id


@pytest.mark.parametrize("row", _table(), ids=lambda row: row["probe"])
def test_every_row_of_the_failure_table_holds(row, tmp_path, ray_session, request):
    probe = PROBES[row["probe"]]
    if getattr(probe, "on_stored_run", False):
        code, output, db, before = probe(tmp_path, request.getfixturevalue("stored_run"))
    else:
        code, output, db, before = probe(tmp_path)
    assert code == int(row["exit"]), output
    excerpt = row["message contains"].strip("`")
    assert excerpt in " ".join(output.split()), output  # rich may wrap a long line
    store = row["store afterwards"]
    if store == "no file":
        assert not db.exists() and not Path(f"{db}.wal").exists(), "nothing is written"
    elif store == "unchanged":
        assert before is not None and _contents(db) == before
    elif store == "run failed, sessions kept":
        [(_, status, sessions, answers)] = _contents(db) or [(None, None, 0, 0)]
        assert status == "failed" and sessions > 0 and answers == 0
    else:
        raise AssertionError(f"unknown store state {store!r} in {TABLE}")


# -- pieces the table relies on ------------------------------------------------------------------

def test_scrub_removes_known_keys_and_token_shapes_and_keeps_the_rest():
    text = f"AuthenticationError: Incorrect API key provided: Bearer {KEY} (status 401) for plainvalue42"
    scrubbed = scrub_secrets(text, ["plainvalue42"])
    assert KEY not in scrubbed and "plainvalue42" not in scrubbed
    assert scrubbed.startswith("AuthenticationError: Incorrect API key provided: ") and "(status 401)" in scrubbed
    assert scrubbed.count(REDACTED_SECRET) == 2
    assert scrub_secrets("sk-proj-abcdefghij and hf_abcdefghijklmnop") == f"{REDACTED_SECRET} and {REDACTED_SECRET}"
    assert scrub_secrets("a task: ask the bearer of good news") == "a task: ask the bearer of good news"


def test_an_evaluation_killed_while_answering_keeps_what_it_answered(small_run, tmp_path, monkeypatch):
    from personasim.analysis import evaluate as evaluation
    from personasim.analysis.reader import ReaderAnswer

    class DiesMidway:
        """A reader that answers option 0 and dies on its 121st question, as a killed LLM eval would."""

        name = "midway"

        def __init__(self) -> None:
            self.calls = 0

        def answer(self, context_items, query, options):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls > 120:
                raise KeyboardInterrupt
            return ReaderAnswer(chosen_index=0, scores=[1.0] + [0.0] * (len(options) - 1))

    _, db = small_run
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    monkeypatch.setattr(evaluation, "build_reader", lambda spec, cache=None: DiesMidway())
    with pytest.raises(KeyboardInterrupt):
        evaluation.evaluate(copy, strategies=["none", "agentic"], n_boot=20)
    con = duckdb.connect(str(copy), read_only=True)
    kept = con.execute("SELECT count(*) FROM answers WHERE reader = 'midway'").fetchall()[0][0]
    con.close()
    assert kept == 120 - 120 % evaluation.ANSWER_BATCH  # every full batch before the kill is committed
