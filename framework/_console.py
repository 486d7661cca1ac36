"""Console output shared by the CLI and the runner: logging and progress bars."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["console", "progress", "get_logger"]

T = TypeVar("T")

# Messages and progress go to stderr so stdout stays clean for --json and --print.
console = Console(stderr=True)

LOGGER_NAME = "wavelens"


def get_logger(name: str | None = None) -> logging.Logger:
    """A logger under the ``wavelens`` hierarchy (console output via rich)."""
    root = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(console=console, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return root if name is None else root.getChild(name)


def progress(
    items: Iterable[T],
    total: int | None = None,
    description: str = "",
    status: Callable[[], str] | None = None,
) -> Iterator[T]:
    """Iterate ``items`` showing a progress bar (count, elapsed, remaining).

    ``status``, if given, is called after each item; its text (rates, losses) is
    shown at the end of the bar.
    """
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, status="")
        for item in items:
            yield item
            bar.update(task, advance=1, status=status() if status is not None else "")
