"""Atomic file writes and checkpoints.

Everything a run writes goes through these helpers: the data is written to a
temporary file in the destination's folder and renamed over the destination, so a
reader (or a later run) sees either the old file or the complete new one, never a
half-written file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; finished files get the mode
# that open() would have given them.
_FILE_MODE = 0o666 & ~_current_umask()

__all__ = [
    "cache_dir",
    "shared_data_dir",
    "atomic_write",
    "write_text",
    "write_json",
    "write_csv",
    "save_figure",
    "markdown_table",
    "read_csv",
    "read_json",
    "save_torch",
    "CheckpointManager",
]


CACHE_ENV = "WAVELENS_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """A folder for data worth keeping across runs and experiments (a synthesised
    corpus): ``$WAVELENS_CACHE_DIR``, else ``$XDG_CACHE_HOME/wavelens``, else
    ``~/.cache/wavelens``; joined with ``parts`` and created."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "wavelens")
    folder = Path(root).joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


SHARED_DATA_ENV = "WAVELENS_SHARED_DATA"


def shared_data_dir() -> Path:
    """The shared real recordings (never copied into the project):
    ``$WAVELENS_SHARED_DATA``, else ``../shared/data`` beside the wavelens checkout.
    The folder may not exist; callers check."""
    root = os.environ.get(SHARED_DATA_ENV)
    if root:
        return Path(root)
    return Path(__file__).resolve().parents[2] / "shared" / "data"  # framework/io.py → ../shared


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it to ``path`` on success.

    On an exception (including KeyboardInterrupt) the temporary file is removed and
    ``path`` is left as it was.
    """
    if mode not in {"w", "wb"}:
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, data: Any, sort_keys: bool = True) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (keys sorted unless
    ``sort_keys`` is false, for documents whose key order means something)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
              fields: Sequence[str] | None = None) -> None:
    """Write ``rows`` (dicts) as CSV to ``path`` atomically; the columns are
    ``fields``, by default the first row's keys. No rows and no fields: no file."""
    if fields is None:
        if not rows:
            return
        fields = list(rows[0])
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, list(fields))
        writer.writeheader()
        writer.writerows(rows)


def save_figure(figure: Any, path: str | os.PathLike, dpi: int = 100) -> None:
    """Write a matplotlib figure to ``path`` atomically (the format from its suffix,
    PNG by default) and close it, so that a long loop of figures keeps no memory."""
    import matplotlib.pyplot as plt

    suffix = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        with atomic_write(path, "wb") as handle:
            figure.savefig(handle, format=suffix, dpi=dpi)
    finally:
        plt.close(figure)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: a header row, the rule, one line per row (cells as text)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts of strings."""
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch

    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


class CheckpointManager:
    """Numbered checkpoints in one folder: atomic saves, keep the last ``keep``.

    Files are named ``ckpt-<step>.pt`` (step zero-padded so names sort by step).
    ``latest()`` returns the newest complete checkpoint, so a training loop resumes
    with::

        manager = CheckpointManager(ctx.workdir / "checkpoints", keep=3)
        found = manager.latest()
        if found is not None:
            step, state = found
            ...restore from state...
    """

    _NAME = re.compile(r"^ckpt-(\d+)\.pt$")

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = Path(directory)
        self.keep = keep

    def steps(self) -> list[int]:
        """Steps of the checkpoints on disk, oldest first."""
        if not self.directory.is_dir():
            return []
        found = (self._NAME.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, step: int) -> Path:
        return self.directory / f"ckpt-{step:09d}.pt"

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Save ``state`` as the checkpoint of ``step`` and prune old ones."""
        target = self.path(step)
        save_torch(target, state)
        for old in self.steps()[: -self.keep]:
            self.path(old).unlink(missing_ok=True)
        return target

    def latest(self, map_location: str | torch.device = "cpu") -> tuple[int, dict] | None:
        """The newest readable checkpoint as ``(step, state)``, or None when there is
        none.

        Checkpoints are read with ``weights_only=True`` (tensors and plain data: a
        file that would run code when unpickled is refused). A checkpoint that cannot
        be read (truncated by a full disk, damaged, or crafted) is renamed
        ``ckpt-<step>.pt.unreadable``, a warning names it and the reason, and the one
        before it is tried."""
        import logging

        import torch

        for step in reversed(self.steps()):
            path = self.path(step)
            try:
                state = torch.load(path, map_location=map_location, weights_only=True)
                if not isinstance(state, dict):
                    raise ValueError(f"it holds a {type(state).__name__}, not a checkpoint's dict")
            except Exception as exc:  # noqa: BLE001 - whatever the damage, the file is set aside
                reason = " ".join(str(exc).split())[:300] or type(exc).__name__
                aside = path.with_name(path.name + ".unreadable")
                path.replace(aside)
                logging.getLogger("wavelens").warning(
                    "checkpoint %s cannot be read (%s); moved to %s, trying the one before it",
                    path, reason, aside.name)
                continue
            return step, state
        return None
