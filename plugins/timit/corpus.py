"""Reading a corpus in TIMIT's layout: utterances with word and phone alignments.

The layout (names in upper or lower case)::

    ROOT/TRAIN|TEST/DR1..DR8/<SPEAKER>/<UTTERANCE>.WAV   NIST SPHERE (or RIFF) audio
                                       <UTTERANCE>.WRD   "start end word" per line
                                       <UTTERANCE>.PHN   "start end phone" per line
                                       <UTTERANCE>.TXT   "start end text"

Alignments are in samples at the file's rate (16 kHz for TIMIT). The same reader
serves the real corpus and the synthetic one this package builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wavelens import StageError

__all__ = ["Interval", "Utterance", "find_utterances", "read_alignment"]

SUBSETS = ("TRAIN", "TEST")


@dataclass(frozen=True)
class Interval:
    """A labelled span ``[start, end)`` in samples."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class Utterance:
    """One utterance of the corpus: where its files are, and who said it."""

    subset: str  # TRAIN or TEST
    dialect: str  # DR1..DR8
    speaker: str  # e.g. FCJF0
    name: str  # e.g. SA1
    words: Path
    audio: Path | None
    phones: Path | None

    @property
    def id(self) -> str:
        return f"{self.subset}/{self.dialect}/{self.speaker}/{self.name}"


def _children(folder: Path) -> dict[str, Path]:
    """The entries of ``folder`` by upper-cased name (TIMIT copies differ in case)."""
    return {child.name.upper(): child for child in sorted(folder.iterdir())}


def find_utterances(root: Path) -> list[Utterance]:
    """Every utterance under ``root`` that has a word alignment (``.WRD``), sorted.

    Raises:
        StageError: ``root`` is missing or holds neither ``TRAIN/`` nor ``TEST/``.
    """
    root = Path(root)
    if not root.is_dir():
        raise StageError(f"TIMIT root {root} does not exist or is not a folder")
    top = _children(root)
    subsets = [(name, top[name]) for name in SUBSETS if name in top and top[name].is_dir()]
    if not subsets:
        raise StageError(
            f"{root} is not a TIMIT tree: expected TRAIN/ and/or TEST/ folders "
            f"(upper or lower case) holding DR1..DR8/<SPEAKER>/ folders"
        )
    utterances = []
    for subset, subset_dir in subsets:
        for dialect_name, dialect_dir in _children(subset_dir).items():
            if not dialect_dir.is_dir():
                continue
            for speaker_name, speaker_dir in _children(dialect_dir).items():
                if not speaker_dir.is_dir():
                    continue
                files = _children(speaker_dir)
                for file_name, path in files.items():
                    if not file_name.endswith(".WRD"):
                        continue
                    stem = file_name[: -len(".WRD")]
                    # Some copies hold a RIFF conversion beside the SPHERE file.
                    audio = files.get(f"{stem}.WAV") or files.get(f"{stem}.WAV.WAV")
                    utterances.append(
                        Utterance(subset, dialect_name, speaker_name, stem, path, audio,
                                  files.get(f"{stem}.PHN"))
                    )
    return utterances


def read_alignment(path: Path) -> list[Interval]:
    """Read a ``.WRD`` or ``.PHN`` file.

    Raises:
        StageError: a line is not ``start end label`` with ``0 <= start <= end``.
    """
    intervals = []
    for number, line in enumerate(Path(path).read_text(encoding="latin-1").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 3:
                raise ValueError
            start, end = int(parts[0]), int(parts[1])
        except ValueError:
            raise StageError(
                f"{path}, line {number}: expected 'start_sample end_sample label', got {line!r}"
            ) from None
        if not 0 <= start <= end:
            raise StageError(f"{path}, line {number}: the interval {start}..{end} is not ordered")
        intervals.append(Interval(start, end, parts[2]))
    return intervals

