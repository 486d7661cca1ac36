"""Probes on real, variable-length audio and on any layer shape: each utterance at its
own length, the errors a layer choice can run into, layouts and (time, frequency) maps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from wavelens import StageError
from wavelens.host import Run, load_spec_text
from wavelens.plugins.probes.feature_maps import FeatureMapRecorder

from conftest import REPO, SHARED_DATA

VOICEBANK = SHARED_DATA / "voicebank_demand"
CNN = REPO / "examples" / "probe-any-cnn" / "my_cnn.py"


def _voicebank_probe(tmp_path, batch_size: int, name: str):
    resolved = load_spec_text(
        f"spec_version: 2\nname: {name}\nseed: 0\ndevice: cpu\nplugins: [{CNN}]\n"
        f"dataset: {{plugin: voicebank_demand, params: {{root: {VOICEBANK}}}}}\n"
        "model: {plugin: my_cnn}\n"
        "probes:\n  - plugin: feature_map_average\n"
        "    params: {layers: ['conv*'], post_activation: {'type:Conv1d': relu}, "
        f"batch_size: {batch_size}, figures_per_word: 1}}\n",
        spec_dir=tmp_path,
    )
    directory = Run(resolved, runs_dir=tmp_path / "runs").execute()
    return directory / "stages" / "probes.0"


def _valid(n: int, kernel: int = 9, stride: int = 4, padding: int = 4) -> int:
    """Frames of a conv whose receptive field ends inside an input of n frames."""
    return (n - 1 + padding - (kernel - 1)) // stride + 1


@pytest.mark.skipif(not (VOICEBANK / "clean").is_dir(), reason=f"the shared pairs are not at {VOICEBANK}")
def test_real_utterances_in_batches_of_8_equal_each_probed_alone(tmp_path):
    batched = _voicebank_probe(tmp_path / "a", 8, "batched")
    alone = _voicebank_probe(tmp_path / "b", 1, "alone")
    table = pd.read_parquet(batched / "feature_maps.parquet")
    single = pd.read_parquet(alone / "feature_maps.parquet")
    assert len(table) == len(single) and list(table["token"]) == list(single["token"])
    np.testing.assert_allclose(table["value"], single["value"], rtol=1e-5, atol=1e-6)
    assert np.isfinite(table["value"]).all()  # no padding, no NaN marker in the table
    import soundfile as sf

    for token, rows in table.groupby("token"):
        n = sf.info(VOICEBANK / "noisy" / f"{token}.wav").frames
        first = _valid(n)
        counts = rows.groupby("layer")["sample"].max().to_dict()
        assert counts == {"conv1": first, "conv2": _valid(first)}, token  # its own length
    layers = json.loads((batched / "layers.json").read_text())
    assert layers["lengths"] == "variable" and layers["samples_per_frame"] == {"conv1": 4.0, "conv2": 16.0}
    report = (batched / "report.md").read_text()
    figures = sorted(p.name for p in (batched / "figures").glob("*.png"))
    assert figures == ["p232_003.png"]  # no word field: one figure, captioned by its name
    assert "![p232_003](figures/p232_003.png)" in report and "![:" not in report


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3, padding=1)
        self.act = nn.ReLU()
        self.blocks = nn.ModuleList([nn.Conv1d(2, 2, 3, padding=1)])

    def forward(self, x):
        x = self.act(self.conv(x))
        for block in self.blocks:
            x = self.act(block(x))  # the same ReLU module at two places
        return x


@pytest.mark.parametrize(("layers", "message"), [
    (["blocks"], "blocks did not run in the model's forward pass"),
    (["act"], r"act \(2 times\) ran more than once"),
])
def test_a_layer_that_never_runs_or_runs_twice_is_named(layers, message):
    model = Twice()
    with pytest.raises(StageError, match=message), FeatureMapRecorder(model, layers):
        model(torch.randn(1, 1, 32))


def test_a_time_axis_the_output_does_not_have_is_named_with_its_shape():
    model = nn.Sequential(nn.Conv1d(1, 2, 3))
    message = r"time_axis 3 does not fit layer 0, whose output \(1, 2, 30\)"
    with pytest.raises(StageError, match=message), FeatureMapRecorder(model, ["0"], time_axis=3):
        model(torch.randn(1, 1, 32))


class Frames(nn.Module):
    """A conv front end, then a (B, T, C) layer as transformers give."""

    def __init__(self):
        super().__init__()
        self.front = nn.Conv1d(1, 8, 4, stride=4)
        self.mix = nn.Linear(8, 8)

    def forward(self, x):
        return self.mix(self.front(x).transpose(1, 2))


def test_a_btc_layer_is_averaged_over_channels_when_its_layout_says_so():
    model = Frames()
    x = torch.randn(2, 1, 64)
    with torch.no_grad(), FeatureMapRecorder(model, ["mix"], layout={"mix": "BTC"}) as recorder:
        out = model(x)
    torch.testing.assert_close(recorder.collect()["mix"], out.mean(dim=2))
    assert recorder.collect()["mix"].shape == (2, 16)


def test_the_probe_stage_says_when_time_is_on_another_axis_than_declared(tmp_path):
    from wavelens.plugins.probes.averager import FeatureMapAverage, FeatureMapParams

    model = Frames()
    probe = FeatureMapAverage(FeatureMapParams(layers=["mix"]))
    message = r"layer mix: .* grows on axis 1 .* layout BCT puts time on axis 2"
    with torch.no_grad(), FeatureMapRecorder(model, ["mix"]) as recorder, \
            pytest.raises(StageError, match=message):
        probe._strides(model, recorder, torch.zeros(1, 256), torch.device("cpu"), required=True)


def test_post_activation_and_layout_take_type_selectors():
    model = nn.Sequential(nn.Conv1d(1, 3, 3), nn.Conv1d(3, 3, 3))
    post = {"type:Conv1d": "relu"}
    with torch.no_grad(), FeatureMapRecorder(model, ["0", "1"], post_activation=post) as rec:
        model(torch.randn(1, 1, 16))
    assert all(float(series.min()) >= 0 for series in rec.collect().values())
    with pytest.raises(StageError, match="keys are names, globs or type:Class"):
        FeatureMapRecorder(model, ["0"], post_activation={"type:Linear": "relu"})


def test_validate_checks_the_probes_layer_names_against_the_model(write_spec, capsys):
    from wavelens.cli import main

    spec = write_spec(
        "spec_version: 2\nname: names\nplugins: [" + str(CNN) + "]\n"
        "dataset: {plugin: tones}\nmodel: {plugin: my_cnn}\n"
        "probes:\n  - plugin: feature_map_average\n    params:\n      layers: [conv1, cnov2]\n"
    )
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "probes.0.params.layers" in err and "'cnov2' matches no module" in err and "line 9" in err


class Spectrogram(nn.Module):
    """A spectrogram CNN: (B, 1, N) → (B, C, T, F) by a Conv2d over (time, frequency)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, audio):
        frames = audio.unfold(-1, 32, 16)  # (B, 1, T, 32)
        return self.conv(frames.abs())


