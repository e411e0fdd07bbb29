"""The progress bar every long command shows: time spent and time left, on stderr."""

from __future__ import annotations

import io

from rich.console import Console

from personasim.sim.progress import progress_bar


def _rendered(show: bool) -> str:
    clock = [0.0]
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    with progress_bar(show, console=console, get_time=lambda: clock[0]) as progress:
        task = progress.add_task("simulating sessions", total=100)
        for _ in range(10):
            clock[0] += 1.0
            progress.advance(task, 2)
        progress.refresh()
    return out.getvalue()


def test_the_bar_shows_time_spent_and_time_left_from_the_rate_so_far():
    line = _rendered(True).strip().splitlines()[-1]
    # 20 of 100 in 10 s: 80 more at 2 per second
    assert "simulating sessions" in line and "20/100" in line
    assert "0:00:10 left 0:00:40" in line


def test_no_bar_when_progress_is_off():
    assert _rendered(False) == ""
