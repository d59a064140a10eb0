"""Everything that can be checked before a model loads, checked before it loads.

All problems are reported together, so one run finds them all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pipeline.io import data
from pipeline.core.fields import TRAINING_ARGUMENTS
from pipeline.core.plan import Plan
from pipeline.errors import DataError, SpecError
from pipeline.io.files import config_file
from pipeline.core.spec import Spec
from pipeline.tasks import TASKS

__all__ = ["preflight"]

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def preflight(spec: Spec, plan: Plan | None = None, arguments: Any = None) -> tuple[Any, Any, data.Labels | None]:
    """Read and check the data and the model's whereabouts; returns (train, validation, labels).

    With the ``plan``, also the output folder (a folder, writable, with room for what is saved),
    and with ``arguments`` (the `TrainingArguments` class the stages train with, given by them:
    building it imports torch) the training arguments as transformers builds them on this machine.
    Raises `DataError` (or `SpecError` when the data is fine) listing every problem found.
    """
    data_problems: list[str] = []
    read: dict[str, Any] = {}
    for field in ("train", "validation"):
        source = getattr(spec, field)
        if source is None:
            continue
        try:
            dataset = data.read(source, field)
        except DataError as e:
            data_problems += e.problems
            continue
        found = data.problems(dataset, spec, field)
        data_problems += found
        read[field] = None if found else dataset

    labels = None
    if read and all(v is not None for v in read.values()):
        try:
            labels = data.labels(read, spec)
        except DataError as e:
            data_problems += e.problems

    spec_problems = _model_problems(spec) + _metrics_problems(spec)
    if spec.teacher is not None and not spec_problems:
        spec_problems += _teacher_problems(spec, labels)
    if plan is not None:
        spec_problems += _arguments_problems(plan, arguments) + _output_problems(plan) + _loaded_problems(spec, plan, labels)
    if isinstance(spec.checkpoint, str) and not Path(spec.checkpoint).is_dir():
        spec_problems.append(
            f"checkpoint: no such checkpoint folder {spec.checkpoint!r}; "
            "use checkpoint: true to resume from the latest one in training.output_dir"
        )
    if data_problems:
        raise DataError(data_problems + spec_problems)
    if spec_problems:
        raise SpecError(spec_problems)
    return read.get("train"), read.get("validation"), labels


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _model_config(field: str, name: str, problems: list[str]) -> Any:
    """The model's config (no weights), or None with the problem recorded."""
    path = Path(name).expanduser()
    if path.exists():
        found = config_file(path)
        if not found.is_file():
            problems.append(f"{field}: {name!r} has no config.json; give a folder saved with save_pretrained")
            return None
        name = str(found)
    elif not HUB_ID.fullmatch(name):
        problems.append(f"{field}: no such model folder {name!r}; check the path (spec files: relative to the file)")
        return None
    elif _offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            problems.append(
                f"{field}: {name!r} is a hub id, but HF_HUB_OFFLINE is set and it is not in the local cache; "
                "give a local model folder, or download it first with network access"
            )
            return None
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        problems.append(f"{field}: cannot load a model config from {name!r} ({str(e).splitlines()[0]})")
        return None


def _model_problems(spec: Spec) -> list[str]:
    problems: list[str] = []
    if isinstance(spec.base, tuple):
        configs = [getattr(spec.base[0], "config", None)]
    else:
        configs = [_model_config("base", spec.base, problems)]
        if "generator" in TASKS[spec.task].fields and spec.generator:
            configs.append(_model_config("generator", spec.generator, problems))
    for config in filter(None, configs):
        limit = positions(config)
        if spec.maxlength and limit and spec.maxlength > limit:
            problems.append(
                f"maxlength: {spec.maxlength} is beyond the model's {limit} positions; use maxlength: {limit} or less"
            )
            break
    if spec.zero:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            problems.append(f"zero: {spec.zero} trains with DeepSpeed, which is not installed; "
                            "pip install -e '.[scale]' (or pip install deepspeed)")
    return problems


