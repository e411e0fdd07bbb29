"""PersonaMem-v2 interop: strict reading, loading into the store, exact export, evaluation on it.

Fixtures: the shared real sample (persona 0, released column set) and ``fixtures/personamem_v2/mini``
(persona 3: the older link column names, Python-literal cells, lowercase booleans, NaN cells, a
multimodal message, a forget request, and a raw persona file).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from personasim.interop.personamem_v2.export import export_personamem_v2
from personasim.interop.personamem_v2.format import PersonaMemFormatError, read_benchmark_csv, read_chat_history
from personasim.interop.personamem_v2.load import build_memory_snapshots, load_personamem_v2, personamem_v2_run_id
from personasim.sim.rows import PersonaRow, PreferenceRow, QuestionRow, RunRow, SessionRow, TurnRow
from personasim.sim.store import StoreError, TrajectoryStore
from personasim.sim.store_read import read_questions

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "personamem_v2"
MINI = Path(__file__).resolve().parent / "fixtures" / "personamem_v2" / "mini"
MINI_CSV = "benchmark/text/benchmark.csv"
MINI_HISTORY = "data/chat_history_32k/chat_history_250902_091500_persona3.json"
MINI_RAW = "data/raw_data/interactions_250815_143643_persona3.json"

needs_shared = pytest.mark.skipif(
    not (SHARED / "benchmark.csv").is_file(),
    reason=f"the shared PersonaMem-v2 sample is not at {SHARED} (it ships beside the repository, not in it)",
)


def _store(tmp_path: Path, name: str = "s.duckdb") -> TrajectoryStore:
    return TrajectoryStore(tmp_path / name)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# -- loading -------------------------------------------------------------------------------------

@needs_shared
def test_shared_sample_loads_seven_four_option_questions(tmp_path):
    with _store(tmp_path) as store:
        run_id = load_personamem_v2(SHARED, store, strategies=[])
        questions = read_questions(store.con, run_id)
        persona = store.con.execute("SELECT name, age, gender, occupation FROM personas").fetchall()
        first = store.con.execute(
            "SELECT role, text FROM turns WHERE run_id = ? ORDER BY session_index, turn_index LIMIT 1", [run_id]
        ).fetchall()[0]
        (status, users) = store.con.execute("SELECT status, users FROM runs").fetchall()[0]
    rows = _csv_rows(SHARED / "benchmark.csv")
    assert run_id.startswith("pmv2-") and status == "completed" and users == 1
    assert len(questions) == 7
    by_id = {q.question_id: q for q in questions}
    for i, row in enumerate(rows):
        q = by_id[f"pmv2-persona0/pmv2/benchmark/{i}"]
        assert len(q.options) == 4
        assert q.option_sources.count("correct") == 1 and q.option_sources[q.correct_index] == "correct"
        assert q.options[q.correct_index] == row["correct_answer"]
        assert sorted(q.options) == sorted([row["correct_answer"], *json.loads(row["incorrect_answers"])])
        assert q.query == json.loads(row["user_query"])["content"]
        assert q.source == "personamem_v2" and json.loads(q.source_json or "") == row
        assert q.preference_statement == row["preference"] and q.pref_type == row["pref_type"]
        assert q.tokens_since_reveal == int(row["distance_from_related_snippet_to_query_32k"])
        assert q.reveals == len(json.loads(row["related_conversation_snippet"]))
    # row 0 asks to forget (and is flagged sensitive): forget first; row 2 is flagged sensitive_info=True
    assert [by_id[f"pmv2-persona0/pmv2/benchmark/{i}"].question_type for i in (0, 2)] == [
        "forget_compliance", "sensitive_info"]
    assert persona == [("Amara Nwosu", 28, "Female", "STEM Education Program Designer")]
    assert first[0] == "system" and "Amara Nwosu" in first[1], "the system prompt is kept as a turn"


@needs_shared
def test_option_order_is_stable_across_loads_and_processes(tmp_path):
    with _store(tmp_path, "a.duckdb") as a, _store(tmp_path, "b.duckdb") as b:
        first = {q.question_id: q.options for q in read_questions(a.con, load_personamem_v2(SHARED, a, strategies=[]))}
        second = {q.question_id: q.options for q in read_questions(b.con, load_personamem_v2(SHARED, b, strategies=[]))}
    assert first == second
    code = (
        "import json, sys\nfrom pathlib import Path\nfrom personasim.sim.store import TrajectoryStore\n"
        "from personasim.interop.personamem_v2.load import load_personamem_v2\n"
        "from personasim.sim.store_read import read_questions\n"
        "s = TrajectoryStore(Path(sys.argv[2]))\nrid = load_personamem_v2(Path(sys.argv[1]), s, strategies=[])\n"
        "print(json.dumps({q.question_id: q.options for q in read_questions(s.con, rid)}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run([sys.executable, "-c", code, str(SHARED), str(tmp_path / "c.duckdb")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == first
    rows = _csv_rows(SHARED / "benchmark.csv")
    slots = {first[f"pmv2-persona0/pmv2/benchmark/{i}"].index(row["correct_answer"]) for i, row in enumerate(rows)}
    assert len(slots) > 1, "the correct answer is not always in the same slot"


@needs_shared
def test_loading_twice_needs_overwrite(tmp_path):
    with _store(tmp_path) as store:
        run_id = load_personamem_v2(SHARED, store, strategies=[])
        assert personamem_v2_run_id(SHARED) == run_id != personamem_v2_run_id(MINI)
        with pytest.raises(StoreError, match="overwrite"):
            load_personamem_v2(SHARED, store, strategies=[])
        assert load_personamem_v2(SHARED, store, strategies=[], overwrite=True) == run_id
        assert store.con.execute("SELECT count(*) FROM questions").fetchall()[0][0] == 7


def test_fixture_literals_booleans_nan_and_raw_persona(tmp_path):
    with _store(tmp_path) as store:
        run_id = load_personamem_v2(MINI, store, strategies=[])
        qs = {q.question_id.rsplit("/", 1)[1]: q for q in read_questions(store.con, run_id)}
        persona = store.con.execute("SELECT name, age, occupation, city, country FROM personas").fetchall()
        prefs = dict(store.con.execute("SELECT statement, valid_to IS NULL FROM preferences").fetchall())
        sensitive = store.con.execute("SELECT statement FROM preferences WHERE sensitivity = 'health'").fetchall()
        drift = store.con.execute(
            "SELECT o.statement, n.statement, d.time = o.valid_to, d.time = n.valid_from FROM drift_events d "
            "JOIN preferences o ON o.preference_id = d.old_preference_id "
            "JOIN preferences n ON n.preference_id = d.new_preference_id").fetchall()
        facts = dict(store.con.execute("SELECT kind, value FROM sensitive_facts").fetchall())
        sessions = store.con.execute("SELECT scenario_id, n_turns FROM sessions ORDER BY session_index").fetchall()
    assert persona == [("Tomás Andrés Ibarra", 41, "Marine Field Biologist", "Portland", "USA")]
    assert qs["0"].question_type == "implicit_inference" and qs["0"].stale_statement is None
    assert qs["0"].reveals == 2 and qs["0"].tokens_since_reveal > 0  # Python-literal snippet; "201.0" count
    assert qs["1"].question_type == "updated_preference"
    assert qs["1"].stale_statement == "Prefers to drink dark roast coffee every morning."
    assert qs["1"].stale_preference_id and qs["1"].stale_preference_id.endswith("#0")
    assert qs["2"].question_type == "others_preference" and qs["2"].who == "others"
    assert qs["2"].tokens_since_reveal == -1, "an empty distance cell means unknown"
    assert prefs["Prefers to drink dark roast coffee every morning."] is False  # closed by the update
    assert prefs["Prefers a pot of sencha green tea in the morning."] is True
    assert drift == [("Prefers to drink dark roast coffee every morning.",
                      "Prefers a pot of sencha green tea in the morning.", True, True)]
    assert len(sensitive) == 1 and "burnout" in sensitive[0][0]
    assert facts["credit_card_number"] == "4000 0000 0000 0002" and len(facts) == 12
    assert sessions[0] == ("personamem_v2", 12) and [s[0] for s in sessions[1:]] == [
        "multimodal", "personal_email", "chat_message", "chat_message"]
    assert all(q.asked_at == qs["0"].asked_at for q in qs.values())


def test_multimodal_message_keeps_its_image_reference(tmp_path):
    with _store(tmp_path) as store:
        run_id = load_personamem_v2(MINI, store, strategies=[])
        rows = store.con.execute(
            "SELECT text, content_json FROM turns WHERE run_id = ? AND session_index = 0 AND content_json IS NOT NULL",
            [run_id]).fetchall()
    assert len(rows) == 1
    text, content_json = rows[0]
    parts = json.loads(content_json)
    assert text == parts[0]["text"] and text.startswith("This is the tide pool")
    assert parts[1]["image_url"]["url"].endswith("tide_pool/COCO_train2014_000000123456.jpg")


# -- export --------------------------------------------------------------------------------------

@pytest.mark.parametrize("folder", [
    pytest.param(SHARED, marks=needs_shared, id="shared-sample"),
    pytest.param(MINI, id="mini-fixture"),
])
def test_load_export_is_an_identity(tmp_path, folder):
    with _store(tmp_path) as store:
        run_id = load_personamem_v2(folder, store, strategies=[])
        written = export_personamem_v2(store.con, run_id, tmp_path / "out")
        questions = [q.model_dump(exclude={"run_id"}) for q in read_questions(store.con, run_id)]
    relative = sorted(p.relative_to(tmp_path / "out").as_posix() for p in written)
    expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                      if p.is_file() and (p.suffix == ".csv" or "chat_history_32k" in p.parts))
    assert relative == expected
    for rel in relative:
        original, exported = folder / rel, tmp_path / "out" / rel
        if rel.endswith(".csv"):
            a, b = read_benchmark_csv(original), read_benchmark_csv(exported)
            assert a.columns == b.columns
            typed = [[r.model_dump(exclude={"cells"}) for r in f.rows] for f in (a, b)]
            assert typed[0] == typed[1]
            assert [r.cells for r in a.rows] == [r.cells for r in b.rows]
        else:
            assert read_chat_history(original) == read_chat_history(exported)
            assert json.loads(original.read_text("utf-8")) == json.loads(exported.read_text("utf-8"))
        assert original.read_bytes() == exported.read_bytes(), f"{rel} differs byte-wise"
    with _store(tmp_path, "again.duckdb") as again:
        again_id = load_personamem_v2(tmp_path / "out", again, strategies=[])
        assert [q.model_dump(exclude={"run_id"}) for q in read_questions(again.con, again_id)] == questions
    if not (folder / "data" / "raw_data").exists():  # raw persona files are read, never written
        assert again_id == run_id, "the same files give the same run"


def _generated_store(tmp_path: Path, filler_turns: int = 0, filler_words: int = 0) -> tuple[TrajectoryStore, str]:
    """A tiny generated-style run written by hand: two users, one session each, three questions."""
    run_id, t0 = "gen-run-1", datetime(2025, 3, 1, 9)
    store = _store(tmp_path, "gen.duckdb")
    run = RunRow(run_id=run_id, seed=3, config_json="{}", personasim_version="0", world_data_hash="h",
                 package_versions_json="{}", users=2, sessions_per_user=1, status="completed")
    personas = [
        PersonaRow(run_id=run_id, persona_id="u0000", user_index=0, locale="en_US", name="Ada Byrne", age=34,
                   gender="female", occupation="pharmacist", city="Leeds", country="United Kingdom"),
        PersonaRow(run_id=run_id, persona_id="u0001", user_index=1, locale="fr_FR", name="Marc Lenoir", age=52,
                   gender="male", occupation="carpenter", city="Lyon", country="France"),
    ]

    def pref(pid: str, topic: str, option: str, version: int, sensitive: bool = False,
             valid_to: datetime | None = None) -> PreferenceRow:
        return PreferenceRow(run_id=run_id, preference_id=f"{pid}/{topic}/{option}#{version}", persona_id=pid,
                             domain="food", topic=topic, option=option, statement=f"I like {option}.",
                             polarity="likes", strength=0.8, sensitive=sensitive, valid_from=t0, valid_to=valid_to,
                             sensitivity="health" if sensitive else None, stereotype="stereotypical")

    prefs = [pref("u0000", "cuisine", "thai", 0, valid_to=t0 + timedelta(minutes=30)),
             pref("u0000", "cuisine", "sushi", 1), pref("u0001", "diet", "low_salt", 0, sensitive=True)]
    sessions, turns = [], []
    script = {
        "u0000": [("user", "Any quick lunch idea? I had pad thai yesterday and loved it.", "u0000/cuisine/thai#0"),
                  ("assistant", "A green curry would be quick and in the same spirit.", None),
                  ("user", "These days I crave nigiri more than anything.", "u0000/cuisine/sushi#1"),
                  ("assistant", "A small sushi bowl is fast to assemble.", None)],
        "u0001": [("user", "My doctor told me to watch the salt, what soup can I make?", "u0001/diet/low_salt#0"),
                  ("assistant", "A vegetable soup seasoned with herbs and lemon instead of salt.", None)],
    }
    for pid, lines in script.items():
        lines = [("user", " ".join(["filler"] * filler_words), None)] * filler_turns + lines
        sid = f"{pid}/s0000"
        for i, (role, text, reveal) in enumerate(lines):
            turns.append(TurnRow(
                run_id=run_id, turn_id=f"{sid}/t{i:03d}", session_id=sid, persona_id=pid, session_index=0,
                turn_index=i, role=role, text=text, time=t0 + timedelta(minutes=i), tokens=len(text.split()),
                prompt_tokens=None, completion_tokens=None, revealed_preference_id=reveal,
                reveal_mode="implicit" if reveal else None, hint_kind=None, forget_preference_id=None,
                leak_similarity=None, leaked=None))
        sessions.append(SessionRow(run_id=run_id, session_id=sid, persona_id=pid, session_index=0, scenario_id="meal",
                                   started_at=t0, ended_at=t0 + timedelta(minutes=len(lines)), n_turns=len(lines),
                                   status="completed"))
    asked = t0 + timedelta(days=1)

    def question(pid: str, n: int, qtype: str, pref_id: str, stale: str | None, options: list[str],
                 correct: int) -> QuestionRow:
        sources = ["stale" if stale and i == 0 and i != correct else "alternative" for i in range(len(options))]
        sources[correct] = "correct"
        return QuestionRow(run_id=run_id, question_id=f"{pid}/q{n}", persona_id=pid, question_type=qtype,
                           asked_at=asked, topic=pref_id.split("/")[1], scenario_id="meal_planning",
                           query="What should I cook tonight?", options=options, option_sources=sources,
                           correct_index=correct, preference_id=pref_id, stale_preference_id=stale,
                           reveal_mode="implicit", reveals=1, sessions_since_reveal=0, tokens_since_reveal=12,
                           preference_statement=f"I like {pref_id.split('/')[2].split('#')[0]}.",
                           stale_statement="I like thai." if stale else None,
                           pref_type="stereotypical", who="self")

    questions = [
        question("u0000", 0, "updated_preference", "u0000/cuisine/sushi#1", "u0000/cuisine/thai#0",
                 ["Make a green curry.", "Roll some sushi at home.", "Grill a steak.", "Bake a pizza."], 1),
        question("u0000", 1, "explicit_recall", "u0000/cuisine/sushi#1", None,
                 ["Poke bowl with salmon.", "Lasagna.", "Tacos.", "Goulash."], 0),
        question("u0001", 0, "implicit_inference", "u0001/diet/low_salt#0", None,
                 ["Salted ramen.", "Herb-roasted vegetables with lemon.", "Cured ham platter.", "Soy-glazed pork."], 1),
    ]
    store.write_many([("runs", [run]), ("personas", personas), ("preferences", prefs), ("sessions", sessions),
                      ("turns", turns), ("questions", questions)])
    return store, run_id


def test_generated_run_exports_in_their_format_and_loads_back(tmp_path):
    store, run_id = _generated_store(tmp_path)
    with store:
        written = export_personamem_v2(store.con, run_id, tmp_path / "out")
        originals = {q.question_id: q for q in read_questions(store.con, run_id)}
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in written)
    assert names == ["benchmark/text/benchmark.csv", "data/chat_history_32k/chat_history_gen_run_1_persona0.json",
                     "data/chat_history_32k/chat_history_gen_run_1_persona1.json"]
    bench = read_benchmark_csv(tmp_path / "out" / "benchmark" / "text" / "benchmark.csv")
    assert bench.columns[:3] == ["persona_id", "chat_history_32k_link", "chat_history_128k_link"]
    assert bench.columns[-2:] == ["num_persona_irrelevant_tokens_32k", "question_type"]
    updated, recall, other = bench.rows
    assert updated.persona_id == 0 and updated.updated and updated.prev_pref == "I like thai."
    assert updated.correct_answer == "Roll some sushi at home."
    assert updated.incorrect_answers == ["Make a green curry.", "Grill a steak.", "Bake a pizza."]
    assert [m.text for m in updated.related_conversation_snippet] == [
        "These days I crave nigiri more than anything.", "A small sushi bowl is fast to assemble."]
    assert updated.user_query.role == "user" and updated.user_query.text == "What should I cook tonight?"
    assert not recall.updated and not recall.sensitive_info and other.sensitive_info  # low salt is health
    history = read_chat_history(tmp_path / "out" / "data" / "chat_history_32k" /
                                "chat_history_gen_run_1_persona0.json")
    assert history.chat_history[0].role == "system" and '"name": "Ada Byrne"' in history.chat_history[0].text
    assert [m.role for m in history.chat_history[1:]] == ["user", "assistant", "user", "assistant"]
    assert history.metadata["persona_id"] == 0 and "trimmed_from_total_messages" not in history.metadata
    tokens = updated.token_count("total_tokens_in_chat_history_32k")
    assert tokens == history.metadata["final_token_count"]
    assert updated.token_count("num_persona_relevant_tokens_32k") + updated.token_count(
        "num_persona_irrelevant_tokens_32k") == tokens

    with _store(tmp_path, "loaded.duckdb") as loaded:
        new_id = load_personamem_v2(tmp_path / "out", loaded, strategies=[])
        questions = read_questions(loaded.con, new_id)
        people = loaded.con.execute("SELECT user_index, name, age, city FROM personas ORDER BY 1").fetchall()
    assert people == [(0, "Ada Byrne", 34, "Leeds"), (1, "Marc Lenoir", 52, "Lyon")]
    assert len(questions) == 3
    assert {q.options[q.correct_index] for q in questions} == {
        q.options[q.correct_index] for q in originals.values()}
    # the exact types come back through personasim's extra question_type column
    assert sorted(q.question_type for q in questions) == sorted(q.question_type for q in originals.values())


def test_generated_history_over_the_window_is_trimmed(tmp_path):
    store, run_id = _generated_store(tmp_path, filler_turns=40, filler_words=1000)
    with store:
        export_personamem_v2(store.con, run_id, tmp_path / "out")
    history = read_chat_history(tmp_path / "out" / "data" / "chat_history_32k" /
                                "chat_history_gen_run_1_persona0.json")
    meta = history.metadata
    assert meta["trimmed_from_total_messages"] == 1 + 40 + 4 > meta["total_messages"] == len(history.chat_history)
    assert history.chat_history[0].role == "system"
    assert meta["final_token_count"] <= 32_000
    assert history.chat_history[-1].text == "A small sushi bowl is fast to assemble.", "the most recent turns are kept"


# -- malformed input -----------------------------------------------------------------------------

def _truncate(path: Path) -> None:
    """Cut a JSON file inside a string, as an interrupted download leaves it."""
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: text.index('"content"') + 15], encoding="utf-8")


def _link_outside(folder: Path, rel: str) -> None:
    """A symlink in the dataset that points at a file outside it."""
    outside = folder.parent / "secret_persona3.json"
    outside.write_text("[]", encoding="utf-8")
    (folder / rel).symlink_to(outside)


def _mini_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "mini"
    shutil.copytree(MINI, folder)
    return folder


def _edit_csv(folder: Path, edit) -> None:
    path = folder / MINI_CSV
    with path.open(encoding="utf-8", newline="") as f:
        records = list(csv.reader(f))
    edit(records)
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(records)


def _set_cell(column: str, row: int, value: str):
    def edit(records: list[list[str]]) -> None:
        records[row][records[0].index(column)] = value
    return edit


def _drop_column(column: str):
    def edit(records: list[list[str]]) -> None:
        i = records[0].index(column)
        for r in records:
            del r[i]
    return edit


def _edit_json(folder: Path, rel: str, edit) -> None:
    path = folder / rel
    obj = json.loads(path.read_text("utf-8"))
    edit(obj)
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


def _bad_role(obj: dict) -> None:
    obj["chat_history"][3]["role"] = "bot"


def _not_a_list(obj: dict) -> None:
    obj["chat_history"] = "oops"


def _bad_part(obj: dict) -> None:
    obj["chat_history"][5]["content"][1] = {"type": "video", "url": "x"}


def _bad_raw_role(obj: dict) -> None:
    next(iter(obj.values()))["conversations"]["personal_email"][0]["conversations"][0]["role"] = "narrator"


@pytest.mark.parametrize(("mutate", "needles"), [
    (lambda f: _edit_csv(f, _set_cell("incorrect_answers", 2, "abc")),
     ["benchmark.csv row 2", "field incorrect_answers", "expected a list of strings", "'abc'"]),
    (lambda f: _edit_csv(f, _set_cell("incorrect_answers", 1, "['unterminated")),
     ["benchmark.csv row 1", "incorrect_answers"]),
    (lambda f: _edit_csv(f, _drop_column("correct_answer")), ["benchmark.csv", "missing", "correct_answer"]),
    (lambda f: _edit_csv(f, _set_cell("updated", 3, "yes")), ["benchmark.csv row 3", "field updated", "True or False"]),
    (lambda f: _edit_csv(f, _set_cell("user_query", 1, "{'role': 'user'}")), ["benchmark.csv row 1", "user_query"]),
    (lambda f: _edit_csv(f, _set_cell("persona_id", 2, "three")), ["benchmark.csv row 2", "persona_id", "integer"]),
    (lambda f: _edit_csv(f, _set_cell("persona_id", 2, "4")), ["benchmark.csv row 2", "persona_id", "persona3"]),
    (lambda f: _edit_csv(f, _set_cell("chat_history_link", 1, "data/chat_history_32k/gone_persona3.json")),
     ["benchmark.csv row 1", "field chat_history_link", "gone_persona3.json", "does not exist"]),
    (lambda f: _edit_json(f, MINI_HISTORY, _bad_role),
     ["chat_history_250902_091500_persona3.json", "chat_history[3].role", "system, user, assistant", "'bot'"]),
    (lambda f: _edit_json(f, MINI_HISTORY, _not_a_list),
     ["chat_history_250902_091500_persona3.json", "chat_history", "list"]),
    (lambda f: _edit_json(f, MINI_HISTORY, _bad_part),
     ["chat_history_250902_091500_persona3.json", "chat_history[5].content", "image_url"]),
    (lambda f: (f / MINI_HISTORY).write_text("{not json", encoding="utf-8"),
     ["chat_history_250902_091500_persona3.json", "not valid JSON"]),
    (lambda f: _truncate(f / MINI_HISTORY),
     ["chat_history_250902_091500_persona3.json", "not valid JSON: Unterminated string starting, line",
      "is the file truncated?"]),
    (lambda f: _link_outside(f, "data/chat_history_32k/extra_persona3.json"),
     ["extra_persona3.json: links to", "outside the dataset folder", "copy the file into the folder"]),
    (lambda f: _edit_json(f, MINI_RAW, _bad_raw_role),
     ["interactions_250815_143643_persona3.json", "conversations.personal_email[0].conversations[0].role"]),
], ids=["bad-json-list", "bad-literal", "missing-column", "bad-boolean", "query-without-content", "bad-int",
        "persona-mismatch", "missing-link", "bad-role", "history-not-a-list", "bad-content-part", "broken-json",
        "truncated-json", "link-outside",
        "raw-bad-role"])
def test_malformed_input_names_file_row_and_field(tmp_path, mutate, needles):
    folder = _mini_copy(tmp_path)
    mutate(folder)
    with _store(tmp_path) as store, pytest.raises(PersonaMemFormatError) as info:
        load_personamem_v2(folder, store, strategies=[])
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    with _store(tmp_path) as store:
        assert store.con.execute("SELECT count(*) FROM runs").fetchall()[0][0] == 0, "nothing is half-written"


def test_empty_folder_says_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with _store(tmp_path) as store, pytest.raises(PersonaMemFormatError, match=r"empty.*no PersonaMem-v2 files.*\.csv"):
        load_personamem_v2(tmp_path / "empty", store)


@needs_shared
def test_window_without_links_is_reported(tmp_path):
    with _store(tmp_path) as store, pytest.raises(PersonaMemFormatError, match="row 1, field chat_history_128k_link"):
        load_personamem_v2(SHARED, store, window="128k", strategies=[])


# -- evaluation ----------------------------------------------------------------------------------

def test_evaluation_runs_unchanged_on_a_loaded_run(tmp_path):
    from personasim.agents.embedding import default_embedder
    from personasim.analysis.evaluate import answer_questions
    from personasim.analysis.reader import EmbeddingReader

    with _store(tmp_path) as store:
        run_id = load_personamem_v2(MINI, store)  # default strategies, agentic included
        defaults = store.con.execute("SELECT DISTINCT strategy FROM memory_snapshots ORDER BY 1").fetchall()
        rows = build_memory_snapshots(store, run_id, ["none", "full_history"])
        assert len(rows) == 2 * 5  # persona 3 has five sessions (one history, four raw conversations)
        snapshots = store.con.execute(
            "SELECT strategy, count(*) FROM memory_snapshots GROUP BY 1 ORDER BY 1").fetchall()
        history = store.con.execute(
            "SELECT text, items FROM memory_snapshots WHERE snapshot_id = 'pmv2-persona3/s0000/mem/full_history'"
        ).fetchall()[0]
        questions = read_questions(store.con, run_id)
        answers = answer_questions(store.con, run_id, questions, ["none", "full_history"],
                                   EmbeddingReader(default_embedder()))
    assert defaults == [("agentic",), ("full_history",), ("none",)]
    assert snapshots == [("agentic", 5), ("full_history", 5), ("none", 5)], "rebuilding replaces, never duplicates"
    text, items = history
    assert "You are an AI assistant" not in text, "the system prompt never reaches a memory"
    assert any("heavy metal" in i for i in items), "the raw history keeps the forget request (issue 18)"
    assert len(answers) == len(questions) * 2 == 6
    by_q = {q.question_id: q for q in questions}
    for a in answers:
        assert 0 <= a.chosen_index < len(by_q[a.question_id].options)
        assert a.snapshot_id == f"pmv2-persona3/s0000/mem/{a.strategy}", "the snapshot at the end of the history"


# -- splits and bad input (issue 18) -------------------------------------------------------------

def _with_split(folder: Path, split: str, keep_rows: int) -> None:
    """``benchmark/text/{split}.csv``: the mini benchmark's first ``keep_rows`` rows."""
    with (folder / MINI_CSV).open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    with (folder / "benchmark" / "text" / f"{split}.csv").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows[: keep_rows + 1])


