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


def test_benchmark_doc_describes_every_question_type_and_eval_option():
    import click
    import typer.main

    from personasim.analysis.questions import QUESTION_TYPES
    from personasim.cli import app

    doc = (ROOT / "docs" / "benchmark.md").read_text() + (ROOT / "README.md").read_text()
    for qtype in QUESTION_TYPES:
        assert f"`{qtype}`" in doc, f"question type {qtype} is not documented in docs/benchmark.md"
    command = typer.main.get_command(app).commands["eval"]  # type: ignore[attr-defined]
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("bootstrap", "quiet", "window"):
            flag = max(param.opts, key=len)
            assert f"`{flag}" in doc or f"{flag} " in doc, f"eval option {flag} is not documented"


def test_readme_documents_every_run_option():
    import typer.main

    from personasim.cli import app

    readme = (ROOT / "README.md").read_text()
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    # typer ships its own click now: options are told by their kind, not by click.Option
    flags = [max(p.opts, key=len) for p in command.params if p.param_type_name == "option" and p.name != "quiet"]
    assert "--users" in flags and "--embedder" in flags, flags
    missing = [flag for flag in flags if f"`{flag}" not in readme]
    assert not missing, f"run options not in the README's table: {missing}"
