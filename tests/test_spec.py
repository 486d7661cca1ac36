"""Spec loading: safe YAML, two-step validation, error paths, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from wavelens import SpecError, WavelensError
from wavelens.cli import main
from wavelens.host import ResolvedSpec, load_spec, load_spec_text

from conftest import FIXTURE_PLUGINS

GOOD = """\
spec_version: 1
name: demo
seed: 7
data:
  plugin: tones
  params: {n_train: 16, n_test: 8}
model:
  plugin: tiny_cnn
  params: {n_classes: 4}
train: {steps: 10, batch_size: 4}
metrics: [{plugin: accuracy}]
"""


def issues_of(excinfo) -> dict[str, str]:
    return {issue.path: issue.message for issue in excinfo.value.issues}


def test_valid_spec_resolves_params_with_defaults(write_spec):
    resolved = load_spec(write_spec(GOOD))
    data = resolved.to_dict()
    assert data["dataset"]["params"]["sample_rate"] == 16000  # default filled in
    assert data["model"]["params"]["learning_rate"] == 1e-3
    assert data["train"]["checkpoint_every"] == 1000


def test_misspelt_plugin_name_suggests_the_closest(write_spec):
    spec = write_spec(GOOD.replace("plugin: tiny_cnn", "plugin: tiny_cn"))
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    issue = caught.value.issues[0]
    assert issue.path == "model.plugin"
    assert issue.line == 8
    assert "unknown model plugin 'tiny_cn'" in issue.message
    assert "did you mean 'tiny_cnn'?" in issue.message
    assert str(spec) in str(caught.value)


def test_plugin_of_the_wrong_kind_is_named_as_such(write_spec):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(GOOD.replace("plugin: tiny_cnn", "plugin: tones")))
    assert issues_of(caught)["model.plugin"] == "'tones' is a dataset plugin, not a model plugin"


def test_unknown_envelope_field_names_its_path_and_line(write_spec):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(GOOD.replace("train: {steps: 10,", "train: {stepz: 10, steps: 10,")))
    issue = caught.value.issues[0]
    assert issue.path == "train.stepz"
    assert issue.line == 10
    assert "unknown field; expected one of: steps, epochs, batch_size" in issue.message


def test_unknown_plugin_param_names_its_path(write_spec):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(GOOD.replace("n_classes: 4", "n_clases: 4")))
    issue = caught.value.issues[0]
    assert issue.path == "model.params.n_clases"
    assert issue.line == 9
    assert "unknown field" in issue.message and "n_classes" in issue.message


def test_wrong_type_names_its_path_and_the_value(write_spec):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(GOOD.replace("n_classes: 4", "n_classes: four")))
    message = issues_of(caught)["model.params.n_classes"]
    assert "valid integer" in message and "'four'" in message


def test_missing_required_parameter_names_its_path(write_spec):
    spec = write_spec(
        f"spec_version: 1\nname: m\nplugins: [{FIXTURE_PLUGINS / 'recorder.py'}]\n"
        "data: {plugin: tones}\nmodel: {plugin: tiny_cnn}\ntrain: {batch_size: 2}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert "give exactly one of steps or epochs" in issues_of(caught)["train"]
    assert caught.value.issues[0].line == 6


def test_missing_required_plugin_param_names_its_path(tmp_path, write_spec):
    plugin = tmp_path / "needs.py"
    plugin.write_text(
        "from wavelens import Contribution, Dataset, Params, hookimpl\n"
        "class P(Params):\n    root: str\n"
        "class D(Dataset):\n    def __init__(self, p): pass\n    def load(self, w): return {}\n"
        "@hookimpl\ndef wavelens_datasets():\n"
        "    return [Contribution('needs_root', P, 'x', D)]\n"
    )
    spec = write_spec("spec_version: 1\nname: m\nplugins: [./needs.py]\n"
                      "data: {plugin: needs_root, params: {}}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert issues_of(caught) == {"dataset.params.root": "required field missing"}


def test_all_problems_are_reported_together(write_spec):
    text = GOOD.replace("n_classes: 4", "n_classes: x").replace("seed: 7", "seed: seven")
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(text))
    # the envelope fails first; its problems are all listed
    assert set(issues_of(caught)) == {"seed"}
    text = GOOD.replace("n_classes: 4", "n_classes: x").replace("n_train: 16", "n_train: -1")
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(text))
    assert set(issues_of(caught)) == {"dataset.params.n_train", "model.params.n_classes"}


def test_python_object_tag_is_refused(write_spec, tmp_path):
    marker = tmp_path / "pwned"
    spec = write_spec(
        GOOD + f"description: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert "!!python/object are refused" in str(caught.value)
    assert caught.value.issues[0].line == 12
    assert not marker.exists()


def _laughs(levels: int, key: str = "description") -> str:
    """A "billion laughs" document: each anchor a list of nine aliases of the last."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\n{key}: *l{levels - 1}\n"


