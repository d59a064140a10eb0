"""This machine as a `Hardware` value: the one place that asks torch."""

from __future__ import annotations

from pipeline.core.hardware import Hardware

__all__ = ["detect"]


def detect() -> Hardware:
    """Describe this machine by asking torch (imports torch), and the launcher's ``WORLD_SIZE``."""
    import os

    import torch

    processes = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        ram: int | None = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
        ram = None
    if torch.cuda.is_available():
        return Hardware(
            cuda=True,
            bf16=torch.cuda.is_bf16_supported(),
            devices=torch.cuda.device_count(),
            processes=processes,
            memory=torch.cuda.get_device_properties(0).total_memory,
            name=torch.cuda.get_device_name(0),
        )
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return Hardware(
            xpu=True, bf16=True, devices=torch.xpu.device_count(), processes=processes,
            memory=torch.xpu.get_device_properties(0).total_memory, name="Intel XPU",
        )
    if torch.backends.mps.is_available():  # unified memory: the system's RAM
        return Hardware(mps=True, devices=1, processes=processes, memory=ram, name="Apple MPS")
    return Hardware(processes=processes, memory=ram)
