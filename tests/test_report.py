"""The report: one self-contained page that a real browser renders with every plot and table,
a Markdown summary, and the same numbers the metric functions return."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from personasim.cli import app

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SECTIONS = ["Accuracy and token cost", "Distance from the reveal to the question", "Is the difference real?",
            "No-memory floor", "Memory fidelity over time", "How the simulated users change", "Privacy leakage",
            "Run configuration"]


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, installed here when missing (the test needs root and the package mirror)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and this user cannot apt-get install it")
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"could not install Debian's chromium package: {exc}")
    return shutil.which("chromium") or pytest.skip("apt-get ran but chromium is still missing")


@pytest.fixture(scope="module")
def report_dir(small_run, tmp_path_factory) -> Path:
    _, db = small_run
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--out", str(out), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    return out


def test_report_renders_in_headless_chromium_with_every_plot_and_table(report_dir, chromium, tmp_path):
    page = report_dir / "report.html"
    html = page.read_text()
    assert "http://" not in html and "https://" not in html, "self-contained: nothing to fetch"
    for title in SECTIONS:
        assert title in html, title
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, "chromium rendered the page"
    figures = int(re.search(r'data-figures-rendered="(\d+)"', body.group(0)).group(1))
    tables = int(re.search(r'data-tables="(\d+)"', body.group(0)).group(1))
    assert figures == 5, "every embedded PNG decoded in the browser"
    assert tables >= 7
    assert sorted(p.name for p in (report_dir / "figures").iterdir()) == [
        "accuracy_by_type.png", "accuracy_vs_distance.png", "accuracy_vs_tokens.png", "drift_curves.png",
        "fidelity_over_time.png"]


def test_report_numbers_are_the_metric_functions_numbers(report_dir, small_run):
    from personasim.analysis.metrics import accuracy_table

    _, db = small_run
    markdown = (report_dir / "report.md").read_text()
    con = duckdb.connect(str(db), read_only=True)
    (run_id,) = con.execute("SELECT run_id FROM runs").fetchall()[0]
    table = accuracy_table(con, run_id, by=["strategy"], n_boot=200, where={"reader": "embedding"})
    assert not table.empty
    for row in table.itertuples():
        assert re.search(rf"\| {row.strategy} \| {row.answers} \| {row.accuracy:.1%} \| {row.ci_low:.1%} "
                         rf"\| {row.ci_high:.1%} \|", markdown), row.strategy
    assert "![fidelity_over_time](figures/fidelity_over_time.png)" in markdown
    assert "McNemar" in markdown


def test_report_without_answers_says_what_to_run(small_run, tmp_path):
    _, db = small_run
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    with duckdb.connect(str(copy)) as con:
        con.execute("DELETE FROM answers")
    result = CliRunner().invoke(app, ["report", "--db", str(copy), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "personasim eval --db" in (tmp_path / "r" / "report.md").read_text()
    missing = CliRunner().invoke(app, ["report", "--db", str(tmp_path / "none.duckdb")])
    assert missing.exit_code != 0 and "personasim run --db" in missing.output


def test_compare_command_reports_a_paired_test(small_run):
    _, db = small_run
    result = CliRunner().invoke(app, ["compare", "agentic", "none", "--db", str(db), "--per-type",
                                      "--bootstrap", "200"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "McNemar" in result.output and "explicit_recall" in result.output
    assert re.search(r"agentic (beats|trails) none|no significant difference", result.output)
    unknown = CliRunner().invoke(app, ["compare", "agentic", "rag", "--db", str(db)])
    assert unknown.exit_code != 0 and "available" in unknown.output
