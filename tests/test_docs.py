from pathlib import Path

from personasim.sim.rows import TABLES

ROOT = Path(__file__).resolve().parents[1]


def test_store_doc_names_every_table_and_column():
    doc = (ROOT / "docs" / "store.md").read_text()
    for name, (model, _) in TABLES.items():
        assert f"## {name}" in doc, name
        for column in model.model_fields:
            assert f"`{column}`" in doc, f"{name}.{column} is not documented in docs/store.md"


def test_readme_quick_start_is_the_ci_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in ci
