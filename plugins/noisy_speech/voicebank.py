"""``voicebank_demand``: clean/noisy pairs in the VoiceBank+DEMAND layout.

Reads the standard layout (``clean_trainset_28spk_wav/``, ``noisy_trainset_28spk_wav/``,
``clean_testset_wav/``, ``noisy_testset_wav/``; the 56-speaker training set too) or a
flat ``clean/`` + ``noisy/`` pair of folders. Files are paired by name and
resampled to 16 kHz (the corpus ships at 48 kHz). Training items are fixed-length
segments (2 s by default) at a random offset drawn per epoch; test items are whole
utterances. Every item carries frame-level VAD labels derived from the clean signal
(see :mod:`.vad`). Where the corpus has its log files (``log_testset.txt``: name,
noise type, SNR), items carry the noise type and SNR too.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from wavelens import (
    AUDIO_SUFFIXES,
    AudioError,
    Contribution,
    Dataset,
    Params,
    SpecPath,
    StageContext,
    StageError,
    atomic_write,
    hookimpl,
    read_audio,
    read_json,
    write_csv,
    write_json,
)

from .vad import frame_energy_db, vad_labels

SPLIT_FOLDERS = {
    "train": [("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav"),
              ("clean_trainset_56spk_wav", "noisy_trainset_56spk_wav"),
              ("clean_trainset_wav", "noisy_trainset_wav")],
    "test": [("clean_testset_wav", "noisy_testset_wav")],
}


class PairParams(Params):
    """How clean/noisy pairs become items (shared with ``noisy_mixtures``)."""

    sample_rate: int = Field(16000, description="rate the audio is resampled to")
    segment_seconds: float = Field(2.0, gt=0, description="length of a training segment")
    vad_threshold_db: float = Field(
        -30.0, lt=0, description="a frame is speech within this many dB of the loudest clean frame"
    )
    vad_hop: int = Field(100, ge=1, description="VAD frame hop in samples (the model's STFT hop)")
    vad_win: int = Field(400, ge=1, description="VAD frame length in samples (the model's FFT size)")
    max_length_mismatch: float = Field(
        0.01, ge=0, description="clean and noisy lengths may differ by this share; then trimmed"
    )


class VoiceBankParams(PairParams):
    root: SpecPath = Field(description="folder holding the clean_*/noisy_* folders (or clean/ noisy/)")
    flat_split: Literal["train", "test"] = Field(
        "test", description="which split a flat clean/ + noisy/ layout is"
    )


def find_pairs(root: Path, flat_split: str) -> dict[str, tuple[Path, Path]]:
    """The (clean, noisy) folders of each split present under ``root``.

    Raises:
        StageError: ``root`` is missing or has none of the known layouts.
    """
    root = Path(root)
    if not root.is_dir():
        raise StageError(f"VoiceBank+DEMAND root {root} does not exist or is not a folder")
    folders: dict[str, tuple[Path, Path]] = {}
    for split, candidates in SPLIT_FOLDERS.items():
        for clean, noisy in candidates:
            if (root / clean).is_dir() and (root / noisy).is_dir():
                folders[split] = (root / clean, root / noisy)
                break
    if not folders and (root / "clean").is_dir() and (root / "noisy").is_dir():
        folders[flat_split] = (root / "clean", root / "noisy")
    if not folders:
        expected = ", ".join(f"{c}/ + {n}/" for pairs in SPLIT_FOLDERS.values() for c, n in pairs)
        raise StageError(
            f"{root} has no VoiceBank+DEMAND folders: expected {expected}, or clean/ + noisy/"
        )
    return folders


def _audio_files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES}


def read_logs(root: Path) -> dict[str, dict[str, Any]]:
    """Noise type and SNR per file from the corpus's ``log_*.txt`` files (lines
    ``name noise snr``), found in ``root`` or ``root/logfiles``."""
    labels: dict[str, dict[str, Any]] = {}
    for folder in (root, root / "logfiles"):
        if not folder.is_dir():
            continue
        for log in sorted(folder.glob("log_*.txt")):
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                parts = line.split()
                if len(parts) < 3:
                    continue
                try:
                    labels[parts[0]] = {"noise": parts[1], "snr_db": float(parts[2])}
                except ValueError:
                    continue
    return labels


def _portable(path: Path, workdir: Path) -> str:
    """``path`` relative to the stage folder when inside it (the folder is renamed
    when the stage finishes, and reused runs link it elsewhere), else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path(workdir).absolute()))
    except ValueError:
        return str(path)


