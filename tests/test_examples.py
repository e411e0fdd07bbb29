import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_compare_memories_example_runs(ray_session, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("compare_memories", EXAMPLES / "compare_memories.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--users", "2", "--sessions", "2", "--db", str(tmp_path / "c.duckdb")])
    strategies = {r[2] for r in rows}
    assert strategies == {"none", "full_history", "agentic"}
    assert sum(r[3] for r in rows) % 3 == 0
    assert "questions, chance" in capsys.readouterr().out


def test_memory_plugin_runs_in_ray_workers(tmp_path):
    """The README's plugin recipe, end to end in a fresh process with its own embedded Ray."""
    import os
    import subprocess
    import sys

    cfg = tmp_path / "plug.toml"
    cfg.write_text('[memory]\nplugins = ["last_session_memory"]\nstrategies = ["none", "last_session"]\n'
                   '[population]\nusers = 3\n[schedule]\nsessions = 2\n')
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES)}
    out = subprocess.run(
        [sys.executable, "-m", "personasim.cli", "run", "--config", str(cfg), "--quiet",
         "--db", str(tmp_path / "plug.duckdb")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "last_session" in out.stdout


def test_missing_plugin_is_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    from personasim.cli import app

    cfg = tmp_path / "plug.toml"
    cfg.write_text('[memory]\nplugins = ["no_such_plugin_module"]\n')
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--db", str(tmp_path / "x.duckdb")])
    assert result.exit_code != 0
    assert "cannot import memory plugin 'no_such_plugin_module'" in result.output
    assert not (tmp_path / "x.duckdb").exists()
