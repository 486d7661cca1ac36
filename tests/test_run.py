"""Runs: stage order, run directories, reuse, resumption after interruption."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from wavelens import RunInterrupted, WavelensError
from wavelens.cli import main
from wavelens.host import Run, load_spec


def execute(spec, **kwargs):
    run = Run(load_spec(spec, overrides=kwargs.pop("overrides", None)), **kwargs)
    return run, run.execute()


def test_run_executes_every_stage_in_order(recorder_spec, journal):
    run, directory = execute(recorder_spec())
    assert journal() == [
        "dataset prepare", "model train from 0", "probes.0 run", "statistics.0 run",
    ]
    assert list(run.outcomes) == ["dataset", "model", "probes.0", "statistics.0", "metrics"]
    assert set(run.outcomes.values()) == {"computed"}
    result = json.loads((directory / "stages/statistics.0/result.json").read_text())
    table = (directory / "stages/probes.0/table.csv").read_text().splitlines()
    values = [float(line.split(",")[1]) for line in table[1:]]
    assert result["mean"] == pytest.approx(sum(values) / len(values))


def test_run_directory_records_spec_seed_versions_git_device_and_log(recorder_spec):
    _, directory = execute(recorder_spec())
    assert directory.parent.name == "recorder"
    stamp, run_hash = directory.name.rsplit("-", 1)
    assert len(run_hash) == 8
    record = json.loads((directory / "run.json").read_text())
    assert record["status"] == "complete" and record["seed"] == 3
    assert record["device"]["device"] == "cpu"
    assert "revision" in record["git"]
    assert record["plugins"]["model"]["plugin"] == "counting_model"
    environment = json.loads((directory / "environment.json").read_text())
    assert "torch" in environment["packages"] and "pydantic" in environment["packages"]
    lock = (Path(__file__).resolve().parent.parent / "requirements.lock").read_bytes()
    assert record["lock"]["sha256"] == hashlib.sha256(lock).hexdigest()
    assert record["lock"]["matches"] is (not record["lock"]["differences"])
    assert environment["lock"]["sha256"] == record["lock"]["sha256"]
    resolved = yaml.safe_load((directory / "spec.yaml").read_text())
    assert resolved["train"]["keep_checkpoints"] == 3  # defaults filled in
    assert "stage model: done" in (directory / "run.log").read_text()


def test_report_lists_stages_and_embeds_sections(recorder_spec):
    _, directory = execute(recorder_spec())
    report = (directory / "report.md").read_text()
    assert "## statistics.0 (table_mean)" in report and "mean of 6 values" in report
    assert "| mean_value | " in report
    html = (directory / "report.html").read_text()
    assert "<table>" in html and "mean of 6 values" in html


def test_report_command_rebuilds_the_report_without_running(recorder_spec, journal, capsys):
    _, directory = execute(recorder_spec())
    (directory / "report.md").unlink()
    calls = len(journal())
    assert main(["report", str(directory)]) == 0
    assert (directory / "report.md").is_file()
    assert len(journal()) == calls


def test_rerun_of_a_finished_run_recomputes_nothing(recorder_spec, journal):
    spec = recorder_spec()
    _, first = execute(spec)
    calls = journal()
    run, second = execute(spec)
    assert second == first
    assert journal() == calls
    assert set(run.outcomes.values()) == {"reused"}


def test_interrupted_run_resumes_without_recomputing_finished_stages(
    recorder_spec, journal, monkeypatch
):
    spec = recorder_spec(steps=6)
    monkeypatch.setenv("WAVELENS_TEST_INTERRUPT_AT", "5")
    with pytest.raises(RunInterrupted, match="stage model"):
        execute(spec)
    assert journal() == ["dataset prepare", "model train from 0"]
    run, directory = execute(spec)
    # the data stage is not prepared again; training continues from checkpoint 4
    assert journal() == [
        "dataset prepare", "model train from 0", "model train from 4",
        "probes.0 run", "statistics.0 run",
    ]
    assert run.outcomes["dataset"] == "reused" and run.outcomes["model"] == "computed"
    record = json.loads((directory / "run.json").read_text())
    assert record["status"] == "complete"


def test_an_interrupted_stage_is_resumed_after_a_change_elsewhere_in_the_spec(
    recorder_spec, journal, monkeypatch
):
    """A probe's changed parameter gives the run a new directory; the model stage,
    whose key is unchanged, continues from the earlier run's checkpoint."""
    spec = recorder_spec(steps=6)
    monkeypatch.setenv("WAVELENS_TEST_INTERRUPT_AT", "5")
    with pytest.raises(RunInterrupted):
        execute(spec)
    monkeypatch.delenv("WAVELENS_TEST_INTERRUPT_AT")
    run, directory = execute(spec, overrides=["probes.0.params.split=train"])
    assert journal()[:3] == ["dataset prepare", "model train from 0", "model train from 4"]
    assert run.outcomes["model"] == "computed"
    earlier = [d for d in directory.parent.iterdir() if d != directory]
    assert len(earlier) == 1 and not (earlier[0] / "stages" / "model.partial").exists()  # taken over


