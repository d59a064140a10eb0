"""The machine a run targets, as a value (`train.detect.detect()` asks torch what this one is)."""

from __future__ import annotations

from pydantic import Field, model_validator

from pipeline.core.frozen import Frozen
from pipeline.errors import SpecError

__all__ = ["PROFILES", "Hardware", "profile"]


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
    memory: int | None = Field(None, ge=0)
    """Bytes of memory: one accelerator's (GPU memory), or the system's RAM on a CPU; ``None``: unknown."""
    name: str = "cpu"

    @property
    def available(self) -> int | None:
        """Bytes one training process may use: a device's memory, or its share of the RAM on a CPU."""
        if self.memory is None:
            return None
        return self.memory if self.accelerator else self.memory // self.processes

    @property
    def accelerator(self) -> bool:
        """True when any accelerator (CUDA, MPS, XPU) is present."""
        return self.cuda or self.mps or self.xpu

    @model_validator(mode="after")
    def _bf16_needs_an_accelerator(self) -> Hardware:
        if self.bf16 and not self.accelerator:
            raise ValueError("bf16 describes an accelerator; set cuda, mps or xpu too (got a CPU)")
        return self


GiB = 2**30

PROFILES: dict[str, Hardware] = {
    "cpu": Hardware(),
    "cuda": Hardware(cuda=True, devices=1, name="CUDA GPU before Ampere (no bf16)"),
    "cuda-bf16": Hardware(cuda=True, bf16=True, devices=1, name="CUDA GPU, Ampere or newer"),
    "mps": Hardware(mps=True, devices=1, name="Apple MPS"),
    "xpu": Hardware(xpu=True, bf16=True, devices=1, name="Intel XPU"),
    "t4-16gb": Hardware(cuda=True, devices=1, memory=15 * GiB, name="NVIDIA T4 16 GB (no bf16)"),
    "rtx4090-24gb": Hardware(cuda=True, bf16=True, devices=1, memory=24 * GiB, name="24 GB card (RTX 3090/4090)"),
    "a100-40gb": Hardware(cuda=True, bf16=True, devices=1, memory=40 * GiB, name="NVIDIA A100 40 GB"),
    "a100-80gb": Hardware(cuda=True, bf16=True, devices=1, memory=80 * GiB, name="NVIDIA A100 80 GB"),
    "h100-80gb": Hardware(cuda=True, bf16=True, devices=1, memory=80 * GiB, name="NVIDIA H100 80 GB"),
}
"""Named machines for planning elsewhere than here: ``pipeline plan --hardware h100-80gb``.

The bare kinds (``cpu``, ``cuda``, ...) leave the memory unknown; the cards carry theirs.
"""


def profile(name: str) -> Hardware:
    """The named hardware profile; raises `SpecError` naming the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise SpecError(f"hardware: unknown profile {name!r}; use one of {', '.join(PROFILES)}") from None
