"""Atomic writes and checkpoints."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from framework import CheckpointManager, atomic_write, write_json
from framework.io import read_json


def test_atomic_write_replaces_the_file_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_write(target) as handle:
        handle.write("new")
        assert target.read_text() == "old"  # not visible until the block ends
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_keeps_the_old_file_on_keyboard_interrupt(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as handle:
        handle.write("{")
        raise KeyboardInterrupt
    assert read_json(target) == {"a": 1}


def test_checkpoints_keep_the_last_k_and_return_the_latest(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", keep=2)
    assert manager.latest() is None
    for step in (1, 2, 10, 11):
        manager.save(step, {"value": torch.tensor(step)})
    assert manager.steps() == [10, 11]
    step, state = manager.latest()
    assert step == 11 and int(state["value"]) == 11


def test_checkpoint_files_sort_by_step(tmp_path):
    manager = CheckpointManager(tmp_path, keep=5)
    manager.save(9, {})
    manager.save(100, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000000009.pt", "ckpt-000000100.pt"]


def test_atomic_write_gives_files_the_mode_open_would(tmp_path):
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    write_json(tmp_path / "atomic.json", {})
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic.json").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