@pytest.mark.parametrize("key", ["description", "lols"], ids=["legal-key", "unknown-key"])
def test_an_alias_bomb_is_refused_at_once(key):
    import time

    started = time.perf_counter()
    with pytest.raises(SpecError, match="expands to more than 100,000 values"):
        load_spec_text(GOOD + _laughs(9, key))  # 9**9 = 387 million strings when expanded
    assert time.perf_counter() - started < 5  # generous on a loaded machine; it takes milliseconds


def test_aliases_within_bounds_still_work():
    spec = load_spec_text(GOOD.replace("seed: 7", "seed: &seed 7\ndescription: x") + "plugins: []\n"
                          "profiles: {again: {seed: *seed}}\n")
    assert spec.spec.seed == 7


def test_a_recursive_alias_is_refused():
    with pytest.raises(SpecError, match="refers to its own anchor"):
        load_spec_text(GOOD + "description: &d [*d]\n")


def test_a_duplicate_key_is_refused_with_both_lines():
    with pytest.raises(SpecError) as caught:
        load_spec_text(GOOD + "seed: 8\n")
    (issue,) = caught.value.issues
    assert "'seed' appears twice in one mapping, at lines 3 and 12" in issue.message
    assert issue.line == 12


def test_a_huge_spec_is_refused_before_it_is_parsed(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "description: " + "x" * 10_000_000 + "\n")
    with pytest.raises(SpecError, match="larger than 1,000,000 bytes"):
        load_spec(big)
    with pytest.raises(SpecError, match="at most 1,000,000"):
        load_spec_text(GOOD + "description: " + "x" * 2_000_000 + "\n")


def test_a_device_is_not_read_as_a_spec():
    with pytest.raises(SpecError, match="not a regular file"):
        load_spec(Path("/dev/zero"))


def test_an_override_is_bounded_too(write_spec):
    with pytest.raises(SpecError, match="--set description="):
        load_spec(write_spec(GOOD), overrides=["description=" + _laughs(9).replace("\n", ", ").join("{}")])


def test_many_problems_are_all_kept_but_the_message_lists_twenty():
    text = GOOD + "".join(f"unknown_{i}: 1\n" for i in range(500))
    with pytest.raises(SpecError) as caught:
        load_spec_text(text)
    assert len(caught.value.issues) == 500
    message = str(caught.value)
    assert message.count("unknown_") == 20 and "… and 480 more" in message


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused_in_plugin_params(write_spec, value):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(GOOD.replace("n_test: 8}", f"n_test: 8, snr_db: {value}}}")))
    assert "finite number" in issues_of(caught)["dataset.params.snr_db"]


def test_invalid_yaml_reports_the_line(write_spec):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec("spec_version: 1\nname: [unclosed\n"))
    assert "invalid YAML" in str(caught.value)
    assert caught.value.issues[0].line is not None


def test_top_level_must_be_a_mapping():
    with pytest.raises(SpecError, match="a spec is a mapping of keys to values, not a list"):
        load_spec_text("- 1\n- 2\n")


