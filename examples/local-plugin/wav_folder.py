"""A local wavelens plugin file: labelled WAV files, one folder per class.

    ROOT/train/<class>/*.wav   ROOT/test/<class>/*.wav
"""

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from pydantic import Field

from wavelens import Contribution, Dataset, Params, SpecPath, StageError, hookimpl, write_json


class WavFolderParams(Params):
    root: SpecPath = Field(description="folder with train/ and test/ (relative to the spec)")
    length: int = Field(4096, ge=1, description="samples per example (pad or cut)")
    sample_rate: int = Field(16000, description="the rate every file must have")


class WavFolder(Dataset):
    def __init__(self, params: WavFolderParams):
        self.params = params

    def prepare(self, ctx):
        classes = sorted(p.name for p in (self.params.root / "train").iterdir() if p.is_dir())
        index = {"classes": classes, "splits": {}}
        for split in ("train", "test"):
            index["splits"][split] = [
                [str(wav), label]
                for label, name in enumerate(classes)
                for wav in sorted((self.params.root / split / name).glob("*.wav"))
            ]
        write_json(ctx.workdir / "index.json", index)  # the stage's record of what it read

    def load(self, workdir: Path):
        import json

        index = json.loads((workdir / "index.json").read_text())
        return {split: _Files(items, self.params) for split, items in index["splits"].items()}


class _Files(torch.utils.data.Dataset):
    def __init__(self, items, params):
        self.items, self.params = items, params

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        if rate != self.params.sample_rate:
            raise StageError(f"{path}: {rate} Hz, expected {self.params.sample_rate} Hz")
        audio = audio.mean(axis=1)[: self.params.length]
        audio = np.pad(audio, (0, self.params.length - len(audio)))
        return {"audio": torch.from_numpy(audio).unsqueeze(0), "label": label}


@hookimpl
def wavelens_datasets():
    return [Contribution("wav_folder", WavFolderParams, "Labelled WAV files by folder", WavFolder)]
