"""The plan as the shell makes it: the pure plan, with what only the model and the data can say.

**Trainable parameters**, counted on the model itself before anything loads. The memory estimate's formula
knows blocks and adapted linears; what else trains (a pooler LoRA adapts, a head peft trains in full, the
label count, a second model) is the architecture's. So the shell builds
the class the run loads from its ``config.json`` on the meta device (no weights read, no memory taken),
wraps it with the plan's LoRA config as `adapt` does, and counts: the plan's number is the run's.

**What the data trains on**, for tasks that say (`Task.summary`; chat: conversations, trained tokens and
their share, answers cut by maxlength, end-of-turn markers trained): tokenized with the model's tokenizer,
as training will; its problems (rows with no trained token) are refused here, before anything loads.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.core.frozen import thaw
from pipeline.core.hardware import Hardware
from pipeline.core.plan import Plan, lora_kwargs
from pipeline.core.spec import Spec
from pipeline.tasks import TASKS
from pipeline.training.hush import hushed

log = logging.getLogger(__name__)


def trainable(spec: Spec) -> int | None:
    """Trainable parameters of the model ``spec`` trains, all its models together, or ``None`` where they
    cannot be counted before loading (a model passed in, no readable config, data whose labels do not read:
    preflight reports those)."""
    from pipeline.io.files import model_config

    if not isinstance(spec.base, str) or model_config(spec.base) is None:  # nothing to build it from: no torch
        return None
    return _counted(spec)


@hushed()  # importing peft: bitsandbytes' optional-kernel line
def _counted(spec: Spec) -> int | None:
    import torch
    import transformers

    from pipeline.training.stages import _count, _each, library

    try:
        labels = _labels(spec)
        kwargs = labels.config() if labels else {}

        def skeleton(model_class: Any, name: str, kwargs: dict[str, Any]) -> Any:
            config = transformers.AutoConfig.from_pretrained(name, **kwargs)
            with torch.device("meta"):
                return model_class.from_config(config)

        task = TASKS[spec.task]
        if task.sentences:  # what trains is the transformer inside (pooling and normalization have no weights)
            model = skeleton(getattr(library(), task.sentences.backbone), spec.base, {**kwargs, **task.sentences.options})
        elif task.load:
            model = task.load(skeleton, library(), spec, kwargs)
        else:
            model = skeleton(getattr(library(), task.model_class), spec.base, kwargs)
        lora = lora_kwargs(spec)[0]
        if lora:
            from peft import LoraConfig, get_peft_model

            model = _each(model, lambda part: get_peft_model(part, LoraConfig(**thaw(lora))))
        return _count(model).trainable
    except Exception as e:  # no config, an unknown architecture, unreadable data: preflight says which, later
        log.debug("parameters not counted before loading: %s", e)
        return None


def _splits(spec: Spec) -> dict[str, Any] | None:
    """The spec's train and validation data, read; ``None`` where it cannot be read or has problems (preflight
    names them when the run loads)."""
    from pipeline.errors import DataError
    from pipeline.io import data

    try:
        read = {field: data.read(getattr(spec, field), field) for field in ("train", "validation")
                if getattr(spec, field) is not None}
    except DataError:
        return None
    return None if any(data.problems(dataset, spec, field) for field, dataset in read.items()) else read


def _labels(spec: Spec) -> Any:
    """The labels the run will read from the data (the head's size), for tasks that have them."""
    if TASKS[spec.task].read_labels is None:
        return None
    from pipeline.io import data

    read = _splits(spec)
    return data.labels(read, spec) if read else None


def data_summary(spec: Spec, plan: Plan) -> tuple[tuple[str, ...], int] | None:
    """`Task.summary` of each split, tokenized as training will, and the longest training example in tokens
    (``None`` for tasks without one, or where the data or the tokenizer cannot be read yet: preflight reports
    those). `DataError` for its problems."""
    task = TASKS[spec.task]
    if task.summary is None or not isinstance(spec.base, str):
        return None
    from pipeline.errors import DataError
    from pipeline.io import data
    from pipeline.training.stages import maxlength

    read = _splits(spec)
    loaded = _tokenizer(spec.base) if read else None
    if loaded is None:
        return None
    tokenizer, config = loaded
    length = maxlength(spec.maxlength, plan.maxlength, tokenizer, [config])
    lines, problems, longest = [], [], 0
    for field, dataset in read.items():
        encoded = data.encode(dataset, spec, tokenizer, length)
        notes, found = task.summary(encoded, field)
        lines += notes
        problems += found
        if field == "train" and "input_ids" in encoded.column_names:  # tokenized here (not by a later collator)
            longest = max((len(ids) for ids in encoded["input_ids"]), default=0)
    if problems:
        raise DataError(problems)
    return tuple(lines), longest


@hushed()
def _tokenizer(base: str) -> tuple[Any, Any] | None:
    """The model's tokenizer and config (what bounds its length), or ``None`` where they do not load."""
    try:
        from transformers import AutoConfig, AutoTokenizer

        return AutoTokenizer.from_pretrained(base), AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as e:
        log.debug("data not summarized before loading: %s", e)
        return None


def plan(spec: Spec, hardware: Hardware, config: dict[str, Any] | None = None,
         teacher: dict[str, Any] | None = None) -> Plan:
    """The plan `start` runs with: `pipeline.io.files.plan`, with the trainable parameters counted on the
    model and what the data trains on (`data_summary`), when ``config`` is not given (a config passed in
    stands for a model that may not exist)."""
    from pipeline.io.files import plan as planned

    if config is not None:
        return planned(spec, hardware, config, teacher)
    counted = trainable(spec)
    made = planned(spec, hardware, None, teacher, counted)
    summary = data_summary(spec, made)
    if summary is None:
        return made
    lines, longest = summary
    return planned(spec, hardware, None, teacher, counted, longest or None).model_copy(update={"data": lines})
