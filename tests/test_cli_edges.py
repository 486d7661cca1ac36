"""The command line at its edges: bad numbers, file-system errors, leftovers."""

from __future__ import annotations

import errno

import pytest

from wavelens.cli import main

from conftest import REPO

DEMO = str(REPO / "specs" / "demo.yaml")


EVALUATE = ["evaluate", "--reference", "r", "--estimate", "e"]


@pytest.mark.parametrize("argv, message", [
    ([*EVALUATE, "--rate", "-1"], "--rate: expected 1,000 to 384,000"),
    ([*EVALUATE, "--workers", "0"], "--workers: expected 1 to"),
    (["generate", "x", "--code", "0", "-n", "-5"], "-n: expected 1 to 10,000, not -5"),
    (["generate", "x", "--code", "0", "-n", "0"], "-n: expected 1 to 10,000, not 0"),
    (["generate", "x", "--code", "0", "-n", "100000000"], "not 100,000,000"),
    (["generate", "x", "--code", "0", "-n", "1e8"], "expected a whole number, not '1e8'"),
    (["generate", "x", "--code", "0", "--value", "nan"], "--value: expected a finite number, not nan"),
    (["generate", "x", "--code", "0", "--value", "inf"], "--value: expected a finite number, not inf"),
    (["enhance", "x", "-o", "y", "--threshold", "2"], "--threshold: expected a probability from 0 to 1"),
], ids=["rate", "workers", "n-negative", "n-zero", "n-huge", "n-float", "value-nan", "value-inf",
        "threshold"])
def test_bad_numbers_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return " ".join(err[err.index("error:"):].split())


def test_a_file_where_the_runs_folder_should_be_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", DEMO, "--runs-dir", str(blocker)]) == 1
    line = _one_error_line(capsys)
    assert "Not a directory" in line and str(blocker) in line
    assert "a file stands where a folder is needed" in line


def test_an_unwritable_evaluate_out_is_one_line(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    for side in ("ref", "est"):
        (tmp_path / side).mkdir()
        sf.write(tmp_path / side / "a.wav", np.random.default_rng(0).standard_normal(16000) * 0.1, 16000)
    (tmp_path / "blocker").write_text("")
    assert main(["evaluate", "--reference", str(tmp_path / "ref"), "--estimate", str(tmp_path / "est"),
                 "--metrics", "stoi", "--workers", "1", "--out", str(tmp_path / "blocker" / "scores")]) == 1
    assert "a file stands where a folder is needed" in _one_error_line(capsys)


def test_a_full_disk_is_one_line_that_says_a_run_resumes(tmp_path, capsys, monkeypatch):
    import wavelens._io

    real = wavelens._io.tempfile.mkstemp

    def full(*args, **kwargs):
        if "checkpoints" in str(kwargs.get("dir", "")):
            raise OSError(errno.ENOSPC, "No space left on device", str(kwargs["dir"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(wavelens._io.tempfile, "mkstemp", full)
    assert main(["run", DEMO, "--runs-dir", str(tmp_path / "runs")]) == 1
    line = _one_error_line(capsys)
    assert "No space left on device" in line and "run the same command again" in line


def test_a_finished_stage_holds_no_leftovers_of_killed_writes(tmp_path):
    from wavelens._run import _remove_leftovers

    (tmp_path / "sub").mkdir()
    for name in (".train.npz.abc123.tmp", "sub/.model.pt.x.tmp", "kept.tmp", "model.pt"):
        (tmp_path / name).write_text("x")
    _remove_leftovers(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        "kept.tmp", "model.pt"]


def test_a_read_only_runs_folder_is_one_line(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    real = Path.mkdir

    def refuse(self, *args, **kwargs):  # what a read-only folder does (the tests may run as root)
        if "readonly" in str(self):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(["run", DEMO, "--runs-dir", str(tmp_path / "readonly")]) == 1
    line = _one_error_line(capsys)
    assert "Permission denied" in line and "choose a folder you may write to" in line