class PairSplit(torch.utils.data.Dataset):
    """Clean/noisy pairs of one split. Items::

        {"audio": the noisy tensor (the model's input, under the name every dataset uses),
         "noisy": (1, n) float tensor, "clean": (1, n), "vad": (n // hop + 1,) 0/1 floats,
         "sample_rate": int, "name": str, "length": n before any padding,
         "noise": str or None, "snr_db": float or None}

    In training (``segment`` set) ``n`` is the segment length; an utterance shorter
    than a segment is repeated to fill it (as CMGAN does).
    """

    def __init__(self, rows: list[dict], params: PairParams, segment: int | None, seed: int):
        self.rows = rows
        self.params = params
        self.segment = segment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw new segment offsets (call once per pass over the data)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, path: str) -> np.ndarray:
        samples, _ = read_audio(path, resample_to=self.params.sample_rate)
        return samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        clean, noisy = self._read(row["clean"]), self._read(row["noisy"])
        n = min(len(clean), len(noisy))
        clean, noisy = clean[:n], noisy[:n]
        hop = self.params.vad_hop
        if self.segment is not None:
            if n < self.segment:
                repeats = -(-self.segment // n)
                clean, noisy = np.tile(clean, repeats), np.tile(noisy, repeats)
                offset = 0
            else:
                rng = np.random.default_rng([self.seed, self.epoch, index])
                offset = int(rng.integers(0, (n - self.segment) // hop + 1)) * hop
            clean = clean[offset : offset + self.segment]
            noisy = noisy[offset : offset + self.segment]
        labels = vad_labels(clean, hop, self.params.vad_win, self.params.vad_threshold_db,
                            reference_db=row["max_db"])
        noisy_tensor = torch.from_numpy(np.ascontiguousarray(noisy)).unsqueeze(0)
        return {
            "audio": noisy_tensor,
            "noisy": noisy_tensor,
            "clean": torch.from_numpy(np.ascontiguousarray(clean)).unsqueeze(0),
            "vad": torch.from_numpy(labels),
            "sample_rate": self.params.sample_rate,
            "name": row["name"],
            "length": len(clean),
            "noise": row.get("noise"),
            "snr_db": row.get("snr_db"),
        }


class PairedSpeech(Dataset):
    """Indexes clean/noisy pairs (checking every file) and serves them."""

    def __init__(self, params: PairParams):
        self.params = params

    def pairs_root(self, ctx: StageContext) -> tuple[Path, str]:
        """The folder holding the pairs, and the split a flat clean/ + noisy/ layout is."""
        raise NotImplementedError

    def prepare(self, ctx: StageContext) -> None:
        params = self.params
        root, flat_split = self.pairs_root(ctx)
        folders = find_pairs(root, flat_split)
        logs = read_logs(root)
        rows: list[dict] = []
        skipped: list[dict] = []
        for split, (clean_dir, noisy_dir) in folders.items():
            clean_files, noisy_files = _audio_files(clean_dir), _audio_files(noisy_dir)
            for name in sorted(set(clean_files) ^ set(noisy_files)):
                have = clean_files.get(name) or noisy_files.get(name)
                other = noisy_dir if name in clean_files else clean_dir
                skipped.append({"split": split, "file": str(have),
                                "reason": f"unpaired: no file named {name}.* in {other}"})
            names = sorted(set(clean_files) & set(noisy_files))
            for name in ctx.progress(names, total=len(names), description=f"checking {split} pairs"):
                clean_path, noisy_path = clean_files[name], noisy_files[name]
                try:
                    clean, rate = read_audio(clean_path, resample_to=params.sample_rate)
                    noisy, _ = read_audio(noisy_path, resample_to=params.sample_rate)
                except AudioError as exc:
                    skipped.append({"split": split, "file": str(exc.path), "reason": exc.reason})
                    continue
                longer, shorter = max(len(clean), len(noisy)), min(len(clean), len(noisy))
                if longer - shorter > params.max_length_mismatch * longer:
                    skipped.append({"split": split, "file": str(noisy_path), "reason":
                                    f"{len(noisy)} samples, but its clean file has {len(clean)}"})
                    continue
                energy = frame_energy_db(clean[:shorter], params.vad_hop, params.vad_win)
                if energy.max() <= -200.0:
                    skipped.append({"split": split, "file": str(clean_path),
                                    "reason": "the clean file is silent"})
                    continue
                rows.append({"split": split, "name": name, "clean": _portable(clean_path, ctx.workdir),
                             "noisy": _portable(noisy_path, ctx.workdir), "samples": shorter,
                             "max_db": float(energy.max()), **logs.get(name, {})})
        if not rows:
            raise StageError(f"no usable clean/noisy pairs under {root} ({len(skipped)} skipped)")
        with atomic_write(ctx.workdir / "pairs.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        write_csv(ctx.workdir / "skipped.csv", skipped, ["split", "file", "reason"])
        for item in skipped[:5]:
            ctx.log.warning("skipped %s: %s", item["file"], item["reason"])
        if len(skipped) > 5:
            ctx.log.warning("... %d files skipped in all; see skipped.csv in the data stage", len(skipped))
        write_json(ctx.workdir / "source.json",
                   {"root": _portable(root, ctx.workdir), "skipped": len(skipped), "seed": ctx.seed})
        counts = Counter(row["split"] for row in rows)
        ctx.write_report(
            f"{', '.join(f'{n} {s} pairs' for s, n in sorted(counts.items()))} from `{root}`, "
            f"resampled to {params.sample_rate} Hz; training segments of "
            f"{params.segment_seconds:g} s; VAD labels per {params.vad_hop}-sample hop, speech "
            f"within {-params.vad_threshold_db:g} dB of the loudest clean frame. "
            f"{len(skipped)} files skipped (see `skipped.csv`).\n"
        )

    def load(self, workdir: Path) -> dict[str, PairSplit]:
        rows = [json.loads(line) for line in (workdir / "pairs.jsonl").read_text().splitlines()]
        for row in rows:
            row["clean"], row["noisy"] = str(workdir / row["clean"]), str(workdir / row["noisy"])
        seed = read_json(workdir / "source.json")["seed"]
        segment = round(self.params.segment_seconds * self.params.sample_rate)
        splits = {}
        for split in ("train", "test"):
            members = [row for row in rows if row["split"] == split]
            if members:
                splits[split] = PairSplit(members, self.params, segment if split == "train" else None,
                                          seed)
        return splits

    def describe(self, workdir: Path, splits: dict[str, PairSplit]) -> dict[str, Any]:
        rate = self.params.sample_rate
        summary: dict[str, Any] = {"splits": {}, "counts": {}, "notes": []}
        noise_counts, snr_counts = {}, {}
        for name, split in splits.items():
            seconds = [row["samples"] / rate for row in split.rows]
            summary["splits"][name] = {
                "pairs": len(split), "hours": round(sum(seconds) / 3600, 3),
                "mean_s": round(float(np.mean(seconds)), 2),
                "items": "segments" if split.segment else "utterances",
            }
            noises = [row["noise"] for row in split.rows if row.get("noise")]
            if noises:
                noise_counts[name] = dict(sorted(Counter(noises).items()))
            snrs = [row["snr_db"] for row in split.rows if row.get("snr_db") is not None]
            if snrs:
                snr_counts[name] = _snr_histogram(snrs)
        if noise_counts:
            summary["counts"]["noise"] = noise_counts
        if snr_counts:
            summary["counts"]["snr_db"] = snr_counts
        source = read_json(workdir / "source.json")
        where = source["root"]
        if not Path(where).is_absolute():
            where = f"the data stage's {where}/"
        summary["notes"].append(f"source: {where}")
        if source["skipped"]:
            summary["notes"].append(f"{source['skipped']} files skipped, with reasons in skipped.csv "
                                    "in the data stage")
        return summary


def _snr_histogram(snrs: list[float]) -> dict[str, int]:
    """Counts per SNR value when the SNRs are a few set levels (test sets), else
    per 5 dB bin."""
    values = sorted(set(snrs))
    if len(values) <= 12 and all(float(2 * v).is_integer() for v in values):
        return {f"{v:g}": sum(s == v for s in snrs) for v in values}
    low = 5 * int(np.floor(min(snrs) / 5))
    bins: dict[str, int] = {}
    for start in range(low, int(max(snrs)) + 5, 5):
        count = sum(start <= s < start + 5 for s in snrs)
        if count:
            bins[f"[{start}, {start + 5})"] = count
    return bins


class VoiceBankDemand(PairedSpeech):
    params: VoiceBankParams

    def pairs_root(self, ctx: StageContext) -> tuple[Path, str]:
        return Path(self.params.root), self.params.flat_split


@hookimpl
def wavelens_datasets():
    return [
        Contribution(
            "voicebank_demand", VoiceBankParams,
            "VoiceBank+DEMAND clean/noisy pairs, resampled to 16 kHz, with frame VAD labels",
            VoiceBankDemand,
        )
    ]
