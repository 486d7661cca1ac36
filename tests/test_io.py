"""Atomic writes and checkpoints."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from wavelens import CheckpointManager, atomic_write, read_json, write_json


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


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mknod, (str(self.marker),))


def test_a_crafted_checkpoint_is_not_executed_and_the_one_before_is_used(tmp_path, caplog):
    manager = CheckpointManager(tmp_path, keep=5)
    manager.save(1, {"value": torch.tensor(1)})
    marker = tmp_path / "pwned"
    torch.save({"value": _Payload(marker)}, manager.path(2))
    step, state = manager.latest()
    assert step == 1 and int(state["value"]) == 1
    assert not marker.exists()
    assert (tmp_path / "ckpt-000000002.pt.unreadable").is_file()
    assert "ckpt-000000002.pt cannot be read" in caplog.text and "trying the one before it" in caplog.text


def test_a_truncated_newest_checkpoint_falls_back_with_a_message(tmp_path, caplog):
    manager = CheckpointManager(tmp_path, keep=5)
    for step in (3, 6):
        manager.save(step, {"value": torch.arange(1000) * step})
    newest = manager.path(6)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    step, state = manager.latest()
    assert step == 3 and int(state["value"][1]) == 3
    assert "ckpt-000000006.pt cannot be read" in caplog.text
    assert manager.steps() == [3]  # the damaged file is set aside, not deleted
    manager.path(3).write_bytes(b"")
    assert manager.latest() is None  # nothing readable left: training starts over
