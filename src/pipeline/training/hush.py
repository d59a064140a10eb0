"""Library messages a user cannot act on, hidden while our stages load and adapt models.

- transformers' LOAD REPORT: a task head we create is "MISSING" from the checkpoint by design.
- bitsandbytes' "Failed to load CPU gemm_4bit_forward ... pip install kernels": an optional
  kernel, said on import even when nothing is quantized; and where `kernels` is installed (transformers
  5.25 requires it), its "Skipping publisher trust check ... offline mode" for that kernel, on the same import.
- transformers 5's "... is deprecated and will be removed in v6" FutureWarnings for the names
  peft still calls (``gradient_checkpointing_enable``, ``is_gradient_checkpointing``).
- transformers' "Loading weights" and "Writing model shards" bars: a blink on small models, and
  on a big one the load is the wait before training's own bar.

Scoped (`hushed` as a context manager or decorator): the same messages about your own loads,
outside our calls, are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


def _not_a_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in record.getMessage()


@contextlib.contextmanager
def hushed() -> Iterator[None]:
    from transformers.utils import logging as transformers_logging

    report = logging.getLogger("transformers.modeling_utils")
    kernel_notices = [logging.getLogger(name) for name in ("bitsandbytes", "kernels")]
    levels, bars = [log.level for log in kernel_notices], transformers_logging.is_progress_bar_enabled()
    outermost = _not_a_load_report not in report.filters  # nested (merged inside load): the outer one removes it
    report.addFilter(_not_a_load_report)
    for log in kernel_notices:
        log.setLevel(logging.ERROR)
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".* is deprecated and will be removed in v6", category=FutureWarning)
            yield
    finally:
        if outermost:
            report.removeFilter(_not_a_load_report)
        for log, level in zip(kernel_notices, levels):
            log.setLevel(level)
        if bars:
            transformers_logging.enable_progress_bar()
