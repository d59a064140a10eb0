"""The machine a run targets, as a value; `detect()` is the one place that asks torch."""

from __future__ import annotations

from pydantic import Field, model_validator

from ._frozen import Frozen
from .errors import SpecError

__all__ = ["PROFILES", "Hardware", "detect"]


class Hardware(Frozen):
    """A machine: ``Hardware()`` is a CPU; ``Hardware(cuda=True, bf16=True)`` a modern GPU."""

    cuda: bool = False
    mps: bool = False
    xpu: bool = False
    bf16: bool = False
    """The accelerator trains in bfloat16 mixed precision (CUDA Ampere or newer, XPU)."""
    devices: int = Field(0, ge=0)
    """Number of accelerator devices (0 on a CPU)."""
    processes: int = Field(1, ge=1)
    """Training processes in all (``WORLD_SIZE`` under torchrun / accelerate launch)."""
    name: str = "cpu"

    @property
    def accelerator(self) -> bool:
        """True when any accelerator (CUDA, MPS, XPU) is present."""
        return self.cuda or self.mps or self.xpu

    @model_validator(mode="after")
    def _bf16_needs_an_accelerator(self) -> Hardware:
        if self.bf16 and not self.accelerator:
            raise ValueError("bf16 describes an accelerator; set cuda, mps or xpu too (got a CPU)")
        return self


PROFILES: dict[str, Hardware] = {
    "cpu": Hardware(),
    "cuda": Hardware(cuda=True, devices=1, name="CUDA GPU before Ampere (no bf16)"),
    "cuda-bf16": Hardware(cuda=True, bf16=True, devices=1, name="CUDA GPU, Ampere or newer"),
    "mps": Hardware(mps=True, devices=1, name="Apple MPS"),
    "xpu": Hardware(xpu=True, bf16=True, devices=1, name="Intel XPU"),
}
"""Named machines for planning elsewhere than here: ``pipeline plan --hardware cuda-bf16``."""


def profile(name: str) -> Hardware:
    """The named hardware profile; raises `SpecError` naming the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise SpecError(f"hardware: unknown profile {name!r}; use one of {', '.join(PROFILES)}") from None


def detect() -> Hardware:
    """Describe this machine by asking torch (imports torch), and the launcher's ``WORLD_SIZE``."""
    import os

    import torch

    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        return Hardware(
            cuda=True,
            bf16=torch.cuda.is_bf16_supported(),
            devices=torch.cuda.device_count(),
            processes=processes,
            name=torch.cuda.get_device_name(0),
        )
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return Hardware(xpu=True, bf16=True, devices=torch.xpu.device_count(), processes=processes, name="Intel XPU")
    if torch.backends.mps.is_available():
        return Hardware(mps=True, devices=1, processes=processes, name="Apple MPS")
    return Hardware(processes=processes)