def test_each_split_is_loaded_alone_and_a_missing_split_names_the_ones_there(tmp_path):
    folder = _mini_copy(tmp_path)
    _with_split(folder, "train", keep_rows=1)
    with _store(tmp_path) as store:
        bench = load_personamem_v2(folder, store, strategies=[])
        train = load_personamem_v2(folder, store, strategies=[], split="train")
        assert bench != train
        assert len(read_questions(store.con, bench)) == 3 and len(read_questions(store.con, train)) == 1
    missing = pytest.raises(PersonaMemFormatError, match=r"no val\.csv.*benchmark, train")
    with _store(tmp_path, "v.duckdb") as store, missing:
        load_personamem_v2(folder, store, strategies=[], split="val")
    assert personamem_v2_run_id(folder) == bench  # the default split keeps the run id it always had


def test_a_multimodal_split_is_named_as_not_read(tmp_path, ray_session):
    from typer.testing import CliRunner

    from personasim.cli import app

    folder = _mini_copy(tmp_path)
    (folder / "benchmark" / "multimodal").mkdir()
    result = CliRunner().invoke(app, ["audit", "--personamem-v2", str(folder)])
    assert result.exit_code == 0, result.output
    assert "benchmark/multimodal/ is not read" in result.output


@pytest.mark.parametrize(("persona", "expected"), [
    ({"name": "Amara Nwosu", "age": 28, "gender": "Female",
      "occupation": {"job_title": "STEM Education Program Designer", "work_location": "Washington, D.C."}},
     {"occupation": "STEM Education Program Designer", "city": "Washington", "country": "", "age": 28}),
    ({"name": "Li Wei", "age": "41 years old", "occupation": {"current_position": "Head Nurse"},
      "current_residence": "Austin, Texas, USA"},
     {"occupation": "Head Nurse", "city": "Austin", "country": "USA", "age": 41}),
    ({"name": {"first": "Jo", "last": "Park"}, "employment": {"job_title": "Line Cook"},
      "location": {"city": "Lyon", "country": "France"}},
     {"name": "Jo Park", "occupation": "Line Cook", "city": "Lyon", "country": "France", "age": -1}),
    ({"basic_info": {"full_name": "Sam Roe", "age": 63, "sex": "male"}, "career": {"role": "Retired pilot"},
      "home": {"town": "Cork", "nation": "Ireland"}},
     {"name": "Sam Roe", "gender": "male", "occupation": "Retired pilot", "city": "Cork", "country": "Ireland"}),
], ids=["occupation.job_title", "occupation.current_position", "employment.job_title", "generic"])
def test_demographics_are_read_from_every_persona_layout(persona, expected):
    from personasim.interop.personamem_v2.load import demographics_from

    found = demographics_from(persona)
    assert {k: found[k] for k in expected} == expected


