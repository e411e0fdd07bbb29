"""One progress bar style for every long command (simulation, answering, loading)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextlib.contextmanager
def progress_bar(show: bool, console: Console | None = None,
                 get_time: Callable[[], float] | None = None) -> Iterator[Progress]:
    """Progress on stderr, so stdout stays the command's result.

    Time left is shown beside time spent: a 10,000-user run takes minutes to hours depending on
    the embedder and the machine, and only the run itself can tell which (rich estimates it from
    the recent rate, so a run's slow start settles). ``console`` and ``get_time`` are for tests."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("left"), TimeRemainingColumn(),
        disable=not show, console=console or Console(stderr=True), get_time=get_time,
    )
    with progress:
        yield progress
