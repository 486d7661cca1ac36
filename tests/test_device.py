"""Device and precision resolution."""

from __future__ import annotations

import pytest
import torch

from wavelens import DeviceError, resolve_placement
from wavelens.cli import main
from wavelens.host import Run, load_spec


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_falls_back_to_cpu_without_cuda(no_cuda):
    placement = resolve_placement("auto", "bf16")
    assert placement.device == torch.device("cpu")
    assert placement.precision == "fp32"  # mixed precision is applied on CUDA only
    assert placement.requested_precision == "bf16"
    assert placement.autocast_dtype is None


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_explicit_cuda_without_cuda_fails_clearly(no_cuda, device):
    with pytest.raises(DeviceError) as caught:
        resolve_placement(device)
    message = str(caught.value)
    assert f"device: {device} was requested, but CUDA is not available" in message
    assert "device: auto" in message


def test_cuda_index_beyond_the_visible_devices_fails(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"only 1 CUDA device\(s\) are visible"):
        resolve_placement("cuda:3")


def test_malformed_device_is_refused():
    with pytest.raises(DeviceError, match="not one of auto, cpu, cuda, cuda:N"):
        resolve_placement("gpu")


def test_run_with_cuda_on_a_cpu_machine_fails_before_writing(no_cuda, recorder_spec, tmp_path):
    spec = recorder_spec().read_text().replace("device: cpu", "device: cuda")
    path = tmp_path / "cuda.yaml"
    path.write_text(spec)
    with pytest.raises(DeviceError):
        Run(load_spec(path))
    assert not (tmp_path / "runs").exists()


def test_cli_run_with_cuda_on_a_cpu_machine_exits_2(no_cuda, recorder_spec, tmp_path, capsys):
    path = tmp_path / "cuda.yaml"
    path.write_text(recorder_spec().read_text().replace("device: cpu", "device: cuda"))
    assert main(["run", str(path)]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_auto_spec_runs_on_cpu(no_cuda, recorder_spec, tmp_path):
    path = tmp_path / "auto.yaml"
    path.write_text(recorder_spec().read_text().replace("device: cpu", "device: auto"))
    run = Run(load_spec(path))
    assert run.placement.device == torch.device("cpu")
    run.execute()


def test_cpu_autocast_is_a_no_op():
    placement = resolve_placement("cpu", "fp16")
    with placement.autocast():
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32
    assert not placement.grad_scaler().is_enabled()


@pytest.mark.cuda
def test_cuda_placement_uses_bf16_autocast():
    placement = resolve_placement("cuda", "bf16")
    assert placement.is_cuda and placement.precision == "bf16"
    with placement.autocast():
        out = torch.ones(4, 4, device=placement.device) @ torch.ones(4, 4, device=placement.device)
    assert out.dtype == torch.bfloat16
    assert placement.describe()["gpu_name"]