@needs_shared
def test_every_loaded_question_names_a_stored_preference_and_the_sensitive_flag_sets_the_type(tmp_path):
    from personasim.interop.personamem_v2.format import read_benchmark_csv
    from personasim.interop.personamem_v2.load import question_type

    with _store(tmp_path) as store:
        run_id = load_personamem_v2(SHARED, store, strategies=[])
        dangling = store.con.execute(
            "SELECT count(*) FROM questions q WHERE q.run_id = ? AND NOT EXISTS (SELECT 1 FROM preferences p "
            "WHERE p.run_id = q.run_id AND p.preference_id = q.preference_id)", [run_id]).fetchall()[0][0]
        stale = store.con.execute(
            "SELECT count(*) FROM questions q WHERE q.run_id = ? AND q.stale_preference_id IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM preferences p WHERE p.run_id = q.run_id AND p.preference_id = q.stale_preference_id)",
            [run_id]).fetchall()[0][0]
        assert store.con.execute("SELECT count(*) FROM preferences WHERE run_id = ?", [run_id]).fetchall()[0][0] > 0
    assert dangling == 0 and stale == 0
    rows = read_benchmark_csv(SHARED / "benchmark.csv").rows
    flagged = [r for r in rows if r.sensitive_info and not r.updated and r.pref_type != "ask_to_forget"]
    assert all(question_type(r) == "sensitive_info" for r in flagged)


