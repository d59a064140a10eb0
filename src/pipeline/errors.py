"""The errors `pipeline` raises, one tree.

    PipelineError
    ├── SpecError(ValueError)       a spec, or a plan of it, asks for something invalid
    │   └── HardwareError           an explicit request the hardware cannot meet
    ├── DataError(ValueError)       training data that cannot be used as given
    └── Interrupted                 training stopped by SIGINT / SIGTERM (resumable when checkpointed)

Every error carries all the problems found at once in ``problems``: one line each, in
the form ``field.path: message``, where the message names the value it got, what was
expected and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DataError", "HardwareError", "Interrupted", "PipelineError", "SpecError"]


class PipelineError(Exception):
    """Base of every error `pipeline` raises on purpose."""

    def __init__(self, problems: str | Iterable[str]):
        self.problems: tuple[str, ...] = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__(self._message())

    def _message(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"{len(self.problems)} problems:\n{lines}"


class SpecError(PipelineError, ValueError):
    """A spec, or a plan of it, asks for something invalid."""


class HardwareError(SpecError):
    """An explicit request the hardware cannot meet (e.g. ``bf16`` on a CPU)."""


class DataError(PipelineError, ValueError):
    """Training or validation data that cannot be used as given."""


class Interrupted(PipelineError):
    """Training stopped by a signal (Ctrl-C, SIGTERM) at a step boundary.

    ``signal`` is the signal's number; ``checkpoint`` the folder saved on the way out
    (``None`` without an ``output_dir``): resume with ``checkpoint: true``.
    """

    def __init__(self, signal: int, step: int, checkpoint: str | None):
        self.signal, self.step, self.checkpoint = signal, step, checkpoint
        import signal as signals

        name = signals.Signals(signal).name
        if checkpoint:
            how = f"saved {checkpoint}; resume with checkpoint: true and the same output_dir"
        else:
            how = "nothing was saved (no output_dir); set training.output_dir to make runs resumable"
        super().__init__(f"training stopped by {name} after step {step}: {how}")
