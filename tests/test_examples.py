import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_compare_memories_example_runs(ray_session, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("compare_memories", EXAMPLES / "compare_memories.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--users", "4", "--sessions", "2", "--db", str(tmp_path / "c.duckdb")])
    strategies = {r[2] for r in rows}
    assert strategies == {"none", "full_history", "agentic"}
    assert sum(r[3] for r in rows) % 3 == 0
    assert "questions, chance" in capsys.readouterr().out
