"""Spec files: YAML or JSON with the fields of `Spec`, data paths relative to the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.errors import SpecError
from pipeline.core.spec import LORA_DEFAULTS, QUANTIZE_DEFAULTS, Spec

__all__ = ["estimate", "load_spec", "model_config", "parse_settings", "plan", "with_settings"]

PATH_FIELDS = ("train", "validation")
"""Fields that always name a file; ``base``, ``generator``, ``teacher`` and ``checkpoint`` may be hub ids."""


def _resolve(value: Any, folder: Path, always: bool) -> Any:
    """A path relative to the spec file, made absolute: a run folder's spec and adapter then work from anywhere."""
    if not isinstance(value, str) or Path(value).is_absolute():
        return value
    candidate = folder / value
    return os.path.abspath(candidate) if always or candidate.exists() else value


def _module_beside(metrics: str, folder: Path) -> str:
    """``"module:function"`` naming a module file beside the spec file (``module.py``, or
    ``package/module.py`` for ``package.module``), or ``"file.py:function"``, as that file's absolute
    path: found without ``PYTHONPATH``, from any working folder, and from the run folder's copy of
    the spec. Other modules are imported as usual."""
    module, sep, name = metrics.rpartition(":")
    if not sep:
        return metrics
    if module.endswith(".py"):  # a file already: relative to the spec file
        return f"{os.path.abspath(folder / module)}:{name}"
    candidate = folder / (module.replace(".", "/") + ".py")
    return f"{os.path.abspath(candidate)}:{name}" if candidate.is_file() else metrics


def _yaml(text: str) -> Any:
    """YAML with YAML 1.2 floats and booleans: ``1e-3`` is a number (PyYAML's 1.1 rules make it a string),
    and only true/false are booleans (1.1 reads ``eval_strategy: no`` as False)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
        list("-+0123456789."),
    )
    return yaml.load(text, Loader=Loader)


def parse_settings(settings: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["training.learning_rate=1e-3", "lora.r=8"]`` -> ``{dotted key: YAML-parsed value}``."""
    import yaml

    parsed = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set: expected key=value, e.g. training.learning_rate=1e-3 (got {setting!r})")
        try:
            parsed[key.strip()] = _yaml(value) if value.strip() else None
        except yaml.YAMLError:
            parsed[key.strip()] = value
    return parsed


# A dotted setting inside `lora: true` or `quantize: true` starts from the seed defaults.
_SEEDED = {"lora": LORA_DEFAULTS, "quantize": QUANTIZE_DEFAULTS}


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for name in parents:
        child = node.get(name)
        if child is True and name in _SEEDED and node is data:
            child = dict(_SEEDED[name])
        elif not isinstance(child, dict):
            child = {}
        node[name] = child
        node = child
    node[leaf] = value


def with_settings(spec: Spec, settings: dict[str, Any]) -> Spec:
    """``spec`` with dotted ``settings`` applied as `load_spec` applies them (``lora.r`` on ``lora: true``
    keeps the seed's other LoRA values), validated again."""
    from pipeline.core.frozen import evolve, thaw

    data = {key.split(".")[0]: thaw(getattr(spec, key.split(".")[0])) for key in settings}
    for dotted, value in settings.items():
        _set(data, dotted, value)
    return evolve(spec, **data)


def load_spec(path: str | Path, settings: dict[str, Any] | None = None) -> Spec:
    """Read a spec file (``.yaml``/``.yml``/``.json``); relative paths are taken from its folder.

    ``settings`` (dotted keys, as from `parse_settings`) override the file's values.
    Raises `SpecError` with every problem prefixed by the file name.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec file ({e.strerror})") from None
    import yaml

    try:
        data = json.loads(text) if path.suffix == ".json" else _yaml(text)
    except (ValueError, yaml.YAMLError) as e:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise SpecError(f"{path}: not valid {kind}: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec file holds a mapping of fields (got {type(data).__name__})")
    for dotted, value in (settings or {}).items():
        _set(data, dotted, value)
    folder = path.parent
    for field in ("base", "generator", "teacher", "checkpoint", *PATH_FIELDS):
        if field in data:
            data[field] = _resolve(data[field], folder, always=field in PATH_FIELDS)
    if isinstance(data.get("metrics"), str):
        data["metrics"] = _module_beside(data["metrics"], folder)
    try:
        return Spec.model_validate(data)
    except SpecError as e:
        raise SpecError(f"{path}: {p}" for p in e.problems) from None


BASE_CONFIG = "base_config.json"
"""Beside a saved LoRA adapter: the base model's config with the run's labels and task class. Not
``config.json``: with one, transformers takes the folder for a full model and finds no weights."""


def config_file(folder: str | Path) -> Path:
    """Where a model folder's config is: ``config.json``, or beside an adapter `BASE_CONFIG` (``config.json``
    in run folders of earlier versions)."""
    folder = Path(folder).expanduser()
    beside = folder / BASE_CONFIG
    return beside if beside.is_file() else folder / "config.json"


def model_config(base: Any) -> dict[str, Any] | None:
    """The model's ``config.json`` as a dict, without loading weights or torch; ``None`` if not found.

    ``base`` is a model folder, a hub id already in the local cache, or a loaded
    ``(model, tokenizer)`` pair (its ``config``); ``None`` (no teacher) gives ``None``.
    """
    if base is None:
        return None
    if isinstance(base, tuple):
        config = getattr(base[0], "config", None)
        return config.to_dict() if hasattr(config, "to_dict") else None
    path = config_file(str(base))
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(base), "config.json")
        except (ValueError, ImportError):  # not a valid hub id
            return None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def plan(spec: Spec, hardware: Any, config: dict[str, Any] | None = None, teacher: dict[str, Any] | None = None,
         trainable: int | None = None, longest: int | None = None) -> Any:
    """`core.plan.plan` with the ``config.json`` of the base model and of the teacher read where they are not
    given: default ``maxlength`` and memory estimate included. No torch: the trainable parameters are the
    formula's unless counted (``trainable``; `pipeline.plan` and `start` count them on the model)."""
    from pipeline.core.plan import plan as derive

    return derive(spec, hardware, config if config is not None else model_config(spec.base),
                  teacher if teacher is not None else model_config(spec.teacher), trainable, longest)


def estimate(spec: Spec, hardware: Any, config: dict[str, Any] | None = None) -> Any:
    """The estimated peak memory of ``spec`` on ``hardware``, by part (see `pipeline.core.memory`).

    ``config``: the base model's ``config.json`` as a dict; read from ``spec.base`` when
    not given (the files this reads, with the teacher's). Raises `SpecError` when there is no config.
    """
    if config is None:
        config = model_config(spec.base)
    if config is None:
        raise SpecError(f"base: no config.json found for {spec.base!r}; give the model's config as a dict")
    result = plan(spec, hardware, config)
    if result.memory is None:
        raise SpecError(f"base: cannot estimate memory ({'; '.join(result.notes) or 'no maxlength'})")
    return result.memory