def test_interrupted_stage_leaves_no_finished_record(recorder_spec, monkeypatch):
    monkeypatch.setenv("WAVELENS_TEST_INTERRUPT_AT", "3")
    spec = recorder_spec()
    run = Run(load_spec(spec))
    with pytest.raises(RunInterrupted):
        run.execute()
    stages = run.directory / "stages"
    assert (stages / "dataset" / "stage.json").is_file()
    assert not (stages / "model").exists()
    assert (stages / "model.partial" / "checkpoints").is_dir()
    record = json.loads((run.directory / "run.json").read_text())
    assert record["status"] == "interrupted" and record["stage"] == "model"


def test_changed_downstream_params_reuse_upstream_stages_from_the_earlier_run(
    recorder_spec, journal
):
    spec = recorder_spec()
    _, first = execute(spec)
    journal_before = len(journal())
    run, second = execute(spec, overrides=["probes.0.params.split=train"])
    assert second != first
    assert run.outcomes["dataset"] == f"reused from {first.name}"
    assert run.outcomes["model"] == f"reused from {first.name}"
    assert run.outcomes["probes.0"] == "computed"
    assert journal()[journal_before:] == ["probes.0 run", "statistics.0 run"]
    # reused folders are hard links of the earlier run's files, not copies
    assert os.path.samefile(first / "stages/model/model.pt", second / "stages/model/model.pt")


def test_changed_seed_recomputes_everything(recorder_spec, journal):
    spec = recorder_spec()
    execute(spec)
    run, _ = execute(spec, overrides=["seed=4"])
    assert set(run.outcomes.values()) == {"computed"}


def test_fresh_run_reuses_nothing(recorder_spec, journal):
    spec = recorder_spec()
    _, first = execute(spec)
    run, second = execute(spec, fresh=True)
    assert second != first
    assert set(run.outcomes.values()) == {"computed"}


def test_stage_seed_does_not_depend_on_earlier_stages_being_reused(recorder_spec, tmp_path):
    spec = recorder_spec()
    _, first = execute(spec)
    _, second = execute(spec, fresh=True)
    a = (first / "stages/probes.0/table.csv").read_text()
    b = (second / "stages/probes.0/table.csv").read_text()
    assert a == b


def test_a_failing_stage_is_recorded_and_reraised(recorder_spec, monkeypatch):
    spec = recorder_spec(extra="evaluation: {split: nowhere}")
    with pytest.raises(Exception, match="evaluation.split is 'nowhere'"):
        execute(spec)
    record = json.loads(next((spec.parent / "runs/recorder").iterdir()).joinpath("run.json").read_text())
    assert record["status"] == "failed" and record["stage"] == "metrics"


def test_run_cli_reports_outcomes(recorder_spec, capsys):
    assert main(["run", str(recorder_spec())]) == 0
    err = capsys.readouterr().err
    assert "computed" in err and "run directory: " in err


