"""The worked examples of docs/writing-plugins.md, installed and run for real."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from wavelens.host import PluginRegistry, Run, load_spec
from wavelens.plugins.toy.tones import CLASSES, TonesParams, synthesize

from conftest import REPO

EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def installed_macro_f1(tmp_path_factory):
    """pip-install the example package into a private folder, as a user would (its
    dependency, wavelens, is already importable)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--target", str(target), str(EXAMPLES / "wavelens-macro-f1")],
        check=True, capture_output=True,
    )
    return target


@pytest.mark.slow
def test_example_package_registers_by_entry_point(installed_macro_f1, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_macro_f1))
    found = PluginRegistry.discover().get("metric", "macro_f1")
    assert found.source.type == "entry_point"
    assert "wavelens-macro-f1 0.1.0" in found.source.location
    metric = found.contribution.build(found.params(n_classes=3))
    metric.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 1]))
    # class 0: F1 1; class 1: P 1, R 1/2 → 2/3; class 2: P 1/2, R 1 → 2/3
    assert metric.compute() == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


@pytest.mark.slow
def test_example_package_adds_its_command(installed_macro_f1, monkeypatch, tmp_path, capsys):
    from wavelens.cli import main

    monkeypatch.syspath_prepend(str(installed_macro_f1))
    table = tmp_path / "predictions.csv"
    table.write_text("target,prediction\n0,0\n1,1\n2,2\n1,2\n")
    assert main(["macro-f1", str(table), "--classes", "3"]) == 0
    assert "macro F1 0.7778 over 4 items" in " ".join(capsys.readouterr().err.split())
    table.write_text("target,prediction\n0,3\n")
    assert main(["macro-f1", str(table), "--classes", "3"]) == 2
    assert "expected classes 0 to 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "macro-f1" in capsys.readouterr().out


@pytest.mark.slow
def test_local_example_spec_runs_with_both_plugins(installed_macro_f1, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(installed_macro_f1))
    rng = np.random.default_rng(0)
    params = TonesParams()
    for split, count in (("train", 4), ("test", 2)):
        for label, name in enumerate(CLASSES):
            folder = tmp_path / "my_wavs" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                sf.write(folder / f"{i}.wav", synthesize(label, params, rng), 16000)
    for name in ("spec.yaml", "wav_folder.py"):
        (tmp_path / name).write_text((EXAMPLES / "local-plugin" / name).read_text())
    spec = load_spec(tmp_path / "spec.yaml", overrides=["train.steps=3", "device=cpu"])
    assert spec.component("dataset").plugin.source.type == "file"
    directory = Run(spec).execute()
    results = json.loads((directory / "stages/metrics/metrics.json").read_text())["results"]
    assert [r["metric"] for r in results] == ["accuracy", "macro_f1"]
    assert all(0.0 <= r["value"] <= 1.0 for r in results)


def test_docs_show_the_example_files_verbatim():
    docs = (REPO / "docs" / "writing-plugins.md").read_text()
    for path in [
        EXAMPLES / "wavelens-macro-f1" / "pyproject.toml",
        EXAMPLES / "wavelens-macro-f1" / "wavelens_macro_f1" / "__init__.py",
        EXAMPLES / "local-plugin" / "wav_folder.py",
        EXAMPLES / "local-plugin" / "spec.yaml",
    ]:
        assert path.read_text().strip() in docs, f"docs/writing-plugins.md is out of date: {path}"
