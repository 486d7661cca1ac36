"""Device placement and numeric precision: the one place that decides them.

A spec says ``device: auto | cpu | cuda | cuda:N`` and ``precision: fp32 | bf16 |
fp16``. :func:`resolve_placement` turns that into a :class:`Placement`, which every
stage and plugin asks for the device to use and for the autocast context to run
forward passes in. Plugins never call ``torch.cuda.is_available()`` themselves.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch loads when a placement is made
    import torch

from ._errors import DeviceError

__all__ = ["Placement", "Precision", "resolve_placement", "DEVICE_PATTERN"]

Precision = Literal["fp32", "bf16", "fp16"]
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:\d+)$"

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Placement:
    """Where tensors live and in which precision forward passes run.

    ``requested`` keeps what the spec asked for; ``precision`` is what is actually
    used (mixed precision is applied on CUDA only, so it is ``fp32`` on the CPU).
    """

    device: torch.device
    precision: Precision
    requested_device: str
    requested_precision: Precision

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype autocast runs in, or None when autocast is off."""
        import torch

        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        return dtypes[self.precision]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for forward passes: autocast on CUDA in bf16/fp16, else a no-op."""
        import torch

        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only where it is needed (fp16 on CUDA)."""
        import torch

        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def describe(self) -> dict[str, object]:
        """Facts about the device for the run record."""
        import torch

        info: dict[str, object] = {
            "device": str(self.device),
            "requested_device": self.requested_device,
            "precision": self.precision,
            "requested_precision": self.requested_precision,
            "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available(),
        }
        if self.is_cuda:
            index = self.device.index if self.device.index is not None else 0
            props = torch.cuda.get_device_properties(index)
            info.update(
                gpu_name=props.name,
                gpu_memory_gib=round(props.total_memory / 2**30, 1),
                cuda_version=torch.version.cuda,
            )
        return info


def _cuda_unavailable_reason() -> str:
    import torch

    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    return (
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but sees no "
        "GPU (no driver, no device, or CUDA_VISIBLE_DEVICES hides them)"
    )


def resolve_placement(device: str = "auto", precision: Precision = "fp32") -> Placement:
    """Turn a spec's ``device`` and ``precision`` into a :class:`Placement`.

    ``auto`` picks ``cuda`` (device 0) when available and the CPU otherwise. An
    explicit ``cuda`` or ``cuda:N`` that cannot be satisfied raises
    :class:`~wavelens.DeviceError`; it never falls back silently.
    """
    if not re.match(DEVICE_PATTERN, device):
        raise DeviceError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
    if precision not in PRECISIONS:
        raise DeviceError(f"precision {precision!r} is not one of fp32, bf16, fp16")
    import torch

    if device == "auto":
        chosen = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    elif device == "cpu":
        chosen = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device: {device} was requested, but CUDA is not available: "
                f"{_cuda_unavailable_reason()}. Use device: auto to fall back to the "
                "CPU, or device: cpu."
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(
                f"device: {device} was requested, but only {count} CUDA device(s) are "
                f"visible (cuda:0 to cuda:{count - 1})."
            )
        chosen = torch.device(f"cuda:{index}")

    effective: Precision = precision
    if chosen.type == "cpu":
        effective = "fp32"
    elif precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise DeviceError(
            f"precision: bf16 was requested, but {torch.cuda.get_device_name(chosen)} does "
            "not support bfloat16; use fp16 or fp32."
        )
    return Placement(chosen, effective, device, precision)

