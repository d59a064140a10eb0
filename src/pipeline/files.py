"""Spec files: YAML or JSON with the fields of `Spec`, data paths relative to the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import SpecError
from .specs import Spec

__all__ = ["load_spec"]

PATH_FIELDS = ("train", "validation")
"""Fields that always name a file; ``base``, ``generator`` and ``checkpoint`` may be hub ids."""


def _resolve(value: Any, folder: Path, always: bool) -> Any:
    if not isinstance(value, str) or Path(value).is_absolute():
        return value
    candidate = folder / value
    return str(candidate) if always or candidate.exists() else value


def load_spec(path: str | Path) -> Spec:
    """Read a spec file (``.yaml``/``.yml``/``.json``); relative paths are taken from its folder.

    Raises `SpecError` with every problem prefixed by the file name.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec file ({e.strerror})") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as e:  # json.JSONDecodeError and yaml.YAMLError's parse errors
        raise SpecError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'YAML'}: {e}") from None
    except Exception as e:  # yaml.YAMLError does not subclass ValueError
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec file holds a mapping of fields (got {type(data).__name__})")
    folder = path.parent
    for field in ("base", "generator", "checkpoint", *PATH_FIELDS):
        if field in data:
            data[field] = _resolve(data[field], folder, always=field in PATH_FIELDS)
    try:
        return Spec.model_validate(data)
    except SpecError as e:
        raise SpecError(f"{path}: {p}" for p in e.problems) from None
