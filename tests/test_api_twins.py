"""Every command's Python twin: a public function exported from ``personasim``, and command modules
that only parse options and print (no ``cli*`` module imports another's helpers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import personasim
from personasim.sim.store import StoreError

ROOT = Path(__file__).resolve().parents[1]
TWINS = ("run", "resume", "evaluate", "evaluate_personamem_v2", "audit", "audit_personamem_v2", "report",
         "export", "export_benchmark", "export_training", "compare", "train")


@pytest.mark.parametrize("name", TWINS)
def test_every_command_has_a_documented_twin_at_the_top(name):
    twin = getattr(personasim, name)
    assert callable(twin) and twin.__doc__, name
    assert name in personasim.__all__


def test_the_old_evaluation_module_is_gone_and_its_names_live_in_analysis():
    from personasim.analysis import evaluate as module

    assert not (ROOT / "personasim" / "evaluation.py").exists()
    assert personasim.evaluate is module.evaluate and personasim.ReaderSpec is module.ReaderSpec
    assert personasim.EvalSummary is module.EvalSummary


def test_no_command_module_imports_the_cli_or_another_command_module():
    for path in sorted((ROOT / "personasim").glob("cli_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                assert not (name == "personasim.cli" or name.startswith("personasim.cli_")), (
                    f"{path.name}:{node.lineno} imports {name}; shared helpers belong in personasim.terminal")


@pytest.mark.parametrize("call", [
    lambda db, out: personasim.audit(db),
    lambda db, out: personasim.report(db, out),
    lambda db, out: personasim.export(db, out),
    lambda db, out: personasim.export(db, out, "sft"),
    lambda db, out: personasim.compare(db, "agentic", "none"),
], ids=["audit", "report", "export-pmv2", "export-sft", "compare"])
def test_twins_name_the_command_that_creates_a_missing_store_and_create_nothing(tmp_path, call):
    db = tmp_path / "none.duckdb"
    with pytest.raises(StoreError, match=r"does not exist; run `personasim run --db"):
        call(db, tmp_path / "out")
    assert not db.exists() and not (tmp_path / "out").exists()


def test_twins_on_a_stored_run(small_run, tmp_path):
    summary, db = small_run
    report = personasim.audit(db)
    assert report.run_id == summary.run_id and report.questions == summary.questions
    table = personasim.compare(db, "agentic", "none", n_boot=100)
    assert table.iloc[0]["n_pairs"] > 0 and "verdict" in table.columns
    written = personasim.export(db, tmp_path / "pmv2")
    assert written and all(p.exists() for p in written)
    training = personasim.export(db, tmp_path / "sft", "sft", strategy="agentic")
    assert training[0].name == "dataset" and (tmp_path / "sft" / "train.parquet").exists()
    with pytest.raises(ValueError, match=r"unknown --format 'csv'; choose from: personamem-v2, sft"):
        personasim.export(db, tmp_path / "x", "csv")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        personasim.report(db, tmp_path / "file")
