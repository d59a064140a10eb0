"""Host memory on CPUs: freed activations back to the system, quantized models off the checkpoint's map.

Measured in bench/MEMORY.md; each is a no-op where it does not apply.
"""

from __future__ import annotations

from typing import Any

__all__ = ["host_memory", "own_unquantized"]


LEAN, USUAL = 128 * 1024, 32 * 1024 * 1024
"""glibc's mmap threshold when memory is tight, and the ceiling its own dynamic threshold climbs to."""

_lean = False
"""Whether this process last set the lean threshold."""


def host_memory(lean: bool) -> int | None:
    """glibc: with ``lean``, allocate blocks over 128 KiB straight from the OS, so freed activations go
    back to it; without, undo that where an earlier run in this process set it. Returns the threshold
    set, ``None`` when nothing changed.

    By default glibc raises that threshold to the largest block freed so far (up to
    32 MiB), after which activations of every size land in heaps that fragment and do
    not shrink: peak RSS measured 15% (full fine-tune) to 33% (LoRA) higher on MiniLM
    (bench/MEMORY.md). The price: each large tensor is fresh pages from the kernel, so
    steps run up to 1.5x slower (bench/RESULTS.md); the plan turns it on only when
    memory is tight (`Spec.lean_memory`). The setting is process-wide: a later run that is
    not lean gets the threshold back at glibc's ceiling (setting it once ends glibc's own
    adjusting, so the ceiling is as close to the default as can be had again). A no-op where
    the C library is not glibc.
    """
    global _lean
    if lean == _lean:
        return None
    import ctypes
    import ctypes.util

    threshold = LEAN if lean else USUAL
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not libc.mallopt(-3, threshold):  # M_MMAP_THRESHOLD; 0 is failure
            return None
    except (OSError, AttributeError):
        return None
    _lean = lean
    return threshold


def own_unquantized(parts: list[Any]) -> None:
    """Copy the float tensors of a model quantized on a CPU out of the checkpoint's memory map.

    transformers leaves them as views of the mapped file, which keeps it mapped, and with
    it every page that quantizing read: the whole float checkpoint stays resident.
    """
    from itertools import chain

    for part in parts:
        for tensor in chain(part.parameters(), part.buffers()):
            if tensor.is_floating_point():
                tensor.data = tensor.data.clone()