def test_future_spec_version_is_refused():
    with pytest.raises(SpecError, match=r"reads spec_version 2 \(and 1, the version before\), not 3"):
        load_spec_text("spec_version: 3\nname: x\n")


V1 = """spec_version: 1
name: old
data: {plugin: tones, params: {n_train: 8}}
model: {plugin: tiny_cnn}
probe:
  - {plugin: feature_map_average, params: {layers: [conv1]}}
variants:
  small: {data.params.n_train: 4}
"""


def test_a_version_1_spec_is_read_with_the_slots_named_by_their_kind(tmp_path):
    from wavelens.host import plan_stages

    spec = tmp_path / "old.yaml"
    spec.write_text(V1)
    resolved = load_spec(spec, overrides=["data.params.n_test=6"])  # the file's own names work
    assert resolved.spec.spec_version == 2 and resolved.spec.dataset.params == {"n_train": 8, "n_test": 6}
    assert [p.name for p in plan_stages(resolved)] == ["dataset", "model", "probes.0"]
    assert load_spec(spec, variant="small").component("dataset").params.n_train == 4
    written = spec.with_name("new.yaml")
    written.write_text(V1.replace("spec_version: 1", "spec_version: 2").replace("data", "dataset")
                       .replace("probe:", "probes:"))
    assert [p.key for p in plan_stages(load_spec(written))] == [p.key for p in plan_stages(load_spec(spec))]
    # An error names the path in version 2's words, on the line the file has it.
    spec.write_text(V1.replace("n_train: 8", "n_train: -1"))
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    (issue,) = caught.value.issues
    assert issue.path == "dataset.params.n_train" and issue.line == 3


def test_a_version_1_spec_with_both_names_is_refused():
    with pytest.raises(SpecError, match="spec_version 1 names this 'data', and the spec has 'dataset'"):
        load_spec_text(V1 + "dataset: {plugin: tones}\n")


def test_stage_without_its_inputs_is_refused():
    with pytest.raises(SpecError, match="'train' needs 'model'"):
        load_spec_text("spec_version: 1\nname: x\ndata: {plugin: tones}\ntrain: {steps: 3}\n")


def test_missing_spec_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "absent.yaml")


def test_missing_local_plugin_file_names_its_path(write_spec):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec("spec_version: 1\nname: x\nplugins: [./nope.py]\n"))
    assert "plugins.0" in issues_of(caught)
    assert "does not exist" in issues_of(caught)["plugins.0"]


def test_overrides_set_nested_values_parsed_as_yaml(write_spec):
    resolved = load_spec(
        write_spec(GOOD),
        overrides=["train.steps=200", "model.params.learning_rate=0.01", "metrics.0.plugin=accuracy",
                   "probe=[]"],
    )
    assert resolved.spec.train.steps == 200
    assert resolved.component("model").params.learning_rate == 0.01


def test_bad_override_names_the_flag(write_spec):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(GOOD), overrides=["train.steps=lots"])
    assert issues_of(caught)["train.steps"].startswith("Input should be a valid integer")
    with pytest.raises(SpecError, match=r"--set metrics\.5\.plugin=x"):
        load_spec(write_spec(GOOD), overrides=["metrics.5.plugin=x"])
    with pytest.raises(SpecError, match="expected KEY.PATH=VALUE"):
        load_spec(write_spec(GOOD), overrides=["train.steps"])


def test_spec_paths_resolve_relative_to_the_spec_file(tmp_path):
    model = load_spec_text(GOOD).component("model").build()
    model.save_weights(model.network(), tmp_path / "w" / "weights.pt")  # weights that fit
    spec = tmp_path / "s.yaml"
    spec.write_text(GOOD.replace("  params: {n_classes: 4}",
                                 "  params: {n_classes: 4}\n  weights: w/weights.pt"))
    assert load_spec(spec).spec.model.weights == tmp_path / "w" / "weights.pt"