def test_a_conv2d_layer_keeps_its_time_frequency_map_averaged_over_channels_only():
    model = Spectrogram()
    x = torch.randn(2, 1, 320)
    with torch.no_grad(), FeatureMapRecorder(model, ["conv"], maps=True) as recorder:
        out = model(x)
    maps = recorder.collect_maps()["conv"]
    torch.testing.assert_close(maps, out.mean(dim=1))  # (B, T, F)
    torch.testing.assert_close(recorder.collect()["conv"], out.mean(dim=(1, 3)))


def test_the_maps_option_writes_a_band_table_and_a_figure(tmp_path, write_spec):
    plugin = tmp_path / "spectro.py"
    plugin.write_text(
        "import torch\nfrom torch import nn\nfrom wavelens import Contribution, Model, Params, hookimpl\n\n"
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 4, 3, padding=1)\n"
        "    def forward(self, audio):\n        return self.conv(audio.unfold(-1, 32, 16).abs())\n\n"
        "class P(Params):\n    pass\n\nclass M(Model):\n    def __init__(self, params):\n        pass\n"
        "    def network(self):\n        torch.manual_seed(0)\n        return Net()\n\n"
        "@hookimpl\ndef wavelens_models():\n"
        "    return [Contribution('spectro', P, 'a spectrogram CNN', M)]\n")
    resolved = load_spec_text(
        f"spec_version: 2\nname: maps\nseed: 0\ndevice: cpu\nplugins: [{plugin}]\n"
        "dataset: {plugin: tones, params: {n_train: 4, n_test: 3}}\nmodel: {plugin: spectro}\n"
        "probes: [{plugin: feature_map_average,\n"
        "          params: {layers: [conv], maps: true, figures_per_word: 1}}]\n",
        spec_dir=tmp_path)
    stage = Run(resolved, runs_dir=tmp_path / "runs").execute() / "stages" / "probes.0"
    maps = pd.read_parquet(stage / "maps.parquet")
    assert set(maps["band"]) == set(range(32)) and maps["layer"].str.startswith("conv#f").all()
    assert len(maps) == 3 * 32 * maps.groupby("token")["sample"].max().iloc[0]
    assert any(p.name.endswith("_maps.png") for p in (stage / "figures").glob("*.png"))


def test_fixed_lengths_refuse_items_of_different_lengths(tmp_path):
    from wavelens.plugins.probes.averager import FeatureMapAverage, FeatureMapParams

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return {"audio": torch.randn(1, 400 + 100 * index), "name": f"u{index}"}

    class Context:
        workdir = tmp_path
        placement = type("P", (), {"device": torch.device("cpu"), "autocast": staticmethod(
            lambda: torch.autocast("cpu", enabled=False))})()
        log = __import__("logging").getLogger("test")

        @staticmethod
        def network():
            return nn.Sequential(nn.Conv1d(1, 2, 5, stride=2)).eval()

        @staticmethod
        def dataset():
            return {"test": Items()}

        @staticmethod
        def progress(items, **_):
            return items

    probe = FeatureMapAverage(FeatureMapParams(layers=["0"], lengths="fixed", figures_per_word=0))
    with pytest.raises(StageError, match="differ in length .* lengths is fixed"):
        probe.run(Context())