def test_agentic_memory_can_be_written_by_a_model_server_and_the_output_names_the_writer(tmp_path, ray_session):
    """`eval --personamem-v2 DIR --memory-backend FILE`: the agentic memory is what the served model
    wrote; without it the scripted note-taker writes it, and the output says it is a baseline."""
    from typer.testing import CliRunner

    from personasim.cli import app
    from personasim.interop.personamem_v2.api import evaluate_personamem_v2
    from tests.openai_server import FakeOpenAIServer

    folder = _mini_copy(tmp_path)
    db = tmp_path / "pm.duckdb"
    scripted = evaluate_personamem_v2(folder, db, strategies=["none", "agentic"], n_boot=20)
    assert any("scripted note-taker (a rule-based baseline" in note for note in scripted.notes)
    note = "[2025-01-01] Counts sea urchins in kelp beds on weekend dives."
    with FakeOpenAIServer(reply=lambda prompt: note) as server:
        (tmp_path / "writer.toml").write_text(
            f'kind = "openai"\nmodel = "note-writer"\nbase_url = "{server.base_url}"\nmax_retries = 0\n')
        result = CliRunner().invoke(app, ["eval", "--personamem-v2", str(folder), "--db", str(db), "--strategies",
                                          "none,agentic", "--memory-backend", str(tmp_path / "writer.toml"),
                                          "--bootstrap", "20", "--quiet"])
        assert result.exit_code == 0, result.output
        assert server.calls > 0 and any("MEMORY" in str(m) or "memory" in str(m) for r in server.requests
                                        for m in r["messages"])
    assert "memories written by openai model note-writer at http://127.0.0.1" in " ".join(result.output.split())
    with _store(tmp_path, "pm.duckdb") as store:
        items = {tuple(i) for (i,) in store.con.execute(
            "SELECT items FROM memory_snapshots WHERE strategy = 'agentic'").fetchall()}
    assert items == {(note,)}, "every agentic snapshot is the served model's rewrite"
    again = evaluate_personamem_v2(folder, db, strategies=["none", "agentic"], n_boot=20)  # no backend: kept
    assert any("openai model note-writer" in n for n in again.notes)


def test_a_loaded_full_history_is_the_raw_history_forget_requests_included(tmp_path):
    """As in the seed, forgetting is the reader's job on their data: the memory deletes nothing."""
    folder = _mini_copy(tmp_path)
    history = read_chat_history(folder / MINI_HISTORY)
    said = [m.text for m in history.chat_history if m.role != "system"]
    with _store(tmp_path) as store:
        run_id = load_personamem_v2(folder, store, strategies=["full_history"])
        items = store.con.execute(
            "SELECT items FROM memory_snapshots WHERE run_id = ? AND strategy = 'full_history' AND session_index = 0",
            [run_id]).fetchall()[0][0]
    assert any("Please forget my preference about heavy metal" in i for i in items), "the request is kept"
    assert len(items) == len(said), "nothing deleted"