def test_run_print_shows_the_resolved_spec(write_spec, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./runs is where a run would go
    monkeypatch.delenv("WAVELENS_RUNS_DIR", raising=False)
    assert main(["run", str(write_spec(GOOD)), "--print", "--set", "seed=11"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seed"] == 11
    assert printed["dataset"]["params"]["sample_rate"] == 16000
    assert not Path("runs").exists() or not any(Path("runs").iterdir())


def test_validate_exits_2_with_the_message(write_spec, capsys):
    assert main(["validate", str(write_spec(GOOD.replace("tiny_cnn", "tiny_cn")))]) == 2
    err = capsys.readouterr().err
    assert "model.plugin (line 8)" in err and "did you mean 'tiny_cnn'?" in err


def test_validate_accepts_a_good_spec(write_spec, capsys):
    assert main(["validate", str(write_spec(GOOD))]) == 0
    assert "valid" in capsys.readouterr().err


def test_validate_checks_every_profile_and_variant(write_spec, capsys):
    spec = write_spec(GOOD + "profiles:\n  fast: {train.steps: 0}\n  fine: {seed: 3}\n"
                      "variants:\n  wide: {model.params.n_classes: two}\n")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "train.steps" in err and "(with --profile fast)" in err
    for context in ("--variant wide)", "--profile fast --variant wide", "--profile fine --variant wide"):
        assert context in err, context
    assert main(["validate", str(spec), "--profile", "fine", "--set", "model.params.n_classes=4"]) == 2
    assert "--profile fast" not in capsys.readouterr().err  # only the profile asked for
    good = write_spec(GOOD + "profiles:\n  fine: {seed: 3}\n", name="good.yaml")
    assert main(["validate", str(good)]) == 0
    assert "profiles fine valid" in capsys.readouterr().err


def test_shipped_specs_validate():
    """Every spec, as written and in every profile and variant. A full profile may
    name a corpus or weights file that the user gives on the command line: its only
    allowed problems are those placeholders (/path/to/...)."""
    import yaml

    for spec in sorted(Path(__file__).resolve().parent.parent.glob("specs/*.yaml")):
        data = yaml.safe_load(spec.read_text())
        for profile in [None, *(data.get("profiles") or [])]:
            for variant in data.get("variants") or [None]:
                try:
                    load_spec(spec, profile=profile, variant=variant)
                except SpecError as error:
                    assert profile != "quick", (spec.name, str(error))
                    assert all("/path/to/" in issue.message for issue in error.issues), str(error)


def test_missing_weights_file_names_its_path(write_spec):
    text = GOOD.replace("  params: {n_classes: 4}", "  params: {n_classes: 4}\n  weights: gone.pt")
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(text))
    assert "does not exist" in issues_of(caught)["model.weights"]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _with_weights(path) -> str:
    return GOOD.replace("  params: {n_classes: 4}", f"  params: {{n_classes: 4}}\n  weights: {path}")


def test_weights_that_are_not_a_weights_file_are_refused_at_validate_time(write_spec, tmp_path):
    import torch

    marker = tmp_path / "pwned"
    torch.save({"w": _Payload(marker)}, tmp_path / "payload.pt")
    (tmp_path / "text.pt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    for name in ("payload.pt", "text.pt"):
        with pytest.raises(SpecError) as caught:
            load_spec(write_spec(_with_weights(tmp_path / name)))
        message = issues_of(caught)["model.weights"]
        assert "is not a weights file that loads safely" in message, message
        assert caught.value.issues[0].line == 10
    assert not marker.exists()  # the pickle's payload never ran
    with pytest.raises(SpecError, match="is not a file"):
        load_spec(write_spec(_with_weights(tmp_path)))


def test_weights_of_another_shape_are_refused_naming_the_keys(write_spec, tmp_path):
    resolved = load_spec(write_spec(GOOD.replace("n_classes: 4", "n_classes: 5")))
    model = resolved.component("model").build()
    model.save_weights(model.network(), tmp_path / "five.pt")
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(_with_weights(tmp_path / "five.pt")))
    message = issues_of(caught)["model.weights"]
    assert "does not fit a tiny_cnn network with these params" in message and "size mismatch" in message
    assert isinstance(load_spec(write_spec(_with_weights(tmp_path / "five.pt")),
                                overrides=["model.params.n_classes=5"]), ResolvedSpec)


def test_home_of_an_unknown_user_is_a_spec_error(write_spec):
    text = GOOD.replace("  params: {n_classes: 4}",
                        "  params: {n_classes: 4}\n  weights: ~no_such_user_xyz/w.pt")
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(text))
    assert "model.weights" in issues_of(caught)


VARIANT_SPEC = """
    spec_version: 1
    name: variants-demo
    device: cpu
    data: {plugin: tones, params: {n_train: 64, n_test: 32}}
    model: {plugin: tiny_cnn, params: {channels: [8, 8]}}
    train: {steps: 4, batch_size: 8}
    metrics: [{plugin: accuracy}]
    profiles:
      quick: {train.steps: 2, model.params.channels: [4]}
    variants:
      base: {}
      wide: {model.params.channels: [16, 16]}
    """


def test_a_profile_applies_its_changes_before_the_overrides(write_spec):
    path = write_spec(VARIANT_SPEC)
    plain = load_spec(path)
    assert plain.spec.train.steps == 4 and plain.spec.profile is None and not plain.spec.profiles
    quick = load_spec(path, profile="quick", overrides=["train.steps=3"])
    assert quick.spec.profile == "quick" and quick.spec.train.steps == 3
    assert quick.component("model").params.channels == [4]
    with pytest.raises(SpecError, match="no profile 'fast'; the spec defines: quick"):
        load_spec(path, profile="fast")


def test_a_variant_applies_after_the_profile_and_is_recorded(write_spec):
    path = write_spec(VARIANT_SPEC)
    wide = load_spec(path, profile="quick", variant="wide")
    assert wide.spec.variant == "wide" and not wide.spec.variants
    assert wide.component("model").params.channels == [16, 16] and wide.spec.train.steps == 2


def test_train_needs_steps_or_epochs_but_not_both(write_spec):
    path = write_spec(VARIANT_SPEC)
    for overrides, message in ((["train.steps=null"], "exactly one of steps or epochs"),
                               (["train.epochs=2"], "exactly one of steps or epochs")):
        with pytest.raises(SpecError, match=message):
            load_spec(path, overrides=overrides)


def test_run_runs_every_variant_and_compares_them_in_one_table(write_spec, tmp_path, capsys):
    path = write_spec(VARIANT_SPEC)
    assert main(["run", str(path), "--profile", "quick", "--runs-dir", str(tmp_path / "runs")]) == 0
    experiment = tmp_path / "runs" / "variants-demo"
    runs = sorted(p.name for p in experiment.iterdir() if not p.name.startswith("variants-"))
    assert [name.split("-")[2] for name in runs] == ["base", "wide"]
    comparisons = list(experiment.glob("variants-*/table.csv"))
    assert len(comparisons) == 1
    rows = comparisons[0].read_text().splitlines()
    assert rows[0].startswith("variant,run,parameters,accuracy") and len(rows) == 3
    wide = next(experiment.glob("*-wide-*"))
    record = json.loads((wide / "stages" / "dataset" / "stage.json").read_text())
    base = next(experiment.glob("*-base-*"))
    assert record["key"] == json.loads((base / "stages" / "dataset" / "stage.json").read_text())["key"]
    assert (wide / "stages" / "dataset" / "stage.json").stat().st_ino == (
        base / "stages" / "dataset" / "stage.json").stat().st_ino  # prepared once, hard-linked
    report = (comparisons[0].parent / "report.md").read_text()
    assert "| variant | #Param. |" in report and "| wide |" in report
    # A classification metric is compared like any other, with the exact parameter
    # count of a small network (not "0.00M").
    header = next(line for line in report.splitlines() if line.startswith("| variant |"))
    assert header == "| variant | #Param. | Accuracy |"  # no count column: nothing counted files
    for variant in ("base", "wide"):
        stages = next(experiment.glob(f"*-{variant}-*")) / "stages"
        parameters = json.loads((stages / "model" / "stage.json").read_text())["summary"]["parameters"]
        accuracy = json.loads((stages / "metrics" / "metrics.json").read_text())["results"][0]["value"]
        assert parameters < 10_000
        assert f"| {variant} | {parameters:,} | {accuracy:.3f} |" in report
    # running again reuses everything
    assert main(["run", str(path), "--profile", "quick", "--runs-dir", str(tmp_path / "runs"),
                 "--variant", "wide"]) == 0


SWEEP_SPEC = """
    spec_version: 1
    name: sweep-demo
    device: cpu
    data: {plugin: tones, params: {n_train: 32, n_test: 16}}
    model: {plugin: tiny_cnn, params: {channels: [4]}}
    train: {steps: 2, batch_size: 8}
    metrics: [{plugin: accuracy}]
    """


def test_a_sweep_runs_every_cell_of_its_grid_and_compares_them_once(write_spec, tmp_path, capsys):
    path = write_spec(SWEEP_SPEC)
    runs_dir = tmp_path / "runs"
    assert main(["run", str(path), "--runs-dir", str(runs_dir), "--sweep", "model.params.channels=[4],[8]",
                 "--sweep", "train.steps=1,2"]) == 0
    experiment = runs_dir / "sweep-demo"
    assert len([p for p in experiment.iterdir() if not p.name.startswith("variants-")]) == 4
    (table,) = experiment.glob("variants-*/table.csv")
    import csv

    labels = [row["variant"] for row in csv.DictReader(table.read_text().splitlines())]
    assert labels == ["channels=[4],steps=1", "channels=[4],steps=2", "channels=[8],steps=1",
                      "channels=[8],steps=2"]
    assert "sweep cell channels=[8],steps=2" in capsys.readouterr().err


def test_a_sweep_with_one_invalid_cell_runs_nothing(write_spec, tmp_path, capsys):
    path = write_spec(SWEEP_SPEC)
    runs_dir = tmp_path / "runs"
    assert main(["run", str(path), "--runs-dir", str(runs_dir), "--sweep", "train.steps=2,0"]) == 2
    err = capsys.readouterr().err
    assert "train.steps" in err and "(sweep cell steps=0)" in err
    assert not runs_dir.exists() or not any(runs_dir.rglob("stage.json"))


def test_sweep_values_split_at_top_level_commas_only():
    from wavelens.cli import sweep_cells

    cells = sweep_cells(["model.params.channels=[4, 8],[16]", "train.steps=1,2"])
    assert [name for name, _ in cells] == ["channels=[4, 8],steps=1", "channels=[4, 8],steps=2",
                                          "channels=[16],steps=1", "channels=[16],steps=2"]
    assert cells[0][1] == ["model.params.channels=[4, 8]", "train.steps=1"]
    with pytest.raises(WavelensError, match="expected KEY.PATH=V1,V2"):
        sweep_cells(["train.steps"])
    with pytest.raises(WavelensError, match="names train.steps twice"):
        sweep_cells(["train.steps=1", "train.steps=2"])


LAUNCH_SPEC = """
    spec_version: 1
    name: launch-demo
    device: cpu
    seed: 3
    data: {plugin: tones, params: {n_train: 32, n_test: 16}}
    model: {plugin: tiny_cnn, params: {channels: [4]}}
    train: {steps: 2, batch_size: 8}
    metrics: [{plugin: accuracy}]
    variants:
      a: {}
      b: {model.params.channels: [8]}
      c: {train.steps: 3}
    """


def _compared(experiment):
    import csv

    (table,) = experiment.glob("variants-*/table.csv")
    return {row["variant"]: row["accuracy"] for row in csv.DictReader(table.read_text().splitlines())}


def test_the_local_launcher_runs_each_variant_as_a_job_and_compares_as_in_one_process(
        write_spec, tmp_path, capsys):
    path = write_spec(LAUNCH_SPEC)
    jobs_dir, here_dir = tmp_path / "jobs", tmp_path / "here"
    assert main(["run", str(path), "--runs-dir", str(jobs_dir), "--launcher", "local", "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert "3 jobs, 2 at a time" in err and err.count("started ") == 3 and err.count("finished ") == 3
    experiment = jobs_dir / "launch-demo"
    runs = [p for p in experiment.iterdir() if p.name[:1].isdigit()]
    assert len(runs) == 3 and len(list(experiment.glob("jobs-*/*.log"))) == 3
    # the dataset was prepared once, before the jobs: every run holds the same files
    inodes = {(run / "stages" / "dataset" / "stage.json").stat().st_ino for run in runs}
    assert len(inodes) == 1
    assert main(["run", str(path), "--runs-dir", str(here_dir)]) == 0
    assert _compared(experiment) == _compared(here_dir / "launch-demo")


def test_a_failed_job_is_listed_in_the_comparison_not_left_out(write_spec, tmp_path, capsys):
    (tmp_path / "boom.py").write_text(
        "from wavelens import Contribution, Metric, Params, hookimpl\n\n"
        "class Boom(Metric):\n    def __init__(self, params):\n        super().__init__()\n"
        "    def update(self, preds, target):\n        raise RuntimeError('boom at run time')\n"
        "    def compute(self):\n        return 0.0\n\n"
        "@hookimpl\ndef wavelens_metrics():\n    return [Contribution('boom', Params, 'fails', Boom)]\n")
    text = LAUNCH_SPEC.replace("    seed: 3\n", "    seed: 3\n    plugins: [boom.py]\n")
    path = write_spec(text.replace("c: {train.steps: 3}", "c: {metrics: [{plugin: boom}]}"))
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--launcher", "local"]) == 1
    experiment = tmp_path / "runs" / "launch-demo"
    assert set(_compared(experiment)) == {"a", "b"}
    (report,) = experiment.glob("variants-*/report.md")
    text = report.read_text()
    assert "Not in the table: 1 variant(s) failed." in text and "- `c`: exit status" in text
    assert json.loads(next(experiment.glob("variants-*/table.json")).read_text())["failed"]["c"]
    assert "boom at run time" in next(experiment.glob("jobs-*/c.log")).read_text()


# Long enough to be stopped after its first checkpoints (6,000 steps, one every 100).
RESUME_SPEC = """
    spec_version: 1
    name: resume-demo
    device: cpu
    seed: 3
    data: {plugin: tones, params: {n_train: 32, n_test: 16}}
    model: {plugin: tiny_cnn, params: {channels: [4]}}
    train: {steps: 6000, batch_size: 8, checkpoint_every: 100, log_every: 1000}
    metrics: [{plugin: accuracy}]
    variants:
      a: {}
      b: {seed: 4}
    """


def test_an_interrupted_local_launch_resumes_every_job_when_run_again(write_spec, tmp_path):
    """Ctrl-C stops the launcher's jobs, each saving a checkpoint; the same command
    then resumes each run from it."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    path = write_spec(RESUME_SPEC)
    runs_dir = tmp_path / "runs"
    command = [sys.executable, "-m", "wavelens.cli", "run", str(path), "--runs-dir", str(runs_dir),
               "--launcher", "local", "--jobs", "2"]
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        experiment = runs_dir / "resume-demo"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(
                {p.parts[-5] for p in experiment.glob("*/stages/model.partial/checkpoints/*.pt")}) < 2:
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=300) != 0
    assert "the same command resumes" in (tmp_path / "first.log").read_text()
    assert main(["run", str(path), "--runs-dir", str(runs_dir), "--launcher", "local", "--jobs", "2"]) == 0
    for label in ("a", "b"):
        log = " ".join(next(experiment.glob(f"jobs-*/{label}.log")).read_text().split())
        step = int(log.split("resuming training at step ")[1].split()[0])
        assert 0 < step < 6000
    runs = [p for p in experiment.iterdir() if p.name[:1].isdigit()]
    assert len(runs) == 2
    assert all(json.loads((run / "run.json").read_text())["status"] == "complete" for run in runs)
