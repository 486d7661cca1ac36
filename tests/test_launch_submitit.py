"""``wavelens run --launcher submitit``: variants as jobs through submitit, tested with
its local executor (the same code path as Slurm's, without a cluster)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from wavelens import WavelensError
from wavelens.cli import launcher_options, main
from wavelens.host import load_spec

pytest.importorskip("submitit")

from test_spec import LAUNCH_SPEC, RESUME_SPEC, _compared  # noqa: E402

LOCAL = ["--launcher", "submitit", "--launcher-option", "executor=local"]


def _runs(experiment: Path) -> list[Path]:
    return [p for p in experiment.iterdir() if p.name[:1].isdigit()]


def test_three_variants_run_as_three_jobs_and_compare_as_in_one_process(write_spec, tmp_path, capsys):
    path = write_spec(LAUNCH_SPEC)
    jobs_dir, here_dir = tmp_path / "jobs", tmp_path / "here"
    assert main(["run", str(path), "--runs-dir", str(jobs_dir), *LOCAL]) == 0
    err = capsys.readouterr().err
    assert "submitted 3 jobs (submitit's local executor)" in err and err.count("finished ") == 3
    experiment = jobs_dir / "launch-demo"
    runs = _runs(experiment)
    assert len(runs) == 3
    # the dataset stage was built once, before the jobs, and every job reused it
    inodes = {(run / "stages" / "dataset" / "stage.json").stat().st_ino for run in runs}
    assert len(inodes) == 1
    assert main(["run", str(path), "--runs-dir", str(here_dir)]) == 0
    assert _compared(experiment) == _compared(here_dir / "launch-demo")


def test_a_sweep_runs_its_grid_as_jobs_and_an_invalid_cell_submits_nothing(write_spec, tmp_path, capsys):
    path = write_spec(LAUNCH_SPEC.split("    variants:")[0])
    runs_dir = tmp_path / "runs"
    assert main(["run", str(path), "--runs-dir", str(runs_dir), *LOCAL, "--sweep", "train.steps=1,2",
                 "--sweep", "model.params.channels=[4],[6]"]) == 0
    assert set(_compared(runs_dir / "launch-demo")) == {"steps=1,channels=[4]", "steps=1,channels=[6]",
                                                         "steps=2,channels=[4]", "steps=2,channels=[6]"}
    capsys.readouterr()
    bad_dir = tmp_path / "bad"
    assert main(["run", str(path), "--runs-dir", str(bad_dir), *LOCAL, "--sweep", "train.steps=2,0"]) == 2
    assert "(sweep cell steps=0)" in capsys.readouterr().err
    assert not bad_dir.exists()  # nothing prepared, nothing submitted


def _submitit_tasks(folder: Path) -> list[int]:
    """PIDs of the processes running submitit jobs whose logs go to ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if "submitit.core._submit" in command and str(folder) in command:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process in /proc")
def test_a_preempted_job_checkpoints_is_requeued_and_resumes(write_spec, tmp_path):
    """The job is sent SIGUSR2, as Slurm signals a pre-emption or a near time limit,
    after its run's first checkpoint: the run saves a checkpoint and stops, submitit
    requeues the job, and the run resumes from that checkpoint and completes."""
    import signal
    import subprocess
    import time

    from conftest import REPO

    path = write_spec(RESUME_SPEC.split("    variants:")[0])  # one run
    runs_dir = tmp_path / "runs"
    command = [sys.executable, "-m", "wavelens.cli", "run", str(path), "--runs-dir", str(runs_dir), *LOCAL]
    experiment = runs_dir / "resume-demo"
    with (tmp_path / "launcher.log").open("w") as log:
        launcher = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(
                experiment.glob("*/stages/model.partial/checkpoints/*.pt")):
            time.sleep(0.1)
        (folder,) = experiment.glob("jobs-*/submitit")
        tasks = _submitit_tasks(folder)
        assert len(tasks) == 1
        os.kill(tasks[0], signal.SIGUSR2)
        assert launcher.wait(timeout=600) == 0, (tmp_path / "launcher.log").read_text()[-3000:]
    (run,) = [p for p in experiment.iterdir() if p.name[:1].isdigit()]
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert (run / "stages" / "model" / "checkpoints" / "ckpt-000006000.pt").is_file()
    submitit_log = "".join(p.read_text() for p in folder.glob("*_log.out"))
    run_log = " ".join("".join(p.read_text() for p in folder.glob("*_log.err")).split())
    assert "Caught signal SIGUSR2" in submitit_log and "Requeued job" in submitit_log
    stopped = int(run_log.split("SIGTERM at step ")[1].split(";")[0])
    assert 0 < stopped < 6000
    assert f"resuming training at step {stopped} of 6000" in run_log


def test_launcher_settings_come_from_the_spec_and_the_command_line_and_are_checked(write_spec, tmp_path):
    from wavelens._spec import LauncherSpec

    block = "launcher: {partition: gpu, gpus_per_job: 1, timeout_min: 600}"
    path = write_spec(f"{LAUNCH_SPEC.rstrip()}\n    {block}\n")
    args = type("Args", (), {"launcher_option": ["timeout_min=30", "slurm={account: lab}"]})()
    resolved = load_spec(path)
    options = launcher_options(args, resolved)
    assert options == LauncherSpec(partition="gpu", gpus_per_job=1, timeout_min=30, slurm={"account": "lab"})
    args.launcher_option = ["timeout_min=-5"]
    with pytest.raises(WavelensError, match="timeout_min: Input should be greater than 0"):
        launcher_options(args, resolved)
    args.launcher_option = ["partitoin=gpu"]
    with pytest.raises(WavelensError, match="partitoin: Extra inputs are not permitted"):
        launcher_options(args, resolved)
    # where a run is submitted from is not part of what it is
    plain = load_spec(write_spec(LAUNCH_SPEC, "plain.yaml"))
    assert plain.digest() == resolved.digest()


def test_several_processes_per_job_run_the_job_under_torchrun():
    from wavelens._launch import Job
    from wavelens._submitit import job_command

    job = Job("a", ["--variant", "a"])
    single = job_command(Path("s.yaml"), job, [], Path("r.json"), 1)
    assert single == [sys.executable, "-m", "wavelens.cli", "run", "s.yaml", "--variant", "a", "--record",
                      "r.json"]
    several = job_command(Path("s.yaml"), job, [], Path("r.json"), 4)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert several[:5] == torchrun
    assert several[5:] == single[1:]


def test_launcher_options_need_the_submitit_launcher(write_spec, tmp_path, capsys):
    path = write_spec(LAUNCH_SPEC)
    assert main(["run", str(path), "--runs-dir", str(tmp_path), "--launcher-option", "partition=gpu"]) != 0
    assert "--launcher-option is for --launcher submitit" in capsys.readouterr().err


def test_auto_is_slurm_where_sbatch_is_found_and_only_there(monkeypatch):
    import wavelens._submitit as launcher
    from wavelens._spec import LauncherSpec

    found = {"sbatch": "/usr/bin/sbatch"}
    monkeypatch.setattr(launcher.shutil, "which", found.get)
    assert launcher.executor_kind(LauncherSpec()) == "slurm"
    assert launcher.executor_kind(LauncherSpec(executor="local")) == "local"
    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)
    assert launcher.executor_kind(LauncherSpec()) == "local"
    assert launcher.executor_kind(LauncherSpec(executor="slurm")) == "slurm"
