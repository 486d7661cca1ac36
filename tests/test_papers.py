"""The papers' specs end to end (specs/*.yaml).

Each spec's ``quick`` profile runs as written in a ``slow`` test (minutes each on two
cores). The default suite runs each quick profile *reduced* through ``--set``: the
same stages, plugins and report, on a smaller corpus with a few training steps, so
that every table and figure of the report is checked on every commit.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from wavelens.cli import main
from wavelens.host import Run, load_spec, write_report

from conftest import REPO, SHARED_DATA

SPECS = REPO / "specs"
needs_synthesis = pytest.mark.skipif(
    shutil.which("text2wave") is None or shutil.which("espeak-ng") is None,
    reason="speech synthesis needs festival (text2wave) and espeak-ng (see DEVELOPERS.md)",
)

# A small corpus and a few steps: the stages and the report are those of the spec.
GAN = ["dataset.params.speakers=40", "model.params.dim=2", "train.steps=2", "train.batch_size=8",
       "train.checkpoint_every=2", "train.log_every=1", "statistics.0.params.backend=mssm"]
LEXICAL = ["probes.0.params.n_per_code=4", "probes.0.params.classifier_epochs=1",
           "probes.0.params.classifiers=2"]
# A spec that analyses a shipped network: a smaller corpus and the fast GAMM backend.
SHIPPED_GAN = ["dataset.params.speakers=40", "statistics.0.params.backend=mssm"]
ENHANCEMENT = ["dataset.params.clean_speakers=6", "dataset.params.n_train=8",
               "dataset.params.clip_seconds=1.5",
               "model.params.channels=[8,8,8,8]", "model.params.validation_files=1",
               "train.batch_size=4", "evaluation.workers=1"]
REDUCED = {
    "ciwgan_3words": SHIPPED_GAN + LEXICAL,
    "ciwgan_8words": GAN + LEXICAL,
    "fricatives_s_sh": GAN,
    "fiwgan_8words": GAN + LEXICAL + ["statistics.1.params.backend=mssm"],
    "csm_vanet_ablations": ENHANCEMENT + ["dataset.params.n_test_utterances=2"],
    "csm_vanet_snr": ENHANCEMENT + ["dataset.params.n_test_utterances=3"],  # one per test noise
}


def _run(name: str, runs: Path, reduced: bool, variant: str | None = None,
         profile: str | None = "quick") -> Run:
    resolved = load_spec(SPECS / f"{name}.yaml", REDUCED[name] if reduced else [], profile=profile,
                         variant=variant)
    run = Run(resolved, runs_dir=runs)
    run.execute()
    return run


def _run_cli(name: str, runs: Path, reduced: bool) -> None:
    """``wavelens run specs/NAME.yaml --profile quick`` (reduced: with REDUCED's --set)."""
    args = ["run", str(SPECS / f"{name}.yaml"), "--profile", "quick", "--runs-dir", str(runs)]
    for override in REDUCED[name] if reduced else []:
        args += ["--set", override]
    assert main(args) == 0


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _images(run_dir: Path) -> list[str]:
    """The images the Markdown report shows, each checked to exist in the run."""
    text = (run_dir / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    for image in images:
        assert (run_dir / image).is_file(), image
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(images)  # self-contained
    return images


def _check_table_1(stage: Path, layer: str, levels: list[str]) -> dict:
    result = json.loads((stage / layer / "result.json").read_text())
    assert result["meta"]["levels"] == levels
    parametric = [r["term"] for r in result["parametric"]]
    assert parametric == ["(Intercept)", *(f"word={w}" for w in levels[1:])]
    smooths = [r["term"] for r in result["smooths"]]
    assert smooths == ["s(sample)", *(f"s(sample):word={w}" for w in levels[1:]), "s(sample,token)"]
    for row in result["parametric"]:
        assert all(_finite(row[k]) for k in ("estimate", "se", "stat", "p")), row
    for row in result["smooths"]:  # (the random smooth's test is optional: random_test)
        assert _finite(row["edf"]) and (row["kind"] == "random" or _finite(row["stat"])), row
    assert all(_finite(v) for v in result["curves"]["fit"] + result["curves"]["lower"])
    return result


def _check_ciwgan_8words(run_dir: Path) -> None:
    words = ["ask", "dark", "greasy", "oily", "rag", "wash", "water", "year"]
    _check_table_1(run_dir / "stages" / "statistics.0", "q_network.act5", words)
    report = (run_dir / "report.md").read_text()
    assert report.count("| A. parametric coefficients |") == 1
    for caption in ("Beguš & Zhou's Figure 2", "Figure 3 (left)", "Figure 3 (middle)",
                    "Figure 4 (bottom)", "Training curves of this run"):
        assert caption in report, caption
    images = _images(run_dir)
    figure_2 = [i for i in images if i.startswith("stages/probes.1/figures/")]
    assert len(figure_2) == len(words)  # one token per word
    for name in ("raw.png", "curves.png", "differences.png"):
        assert f"stages/statistics.0/q_network.act5/{name}" in images
    assert "stages/model/losses.png" in images and "stages/probes.0/lexical.png" in images
    assert "## Resolved spec" in report and "**splits**" in report  # the spec and the data summary


def _check_ciwgan_3words(run_dir: Path) -> None:
    """The report of the 3-word ciwGAN trained on this CPU."""
    words = ["ask", "greasy", "wash"]
    result = _check_table_1(run_dir / "stages" / "statistics.0", "q_network.act5", words)
    assert [(i["a"], i["b"]) for i in result["intervals"]] == [("greasy", "ask"), ("wash", "ask"),
                                                             ("wash", "greasy")]
    report = (run_dir / "report.md").read_text()
    for caption in ("Beguš & Zhou's Figure 2", "Figure 3 (left)", "Figure 3 (middle)",
                    "Figure 4 (bottom)", "Lexical learning:"):
        assert caption in report, caption
    images = _images(run_dir)
    assert len([i for i in images if i.startswith("stages/probes.1/figures/")]) == len(words)
    for name in ("raw.png", "curves.png", "differences.png"):
        assert f"stages/statistics.0/q_network.act5/{name}" in images
    assert "stages/probes.0/lexical.png" in images  # the network is shipped: no training curve here
    summary = json.loads((run_dir / "stages" / "probes.0" / "lexical.json").read_text())
    assert summary["chance_one_to_one"] > 1 / len(words)  # the chance line is drawn


def _check_fricatives(run_dir: Path) -> None:
    stage = run_dir / "stages" / "statistics.0"
    layers = pd.read_csv(stage / "layers.csv")
    assert list(layers["layer"]) == [f"q_network.act{i}" for i in range(1, 5)]
    assert set(layers["contrast"]) == {"sh − s"}
    for column in ("level_estimate", "level_t", "level_p", "shape_edf", "shape_F", "shape_p"):
        assert layers[column].map(_finite).all(), column
    report = (run_dir / "report.md").read_text()
    assert "### across layers" in report and "Figure 3 (right)" in report
    assert "stages/statistics.0/layers.png" in _images(run_dir)


def _check_fiwgan(run_dir: Path) -> None:
    words = ["ask", "dark", "greasy", "oily", "rag", "wash", "water", "year"]
    _check_table_1(run_dir / "stages" / "statistics.0", "q_network.act5", words)
    three = _check_table_1(run_dir / "stages" / "statistics.1", "q_network.act5", ["ask", "greasy", "wash"])
    assert [(i["a"], i["b"]) for i in three["intervals"]] == [("greasy", "ask"), ("wash", "ask"),
                                                            ("wash", "greasy")]
    assert "stages/statistics.1/q_network.act5/differences.png" in _images(run_dir)


def _variants(runs: Path, name: str) -> dict:
    (folder,) = (runs / name).glob("variants-*")
    return json.loads((folder / "table.json").read_text())


@needs_synthesis
@pytest.mark.parametrize("reduced", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["reduced", "quick"])
def test_ciwgan_8words_and_the_fricatives_reuse_its_network(tmp_path, reduced):
    runs = tmp_path / "runs"
    first = _run("ciwgan_8words", runs, reduced)
    _check_ciwgan_8words(first.directory)

    # The fricative spec builds the same data and trains the same model: both stages
    # come from the ciwgan-8words run; only the probe and the GAMMs are computed.
    second = _run("fricatives_s_sh", runs, reduced)
    assert second.outcomes["dataset"] == f"reused from ciwgan-8words/{first.directory.name}"
    assert second.outcomes["model"] == f"reused from ciwgan-8words/{first.directory.name}"
    assert second.outcomes["statistics.0"] == "computed"
    _check_fricatives(second.directory)


@needs_synthesis
def test_ciwgan_3words_and_the_fricatives_cpu_profile_analyse_the_shipped_network(tmp_path):
    runs = tmp_path / "runs"
    first = _run("ciwgan_3words", runs, reduced=True, profile=None)
    _check_ciwgan_3words(first.directory)
    assert first.outcomes["model"] == "computed"  # loaded, not trained
    report = (first.directory / "report.md").read_text()
    assert "Not trained in this run: the weights were loaded from" in report

    resolved = load_spec(SPECS / "fricatives_s_sh.yaml", SHIPPED_GAN, profile="cpu")
    second = Run(resolved, runs_dir=runs)
    second.execute()
    assert second.outcomes["dataset"] == f"reused from ciwgan-3words/{first.directory.name}"
    assert second.outcomes["model"] == f"reused from ciwgan-3words/{first.directory.name}"
    _check_fricatives(second.directory)


@needs_synthesis
@pytest.mark.parametrize("reduced", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["reduced", "quick"])
def test_fiwgan_8words_reports_conv5_and_the_three_word_comparison(tmp_path, reduced):
    run = _run("fiwgan_8words", tmp_path / "runs", reduced)
    _check_fiwgan(run.directory)


@needs_synthesis
def test_a_finished_spec_is_reused_and_gamm_changes_recompute_only_the_statistics(tmp_path):
    runs = tmp_path / "runs"
    first = _run("ciwgan_8words", runs, reduced=True)
    report = first.directory / "report.md"
    written = report.stat().st_mtime_ns

    again = _run("ciwgan_8words", runs, reduced=True)
    assert again.directory == first.directory
    assert set(again.outcomes.values()) == {"reused"}
    assert report.stat().st_mtime_ns > written  # the report is written again

    resolved = load_spec(SPECS / "ciwgan_8words.yaml",
                         [*REDUCED["ciwgan_8words"], "statistics.0.params.k=6"], profile="quick")
    changed = Run(resolved, runs_dir=runs)
    changed.execute()
    assert changed.directory != first.directory
    assert changed.outcomes.pop("statistics.0") == "computed"
    assert set(changed.outcomes.values()) == {f"reused from {first.directory.name}"}
    result = json.loads((changed.directory / "stages/statistics.0/q_network.act5/result.json").read_text())
    assert "s(sample)" in [r["term"] for r in result["smooths"]]

    # `wavelens report` rebuilds the report from the stored artefacts alone.
    (changed.directory / "report.md").unlink()
    (changed.directory / "report.html").unlink()
    assert main(["report", str(changed.directory)]) == 0
    _check_ciwgan_8words(changed.directory)


def _needs_noise():
    if not (SHARED_DATA / "noise").is_dir():
        pytest.skip(f"the quick profiles mix in the real noise recordings of {SHARED_DATA / 'noise'}")


@needs_synthesis
@pytest.mark.parametrize("reduced", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["reduced", "quick"])
def test_csm_vanet_snr_reports_table_ii_with_the_reference_rows(tmp_path, reduced, capsys):
    _needs_noise()
    runs = tmp_path / "runs"
    _run_cli("csm_vanet_snr", runs, reduced)
    assert "variants compared:" in capsys.readouterr().err
    table = _variants(runs, "csm-vanet-snr")
    methods = ["noisy", "spectral_gating", "csm_vanet"]
    assert [row["variant"] for row in table["rows"]] == methods
    grouped = table["grouped"]
    snrs = sorted({row["snr_db"] for row in grouped})
    assert snrs == [-5, 0, 5, 10, 15]
    assert [(row["snr_db"], row["method"]) for row in grouped] == [(s, m) for s in snrs for m in methods]
    blocks = ["babble", "cafe_short", "pink", "Average"]
    for row in grouped:
        for block in blocks:
            assert _finite(row[f"{block} pesq"]) and _finite(row[f"{block} stoi"]), (row, block)
    # the noisy input's PESQ rises with the SNR (a check that the rows are not mixed up)
    noisy = [row["Average pesq"] for row in grouped if row["method"] == "noisy"]
    assert noisy[0] < noisy[-1]
    folder = next((runs / "csm-vanet-snr").glob("variants-*"))
    text = (folder / "report.md").read_text()
    assert "**Means by `snr_db`** (rows) and `noise`" in text and "| snr_db | method | babble PESQ |" in text
    assert "![comparison.png](comparison.png)" in text and (folder / "comparison.png").is_file()
    assert "data:image/png;base64," in (folder / "report.html").read_text()
    # `wavelens report` on the comparison folder rebuilds it from the stored runs
    (folder / "report.md").unlink()
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.md").read_text() == text


@needs_synthesis
@pytest.mark.parametrize("reduced", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["reduced", "quick"])
def test_csm_vanet_ablations_report_table_i(tmp_path, reduced):
    _needs_noise()
    runs = tmp_path / "runs"
    _run_cli("csm_vanet_ablations", runs, reduced)
    rows = _variants(runs, "csm-vanet-ablations")["rows"]
    assert [r["variant"] for r in rows] == ["full", "wo_msgc", "wo_vad_decoder", "wo_time_loss",
                                            "wo_mag_loss"]
    for row in rows:
        assert row["parameters"] > 0
        for metric in ("pesq", "csig", "cbak", "covl", "ssnr", "stoi"):
            assert _finite(row[metric]), (row["variant"], metric)
    assert rows[1]["parameters"] < rows[0]["parameters"]  # w/o msgc is smaller
    for row in rows:
        run_dir = runs / "csm-vanet-ablations" / row["run"]
        write_report(run_dir)
        assert "stages/model/training.png" in _images(run_dir)
