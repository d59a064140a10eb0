"""Pure derivation: (spec, hardware) -> library kwargs, each value with where it came from.

Nothing here imports torch, transformers, peft or bitsandbytes, or touches the disk:
the stages build the library objects from these plain dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ._frozen import Frozen, FrozenDict, FrozenMapping
from .errors import HardwareError, SpecError
from .hardware import Hardware
from .specs import LORA_DEFAULTS, QUANTIZE_DEFAULTS, TRAINING_DEFAULTS, Spec
from .tasks import TASKS

__all__ = ["Origin", "Plan", "lora_kwargs", "plan", "quantization_kwargs", "training_kwargs"]

Source = Literal["seed", "user", "task", "hardware", "pipeline"]


class Origin(Frozen):
    """Where a derived value came from: its source and why."""

    source: Source
    reason: str


Layer = tuple[Source, str, Mapping[str, Any]]
Derived = tuple[dict[str, Any], dict[str, Origin]]


def _layered(*layers: Layer) -> Derived:
    """Merge layers left to right (later wins), remembering which layer set each key."""
    kwargs: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for source, reason, values in layers:
        for key, value in values.items():
            kwargs[key] = value
            origins[key] = Origin(source=source, reason=reason)
    return kwargs, origins


def training_kwargs(spec: Spec, hardware: Hardware) -> Derived:
    """`TrainingArguments` kwargs: seed defaults, hardware and task rules, then the user's.

    Raises `HardwareError` for precision the hardware cannot run (``bf16``/``fp16``) and
    `SpecError` for saving asked for without an ``output_dir``.
    """
    rule = TASKS[spec.task]
    device = "an accelerator is present" if hardware.accelerator else "no CUDA, MPS or XPU on this machine"
    layers: list[Layer] = [
        ("seed", "seed default", TRAINING_DEFAULTS),
        ("hardware", device, {"use_cpu": not hardware.accelerator}),
    ]
    # Log the loss ~50 times a run (a fraction of the total steps): enough for a loss curve.
    layers.append(("pipeline", "a loss curve of about 50 points", {"logging_steps": 0.02}))
    if not rule.language_model or spec.merge is None:
        # Padding is the dominant cost on mixed-length text: batches of similar length pad little.
        layers.append(
            ("task", "batches of similar length pad less (in shuffled order)", {"train_sampling_strategy": "group_by_length"})
        )
    if spec.validation is not None:
        layers.append(("pipeline", "validation data given", {"eval_strategy": "epoch"}))
    if hardware.processes > 1:
        distributed: dict[str, Any] = {"ddp_find_unused_parameters": False}
        if not rule.language_model and spec.task != "sequence-sequence":
            # One loss per example: averaging "tokens" across processes would scale it by the world size.
            distributed["average_tokens_across_devices"] = False
        layers.append(("hardware", f"{hardware.processes} training processes (DDP)", distributed))
    layers.append(("user", "training", spec.training))
    kwargs, origins = _layered(*layers)

    where = f"this machine ({hardware.name})"
    hardware_problems = []
    if kwargs.get("bf16") and not hardware.bf16:
        hardware_problems.append(
            f"training.bf16: {where} cannot train in bfloat16 (got bf16=True); "
            "remove it, or plan for a bf16 GPU (--hardware cuda-bf16)"
        )
    if kwargs.get("fp16") and not hardware.accelerator:
        hardware_problems.append(
            f"training.fp16: {where} has no accelerator for float16 mixed precision (got fp16=True); "
            "remove it, or plan for a GPU (--hardware cuda)"
        )
    spec_problems = []
    if not kwargs.get("output_dir") and kwargs.get("save_strategy", "no") != "no":
        spec_problems.append(
            f"training.save_strategy: checkpoints need somewhere to go (got save_strategy="
            f"{kwargs['save_strategy']!r} and no output_dir); set training.output_dir"
        )
    if spec.checkpoint is True and not kwargs.get("output_dir"):
        spec_problems.append(
            "checkpoint: true resumes from the latest checkpoint in training.output_dir, which is not set; "
            "set training.output_dir (and a save_strategy that writes checkpoints)"
        )
    if spec_problems or hardware_problems:
        raise (SpecError if spec_problems else HardwareError)(hardware_problems + spec_problems)
    return kwargs, origins


def quantization_kwargs(spec: Spec, hardware: Hardware) -> tuple[dict[str, Any] | None, dict[str, Origin], list[str]]:
    """`BitsAndBytesConfig` kwargs, or ``None``: cleared without CUDA unless ``quantize_on_cpu``.

    Returns the kwargs, their origins and notes on any fallback.
    """
    if not spec.quantize:
        return None, {}, []
    if not hardware.cuda and not spec.quantize_on_cpu:
        note = (
            f"quantize: dropped, no CUDA on this machine ({hardware.name}); the model trains unquantized. "
            "Set quantize_on_cpu: true to keep 4-bit on a CPU"
        )
        return None, {}, [note]
    layers: list[Layer] = [
        ("seed", "seed default", QUANTIZE_DEFAULTS) if spec.quantize is True else ("user", "quantize", spec.quantize)
    ]
    rule = TASKS[spec.task]
    if rule.heads and "llm_int8_skip_modules" not in layers[0][2]:
        layers.append(("task", "new heads stay unquantized", {"llm_int8_skip_modules": rule.heads}))
    if not spec.lora:
        raise SpecError(
            "quantize: 4-bit and 8-bit weights cannot be trained directly (got quantize without lora); "
            "add lora: true to train adapters on the quantized model (QLoRA)"
        )
    kwargs, origins = _layered(*layers)
    notes = [] if hardware.cuda else ["quantize: kept on a CPU (quantize_on_cpu); bitsandbytes runs 4-bit there"]
    return kwargs, origins, notes


def lora_kwargs(spec: Spec) -> tuple[dict[str, Any] | None, dict[str, Origin], list[str]]:
    """`LoraConfig` kwargs, or ``None``: seed defaults for ``True``, the user's dict otherwise.

    ``task_type`` comes from the task table unless the user set one.
    """
    if not spec.lora:
        return None, {}, []
    notes = []
    if spec.lora is True:
        first: Layer = ("seed", "seed default", LORA_DEFAULTS)
    else:
        first = ("user", "lora", spec.lora)
        notes.append("lora: your dict replaces the seed defaults; LoraConfig's own defaults fill the rest")
    rule = TASKS[spec.task]
    task: dict[str, Any] = {"task_type": rule.lora_task}
    if rule.lora_exclude and first[2].get("target_modules") == "all-linear":
        task["exclude_modules"] = rule.lora_exclude
    # The task fills in only what the user left out.
    kwargs, origins = _layered(("task", f"{spec.task} adapts as", task), first)
    return kwargs, origins, notes


def _ignored(spec: Spec) -> list[str]:
    """Notes for fields the user set that this task does not use."""
    rule = TASKS[spec.task]
    uses = {
        "merge": rule.language_model,
        "prefix": spec.task == "sequence-sequence",
        "stride": spec.task == "question-answering",
        "generator": spec.task == "token-detection",
    }
    return [
        f"{field}: ignored, {spec.task} does not use it"
        for field, used in uses.items()
        if field in spec.model_fields_set and not used
    ]


class Plan(Frozen):
    """Every value a run will use, with its origin: computed purely, for any hardware.

    ``provenance`` maps ``"training_args.learning_rate"``-style keys to an `Origin`;
    ``notes`` says what fell back or was ignored, and why.
    """

    task: str
    hardware: Hardware
    model_class: str
    collator: str
    task_type: str | None
    training_args: FrozenMapping
    quantization: FrozenMapping | None
    lora: FrozenMapping | None
    provenance: FrozenMapping
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        rows = [("task", self.task, "spec")]
        for key in ("model_class", "collator", "task_type"):
            value = getattr(self, key)
            if value is not None:
                rows.append((key, value, "task"))
        for section in ("training_args", "quantization", "lora"):
            values = getattr(self, section)
            if values is None:
                rows.append((section, "none", ""))
                continue
            for key in sorted(values):
                origin = self.provenance[f"{section}.{key}"]
                rows.append((f"{section}.{key}", repr(values[key]), f"{origin.source}: {origin.reason}"))
        width = max(len(name) for name, _, _ in rows)
        value_width = min(max(len(value) for _, value, _ in rows), 40)
        lines = [f"plan for {self.hardware.name}"]
        lines += [f"  {name:<{width}}  {value:<{value_width}}  {why}".rstrip() for name, value, why in rows]
        lines += ["notes:"] + [f"  - {note}" for note in self.notes] if self.notes else []
        return "\n".join(lines)


def plan(spec: Spec, hardware: Hardware) -> Plan:
    """The exact configs ``spec`` runs with on ``hardware``, every value with its origin.

    Pure and cheap: no torch import, no I/O. Raises `HardwareError` or `SpecError`
    (with every problem found) for what cannot run there.
    """
    rule = TASKS[spec.task]
    errors: list[SpecError] = []
    results: dict[str, Any] = {}
    for name, derive in (
        ("training_args", lambda: (*training_kwargs(spec, hardware), [])),
        ("quantization", lambda: quantization_kwargs(spec, hardware)),
        ("lora", lambda: lora_kwargs(spec)),
    ):
        try:
            results[name] = derive()
        except SpecError as e:
            errors.append(e)
    if errors:
        kind = HardwareError if all(isinstance(e, HardwareError) for e in errors) else SpecError
        raise kind([p for e in errors for p in e.problems])

    provenance = {"task_type": Origin(source="task", reason=f"{spec.task} adapts as")}
    notes: list[str] = []
    for name, (kwargs, origins, section_notes) in results.items():
        provenance |= {f"{name}.{key}": origin for key, origin in origins.items()}
        notes += section_notes
    lora = results["lora"][0]
    return Plan(
        task=spec.task,
        hardware=hardware,
        model_class=rule.model_class,
        collator=rule.collator,
        task_type=lora["task_type"] if lora else None,
        training_args=results["training_args"][0],
        quantization=results["quantization"][0],
        lora=lora,
        provenance=FrozenDict(provenance),
        notes=tuple(notes + _ignored(spec)),
    )
