"""Host memory on CPUs: freed activations back to the system, quantized models off the checkpoint's map.

Measured in bench/MEMORY.md; each is a no-op where it does not apply.
"""

from __future__ import annotations

from typing import Any

__all__ = ["own_unquantized", "return_freed_memory"]


def return_freed_memory() -> None:
    """glibc: allocate blocks over 128 KiB straight from the OS, so freed activations go back to it.

    By default glibc raises that threshold to the largest block freed so far (up to
    32 MiB), after which activations of every size land in heaps that fragment and do
    not shrink: peak RSS measured 15% (full fine-tune) to 33% (LoRA) higher on MiniLM
    (bench/MEMORY.md). The price: each large tensor is fresh pages from the kernel, so
    steps run up to 1.5x slower (bench/RESULTS.md); the plan turns it on only when
    memory is tight (`Spec.lean_memory`). Process-wide and for the rest of the process;
    a no-op where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


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
