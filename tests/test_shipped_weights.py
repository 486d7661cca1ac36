"""The networks shipped under weights/: complete manifests, loadable weights, and
(slow) the figures of each manifest recomputed from the weights."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from wavelens.cli import main
from wavelens.plugins.noisy_speech.commands import SHIPPED_ENHANCER

from conftest import REPO, SHARED_DATA

WEIGHTS = REPO / "weights"
SHIPPED = sorted(p.parent.name for p in WEIGHTS.glob("*/manifest.json"))
FIELDS = {"name", "spec", "profile", "command", "commit", "steps", "model_stage_seconds", "machine",
          "parameters", "model_pt_sha256", "model_stage_key", "figures"}
# The figures are recomputed on the same files with the same code; what may differ is
# the float arithmetic of another CPU (convolution order), far below these.
TOLERANCE = {"pesq": 0.02, "csig": 0.02, "cbak": 0.02, "covl": 0.02, "ssnr": 0.05, "stoi": 0.002}


def _ship_module():
    spec = importlib.util.spec_from_file_location("ship_weights", REPO / "scripts" / "ship_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _manifest(name: str) -> dict:
    return json.loads((WEIGHTS / name / "manifest.json").read_text())


def test_the_default_enhancer_is_shipped():
    assert SHIPPED_ENHANCER in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_a_manifest_says_how_its_weights_were_made_and_matches_them(name):
    manifest = _manifest(name)
    assert set(manifest) >= FIELDS, f"missing: {sorted(FIELDS - set(manifest))}"
    weights = WEIGHTS / name / "model.pt"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == manifest["model_pt_sha256"]
    assert weights.stat().st_size < 5_000_000  # "a few MB" at most
    assert (REPO / manifest["spec"]).is_file() and len(manifest["commit"]) == 40


@pytest.mark.parametrize("name", SHIPPED)
def test_the_spec_of_a_manifest_still_trains_its_network(name):
    """The spec (and profile) a manifest names plans the model stage that trained the
    weights: same data, model, training and seed."""
    from wavelens.host import load_spec, plan_stages

    manifest = _manifest(name)
    resolved = load_spec(REPO / manifest["spec"], profile=manifest["profile"])
    (model,) = [plan for plan in plan_stages(resolved) if plan.name == "model"]
    assert model.key == manifest["model_stage_key"]


def test_enhance_without_a_checkpoint_uses_the_shipped_network(tmp_path, capsys):
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    sf.write(inputs / "a.wav", (rng.standard_normal(16000) * 0.05).astype(np.float32), 16000)
    assert main(["enhance", str(inputs), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert f"weights/{SHIPPED_ENHANCER}/model.pt" in text.replace("\\", "/")
    audio, rate = sf.read(tmp_path / "out" / "in" / "a.wav")
    assert rate == 16000 and audio.shape == (16000,) and np.all(np.isfinite(audio))


@pytest.mark.slow
def test_the_shipped_enhancer_reaches_its_manifests_figures_on_the_real_pairs(tmp_path):
    pairs = SHARED_DATA / "voicebank_demand"
    if not pairs.is_dir():
        pytest.skip(f"the shared recordings are missing ({pairs})")
    torch.manual_seed(0)
    manifest = _manifest(SHIPPED_ENHANCER)
    scores = _ship_module().score_pairs(WEIGHTS / SHIPPED_ENHANCER, pairs, tmp_path)
    for label in ("noisy", "enhanced"):
        expected = manifest["figures"][label]
        assert scores[label]["files"] == expected["files"] == 25
        for key, tolerance in TOLERANCE.items():
            assert scores[label][key] == pytest.approx(expected[key], abs=tolerance), (label, key)
    # better than the noisy input on both, as recomputed here
    assert scores["enhanced"]["pesq"] > scores["noisy"]["pesq"]
    assert scores["enhanced"]["stoi"] > scores["noisy"]["stoi"]


def test_the_shipped_enhancer_beats_the_noisy_input_on_pesq_and_stoi():
    figures = _manifest(SHIPPED_ENHANCER)["figures"]
    assert figures["enhanced"]["pesq"] > figures["noisy"]["pesq"]
    assert figures["enhanced"]["stoi"] > figures["noisy"]["stoi"]


GANS = [name for name in SHIPPED if "lexical" in _manifest(name)["figures"]]
# The lexical figures are recomputed with the same code, seeds and corpus; the word
# classifiers' training and the generator run in float arithmetic whose order may
# differ on another CPU, which can move a few of the 600 outputs to another word.
LEXICAL_TOLERANCE = {"mean_q_accuracy": 0.01, "one_to_one_accuracy": 0.02}


@pytest.mark.slow
@pytest.mark.parametrize("name", GANS)
def test_a_shipped_gan_reaches_its_manifests_lexical_figures(name, tmp_path):
    """The spec a manifest names, without its retraining profile, analyses the shipped
    weights; its lexical_learning probe must give the manifest's figures."""
    import shutil

    from wavelens.host import Run, load_spec

    if shutil.which("text2wave") is None:
        pytest.skip("the corpus is synthesised with festival (text2wave), which is missing")
    from wavelens._run import v1_stage_name

    manifest = _manifest(name)
    resolved = load_spec(REPO / manifest["spec"])
    assert resolved.spec.model.weights == WEIGHTS / name / "model.pt"
    run = Run(resolved, runs_dir=tmp_path / "runs")
    shipped = manifest["figures"]["lexical"]["stage"]  # (probe.N in a manifest from before spec 2)
    run.execute(until=shipped)
    stage = run.stage_dir(next(p.name for p in run.plans if shipped in (p.name, v1_stage_name(p.name))))
    summary = json.loads((stage / "lexical.json").read_text())
    expected = manifest["figures"]["lexical"]
    for key, tolerance in LEXICAL_TOLERANCE.items():
        assert summary[key] == pytest.approx(expected[key], abs=tolerance), key
    # The figure that decides "learned" (a manifest from before it was reported
    # separately has no more codes than words: there it is the one-to-one accuracy).
    decisive = expected.get("code_word_accuracy", expected["one_to_one_accuracy"])
    assert summary["code_word_accuracy"] == pytest.approx(decisive, abs=0.02)
    assert summary["learned"] is expected["learned"] is True
    assert summary["distinct_words"] == expected["distinct_words"]
    accuracy = expected["classifier_test_accuracy"]
    assert summary["classifier_test_accuracy"] == pytest.approx(accuracy, abs=0.02)