def _teacher_problems(spec: Spec, labels: data.Labels | None) -> list[str]:
    """The teacher must exist, output what the student learns (as many labels) and read the same token ids."""
    from transformers import AutoTokenizer

    from pipeline.io.runs import is_adapter

    problems: list[str] = []
    if isinstance(spec.teacher, tuple):
        config, tokenizer = spec.teacher[0].config, spec.teacher[1]
    else:
        config = _model_config("teacher", spec.teacher, problems)
        if config is None:
            return problems
        if is_adapter(spec.teacher) and not (Path(spec.teacher) / "tokenizer_config.json").is_file():
            return [f"teacher: {spec.teacher!r} is an adapter without its tokenizer; give a pipeline run folder"]
        if TASKS[spec.task].sentences is not None:  # it reads the texts with its own tokenizer
            return problems
        tokenizer = AutoTokenizer.from_pretrained(spec.teacher)
    have = getattr(config, "num_labels", None)
    if labels is not None and have != labels.num_labels:
        problems.append(
            f"teacher: it has {have} labels and the data {labels.num_labels}; distill from a teacher trained on "
            "the same labels"
        )
    student = spec.base[1] if isinstance(spec.base, tuple) else AutoTokenizer.from_pretrained(spec.base)
    theirs, ours = tokenizer.get_vocab(), student.get_vocab()
    if theirs != ours:
        differs = next((t for t in sorted(ours) if theirs.get(t) != ours[t]), None) or next(iter(theirs.keys() - ours.keys()))
        problems.append(
            f"teacher: its vocabulary differs from the student's ({len(theirs):,} vs {len(ours):,} tokens; "
            f"{differs!r} is {theirs.get(differs)} for the teacher and {ours.get(differs)} for the student). The "
            "teacher reads the student's token ids, so both need one tokenizer: use a teacher of the same family"
        )
    return problems


def positions(config: Any) -> int | None:
    """How many token positions a model config allows, where it says."""
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return limit if isinstance(limit, int) else None


def metrics_function(metrics: Any) -> Any:
    """The ``compute_metrics`` callable, imported when given as ``"module:name"`` or ``"path/file.py:name"``
    (spec files give a module beside them as its file: `files.load_spec`)."""
    if not isinstance(metrics, str):
        return metrics
    import importlib
    import importlib.util

    module, _, name = metrics.rpartition(":")
    try:
        if module.endswith(".py"):
            found = importlib.util.spec_from_file_location(Path(module).stem, module)
            if found is None or not Path(module).is_file():
                raise ImportError(f"no file {module}")
            loaded = importlib.util.module_from_spec(found)
            found.loader.exec_module(loaded)
        else:
            loaded = importlib.import_module(module)
        return getattr(loaded, name)
    except (ImportError, AttributeError, ValueError) as e:
        raise SpecError(f"metrics: cannot import {metrics!r} ({e}); give it as 'module:function'") from None


def _metrics_problems(spec: Spec) -> list[str]:
    try:
        metrics_function(spec.metrics)
    except SpecError as e:
        return list(e.problems)
    return []


def _arguments_problems(plan: Plan, Arguments: Any) -> list[str]:  # noqa: N803  (a class)
    """What transformers itself refuses in the training arguments, named by field."""
    from pipeline.core.frozen import thaw

    if Arguments is None:
        return []
    try:
        Arguments(**thaw(plan.training_args))
    except Exception as e:  # noqa: BLE001 - any refusal of a config object is a bad value we report
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        named = sorted((n for n in TRAINING_ARGUMENTS if n in message), key=lambda n: (message.index(n), -len(n)))
        where = f"training.{named[0]}" if named else "training"
        return [f"{where}: transformers refuses these training arguments: {message}"]
    return []


def _output_problems(plan: Plan) -> list[str]:
    """The output folder: not a file, writable, and with room for the model (from the memory estimate)."""
    import shutil

    output = plan.training_args.get("output_dir")
    if not output:
        return []
    path = Path(output).expanduser()
    if path.exists() and not path.is_dir():
        return [f"training.output_dir: {output!r} is a file, not a folder; choose another output"]
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"training.output_dir: cannot write in {str(existing)!r} (permission denied); choose another output"]
    memory = plan.memory
    if memory is None:
        return []
    model = memory.parts["adapters"] if plan.lora else memory.parts["weights"]
    saved = model
    if plan.training_args.get("save_strategy", "no") != "no":
        saved += model + memory.parts["optimizer"]  # at least one checkpoint: the model and the optimizer state
    free = shutil.disk_usage(existing).free
    if saved > free:
        return [
            f"training.output_dir: {str(existing)!r} has {free / 2**30:.1f} GiB free, and this run saves about "
            f"{saved / 2**30:.1f} GiB; free some space or choose another output"
        ]
    return []


def _loaded_problems(spec: Spec, plan: Plan, labels: data.Labels | None) -> list[str]:
    """A loaded ``(model, tokenizer)`` base is used as it is: what the plan would change must already hold."""
    if not isinstance(spec.base, tuple):
        return []
    model = spec.base[0]
    problems = []
    quantized = any(getattr(model, f"is_loaded_in_{bits}bit", False) for bits in (4, 8))
    if plan.quantization and not quantized:
        problems.append(
            "quantize: the loaded base model is not quantized, and pipeline quantizes only while loading from a "
            "folder; give the model's folder as base (save_pretrained it first), or load it in 4-bit yourself"
        )
    have = getattr(model.config, "num_labels", None)
    if labels is not None and have is not None and have != labels.num_labels:
        problems.append(
            f"base: the loaded model has {have} labels and the data {labels.num_labels}; load it with "
            f"num_labels={labels.num_labels} (and id2label), or give its folder as base"
        )
    return problems
