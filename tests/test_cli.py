"""Bad input exits non-zero with one line naming the problem, and leaves no store behind."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from personasim.cli import app


def _run(args):
    result = CliRunner().invoke(app, ["run", *args])
    return result.exit_code, result.output.strip()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--memory", "none,telepathy"], "unknown memory strategy 'telepathy'"),
        (["--users", "0"], "population.users"),
        (["--sessions", "0"], "schedule.sessions"),
        (["--embedder", "word2vec"], "embedder: Input should be 'minilm', 'minilm-bf16' or 'minilm-static'"),
    ],
)
def test_bad_flags(tmp_path, args, expected):
    db = tmp_path / "x.duckdb"
    code, out = _run([*args, "--db", str(db)])
    assert code != 0
    assert expected in out
    assert len(out.splitlines()) == 1, out
    assert not db.exists()


def test_unwritable_db_paths(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for db, expected in [
        (blocker / "run.duckdb", "does not exist"),
        (tmp_path / "missing-dir" / "run.duckdb", "does not exist"),
        (tmp_path, "is a directory"),
    ]:
        code, out = _run(["--users", "2", "--db", str(db)])
        assert code != 0 and expected in out and len(out.splitlines()) == 1, out
    assert not (tmp_path / "missing-dir").exists()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.json", "{not json", "is not valid JSON"),
        ("bad.toml", "users = = 3", "is not valid TOML"),
        ("typo.yaml", "population:\n  userz: 3\n", "population.userz"),
        ("list.yaml", "- 1\n- 2\n", "must hold a mapping"),
        ("conf.ini", "[x]", "must end in"),
    ],
)
def test_malformed_config_files(tmp_path, name, content, expected):
    cfg = tmp_path / name
    cfg.write_text(content)
    db = tmp_path / "x.duckdb"
    code, out = _run(["--config", str(cfg), "--db", str(db)])
    assert code != 0 and expected in out and len(out.splitlines()) == 1, out
    assert str(cfg) in out or "config" in out
    assert not db.exists()


def test_config_file_values_are_used_and_flags_win(tmp_path):
    from personasim.config import build_config

    cfg = tmp_path / "c.toml"
    cfg.write_text('seed = 5\n[population]\nusers = 3\n[memory]\nstrategies = ["none", "agentic"]\n')
    built = build_config(cfg, users=4)
    assert built.seed == 5 and built.population.users == 4 and built.memory.strategies == ["none", "agentic"]


def test_console_script_reports_bad_input(tmp_path):
    db = tmp_path / "x.duckdb"
    out = subprocess.run(
        [sys.executable, "-m", "personasim.cli", "run", "--users", "0", "--db", str(db)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert "population.users" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not db.exists()


def test_help_documents_every_option():
    out = CliRunner().invoke(app, ["run", "--help"]).output
    for flag in ["--users", "--sessions", "--seed", "--memory", "--db", "--config", "--address", "--actors",
                 "--embedder"]:
        assert flag in out


def test_existing_run_is_kept_unless_overwrite(ray_session, tmp_path):
    import duckdb

    db = tmp_path / "keep.duckdb"
    args = ["--users", "2", "--sessions", "1", "--seed", "4", "--quiet", "--db", str(db)]
    code, _ = _run(args)
    assert code == 0
    before = duckdb.connect(str(db), read_only=True).execute("SELECT count(*) FROM turns").fetchall()
    code, out = _run(args)
    assert code != 0 and "already holds run" in out and "--overwrite" in out
    after = duckdb.connect(str(db), read_only=True).execute("SELECT count(*) FROM turns").fetchall()
    assert before == after and before[0][0] > 0
    code, out = _run([*args, "--overwrite"])
    assert code == 0, out
    again = duckdb.connect(str(db), read_only=True).execute("SELECT count(*) FROM turns").fetchall()
    assert again == before


def test_personas_generate_and_show(tmp_path):
    from personasim.personas.io import read_personas

    out = tmp_path / "p.parquet"
    result = CliRunner().invoke(app, ["personas", "generate", "--n", "12", "--seed", "3", "--months", "6",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 12 personas" in result.output
    personas = read_personas(out)
    assert [p.index for p in personas] == list(range(12))
    changed = next(p for p in personas if p.drift_events)
    shown = CliRunner().invoke(app, ["personas", "show", str(changed.index), "--file", str(out)])
    assert shown.exit_code == 0, shown.output
    assert changed.id in shown.output and changed.demographics.name in shown.output
    assert changed.drift_events[0].cause in shown.output
    missing = CliRunner().invoke(app, ["personas", "show", "p9999999", "--file", str(out)])
    assert missing.exit_code != 0 and "no persona" in missing.output


def test_worlds_list_and_show():
    listed = CliRunner().invoke(app, ["worlds", "list"])
    assert listed.exit_code == 0 and "food" in listed.output and "communication" in listed.output
    food = CliRunner().invoke(app, ["worlds", "list", "--domain", "food"])
    assert food.exit_code == 0 and "favorite_cuisine" in food.output
    topic = CliRunner().invoke(app, ["worlds", "show", "favorite_cuisine"])
    assert topic.exit_code == 0 and "e.g." in topic.output
    scenario = CliRunner().invoke(app, ["worlds", "show", "weekly_meal_plan"])
    assert scenario.exit_code == 0 and "diet_style" in scenario.output
    bad = CliRunner().invoke(app, ["worlds", "show", "nonsense"])
    assert bad.exit_code != 0 and "neither a scenario nor a topic" in bad.output


STOP_RAY = """
import os, ray
from personasim.sim.engine import ensure_ray, stop_embedded_ray
ensure_ray(num_cpus=1)
node = ray._private.worker._global_node
pids = [info.process.pid for infos in node.all_processes.values() for info in infos]
monitor = node.all_processes["monitor"][0].process
stop_embedded_ray()
assert not ray.is_initialized()
assert monitor.returncode is not None, "the monitor was left running"
alive = []
for pid in pids:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split(")")[-1].split()[0] != "Z":
                alive.append(pid)
    except FileNotFoundError:
        pass
assert not alive, f"Ray processes left running: {alive}"
stop_embedded_ray()  # nothing left to stop: a no-op
print("stopped")
"""


def test_stopping_embedded_ray_stops_every_process_it_started(tmp_path):
    """The CLI stops its embedded Ray itself (Ray's exit handler waits 1.5-2 s more): the monitor
    first, then everything else, so nothing is left running. In its own process, with its own Ray."""
    done = subprocess.run([sys.executable, "-c", STOP_RAY], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stopped" in done.stdout


def test_the_console_script_stops_ray_after_a_command_that_used_it(monkeypatch):
    """``main`` (the console script) stops Ray once the command is done, success or error; a
    command that never imported Ray does not import it to stop it."""
    import personasim.cli as cli
    from personasim.sim import engine

    stopped: list[bool] = []
    monkeypatch.setattr(engine, "stop_embedded_ray", lambda: stopped.append(True))
    monkeypatch.setattr(sys, "argv", ["personasim", "worlds", "list"])
    with pytest.raises(SystemExit):
        cli.main()
    assert stopped == [True]  # this test process has imported Ray
    monkeypatch.delitem(sys.modules, "ray")
    with pytest.raises(SystemExit):
        cli.main()
    assert stopped == [True]