def test_a_shipped_gan_keeps_its_runs_lexical_learning_figures(tmp_path):
    stage = tmp_path / "stages" / "probes.0"
    stage.mkdir(parents=True)
    codes = [{"code": str(c), "value": v, "q_accuracy": 1.0, "n_ask": 90 if c == 0 else 5,
              "n_wash": 10 if c == 0 else 95} for v in (1.0, 2.0) for c in (0, 1)]
    summary = {"mean_q_accuracy": 1.0, "chance_q_accuracy": 0.5, "one_to_one_accuracy": 0.925,
               "chance_one_to_one": 0.55, "distinct_words": 2, "learned": True,
               "by_value": [{"value": 1.0, "one_to_one_accuracy": 0.925}], "codes": codes}
    (stage / "lexical.json").write_text(json.dumps(summary))
    figures = _ship_module().lexical_figures(tmp_path)
    assert figures["one_to_one_accuracy"] == 0.925 and figures["learned"] is True
    assert figures["n_per_code"] == 100 and figures["stage"] == "probes.0"
    assert "codes" not in figures  # the per-code table stays in the run
    assert _ship_module().lexical_figures(tmp_path / "elsewhere") is None


def test_shipping_checks_that_the_named_spec_retrains_the_runs_network(recorder_spec):
    from wavelens.host import load_spec, plan_stages

    spec = recorder_spec()
    (key,) = [plan.key for plan in plan_stages(load_spec(spec)) if plan.name == "model"]
    ship = _ship_module()
    assert ship._retraining_spec(spec, None, key)[1] is None
    with pytest.raises(SystemExit, match="does not train the run's network"):
        ship._retraining_spec(spec, None, "0" * 64)


def test_shipping_writes_the_use_settings_into_the_shipped_spec(recorder_spec, monkeypatch, tmp_path):
    import yaml

    from wavelens.host import Run, load_spec

    run = Run(load_spec(recorder_spec()))
    run_dir = run.execute()
    ship = _ship_module()
    monkeypatch.setattr(ship, "REPO", tmp_path)
    assert ship.main([str(run_dir), "tiny", "--command", "wavelens run recorder.yaml", "--machine", "here",
                      "--set", "model.params.width=3"]) == 0
    shipped = tmp_path / "weights" / "tiny"
    assert yaml.safe_load((shipped / "spec.yaml").read_text())["model"]["params"]["width"] == 3
    manifest = json.loads((shipped / "manifest.json").read_text())
    assert manifest["use_settings"] == ["model.params.width=3"]
    assert manifest["model_stage_key"] == [s["key"] for s in json.loads(
        (run_dir / "run.json").read_text())["stages"] if s["kind"] == "model"][0]


def test_shipping_a_checkpoint_names_a_spec_that_trains_that_many_steps(recorder_spec, monkeypatch, tmp_path):
    from wavelens.host import Run, load_spec

    run_dir = Run(load_spec(recorder_spec(steps=6)), runs_dir=tmp_path / "runs").execute()
    ship = _ship_module()
    monkeypatch.setattr(ship, "REPO", tmp_path)
    base = ["--command", "wavelens run recorder.yaml", "--machine", "here", "--checkpoint", "4"]
    with pytest.raises(SystemExit, match="does not train the run's network"):
        ship.main([str(run_dir), "tiny", *base, "--spec", str(recorder_spec(steps=6))])
    assert ship.main([str(run_dir), "tiny", *base, "--spec", str(recorder_spec(steps=4))]) == 0
    manifest = json.loads((tmp_path / "weights" / "tiny" / "manifest.json").read_text())
    assert manifest["steps"] == 4 and manifest["from_checkpoint"] is True
    from wavelens.host import plan_stages

    assert manifest["model_stage_key"] == next(p.key for p in plan_stages(load_spec(recorder_spec(steps=4)))
                                               if p.name == "model")
