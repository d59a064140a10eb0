"""The errors `pipeline` raises, one tree.

    PipelineError
    ├── SpecError(ValueError)       a spec, or a plan of it, asks for something invalid
    │   └── HardwareError           an explicit request the hardware cannot meet
    └── DataError(ValueError)       training data that cannot be used as given

Every error carries all the problems found at once in ``problems``: one line each, in
the form ``field.path: message``, where the message names the value it got, what was
expected and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DataError", "HardwareError", "PipelineError", "SpecError"]


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