@pytest.mark.slow
def test_sigterm_stops_the_cli_cleanly_and_the_next_run_resumes(recorder_spec, journal):
    spec = recorder_spec(steps=6)
    wavelens = Path(sys.executable).with_name("wavelens")
    env = {**os.environ, "WAVELENS_TEST_WAIT_AT": "5"}
    process = subprocess.Popen([str(wavelens), "run", str(spec)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while "model waiting at 5" not in journal():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "received signal SIGTERM" in err and "run the same command again" in err
    run, _ = execute(spec)
    assert run.outcomes["dataset"] == "reused"
    assert journal()[-3:] == ["model train from 4", "probes.0 run", "statistics.0 run"]


def test_leftover_hard_link_copy_does_not_block_reuse(recorder_spec):
    spec = recorder_spec()
    execute(spec)
    run = Run(load_spec(spec, overrides=["probes.0.params.split=train"]))
    (run.directory / "stages" / "dataset.linking").mkdir(parents=True)  # an interrupted copy
    run.execute()
    assert run.outcomes["dataset"].startswith("reused from")
    assert not (run.directory / "stages" / "dataset.linking").exists()


def test_running_until_a_stage_leaves_a_partial_run_that_the_full_run_continues(
    recorder_spec, journal
):
    spec = recorder_spec()
    run = Run(load_spec(spec))
    directory = run.execute(until="dataset")
    assert journal() == ["dataset prepare"]
    record = json.loads((directory / "run.json").read_text())
    assert (record["status"], record["stage"]) == ("partial", "dataset")
    assert not (directory / "report.md").exists()
    run, again = execute(spec)
    assert again == directory and run.outcomes["dataset"] == "reused"
    assert journal() == ["dataset prepare", "model train from 0", "probes.0 run", "statistics.0 run"]
    Run(load_spec(spec)).execute(until="dataset")  # a finished run is not downgraded
    assert json.loads((directory / "run.json").read_text())["status"] == "complete"


def test_running_until_an_unknown_stage_names_the_stages(recorder_spec):
    with pytest.raises(WavelensError, match="no stage 'train'; its stages are dataset, model"):
        Run(load_spec(recorder_spec())).execute(until="train")


def test_weights_used_without_training_are_credited_to_their_manifest(recorder_spec, write_spec):
    _, trained = execute(recorder_spec())
    shipped = trained.parent / "shipped"
    shipped.mkdir()
    (shipped / "model.pt").write_bytes((trained / "stages" / "model" / "model.pt").read_bytes())
    (shipped / "manifest.json").write_text(json.dumps(
        {"command": "wavelens run recorder.yaml", "commit": "0123456789abcdef", "steps": 1234,
         "model_stage_seconds": 600, "machine": "a test machine", "note": "A note."}))
    spec = yaml.safe_load(recorder_spec().read_text())
    del spec["train"]
    spec["model"]["weights"] = str(shipped / "model.pt")
    _, directory = execute(write_spec(yaml.safe_dump(spec), name="from_weights.yaml"))
    section = (directory / "stages" / "model" / "report.md").read_text()
    assert "Not trained in this run" in section and str(shipped / "model.pt") in section
    assert ("trained by `wavelens run recorder.yaml` at commit 0123456 for 1,234 steps in 10 minutes "
            "on a test machine. A note.") in section


def test_stage_seeds_are_those_of_the_stage_names_before_spec_version_2(recorder_spec):
    """A stage keeps its key across the renaming (dataset was data, probes.N was
    probe.N), so it must compute the same: its seed is derived from the old name."""
    import hashlib

    run = Run(load_spec(recorder_spec()))
    for new, old in (("dataset", "data"), ("probes.0", "probe.0"), ("model", "model")):
        expected = int(hashlib.sha256(f"{run.spec.seed}:{old}".encode()).hexdigest()[:8], 16)
        assert run._stage_seed(new) == expected
