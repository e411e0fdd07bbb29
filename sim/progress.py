"""One progress bar style for every long command (simulation, answering, loading)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextlib.contextmanager
def progress_bar(show: bool) -> Iterator[Progress]:
    """Progress on stderr, so stdout stays the command's result."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not show, console=Console(stderr=True),
    )
    with progress:
        yield progress
