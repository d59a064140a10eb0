"""Pure derivation: (spec, hardware) -> library kwargs, each value with where it came from.

Nothing here imports torch, transformers, peft or bitsandbytes, or touches the disk:
the stages build the library objects from these plain dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal

from pipeline.core.frozen import Frozen, FrozenDict, FrozenMapping, thaw
from pipeline.core.fields import FALSE_MEANS_NO
from pipeline.errors import HardwareError, SpecError
from pipeline.core.hardware import Hardware
from pipeline.core.memory import Memory, Setup, Shape, memory, roomy, shape, smaller_batches
from pipeline.core.spec import LORA_DEFAULTS, QUANTIZE_DEFAULTS, TRAINING_DEFAULTS, Spec
from pipeline.tasks import TASKS

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
    user = {key: "no" if value is False and key in FALSE_MEANS_NO else value for key, value in spec.training.items()}
    device = "an accelerator is present" if hardware.accelerator else "no CUDA, MPS or XPU on this machine"
    layers: list[Layer] = [
        ("seed", "seed default", TRAINING_DEFAULTS),
        ("hardware", device, {"use_cpu": not hardware.accelerator}),
    ]
    layers.append(_mixed_precision(spec, hardware))
    # Log the loss ~50 times a run (a fraction of the total steps): enough for a loss curve.
    layers.append(("pipeline", "a loss curve of about 50 points", {"logging_steps": 0.02}))
    if rule.sentences is None and (not rule.language_model or spec.merge is None):
        # Padding is the dominant cost on mixed-length text: batches of similar length pad little.
        layers.append(
            ("task", "batches from length buckets (texts up to 64 tokens at random): less padding, classes mixed",
             {"train_sampling_strategy": "group_by_length"})
        )
    if spec.validation is not None:
        layers.append(("pipeline", "validation data given", {"eval_strategy": "epoch"}))
    if hardware.processes > 1:
        distributed: dict[str, Any] = {"ddp_find_unused_parameters": False}
        if not rule.token_loss:
            # One loss per example: averaging "tokens" across processes would scale it by the world size.
            distributed["average_tokens_across_devices"] = False
        layers.append(("hardware", f"{hardware.processes} training processes (DDP)", distributed))
        if rule.sentences is not None:
            layers.append(("task", "sentence-transformers pools the token embeddings, so a model's own pooler gets no "
                           "gradient, which DDP must be told", {"ddp_find_unused_parameters": True}))
    if spec.zero:
        layers.append(("user", f"zero: {spec.zero}" + (f", offload: {spec.offload}" if spec.offload else ""),
                       {"deepspeed": deepspeed_config(spec.zero, spec.offload)}))
    if user.get("save_strategy", "no") not in ("no", None):
        layers.append(("pipeline", "checkpoints kept: the latest two, so one is complete while the next is written "
                       "(with load_best_model_at_end the best besides)", {"save_total_limit": 2}))
    layers.append(("user", "training", user))
    kwargs, origins = _layered(*layers)
    for key in (k for k, value in spec.training.items() if value is False and k in FALSE_MEANS_NO):
        origins[key] = Origin(source="user", reason="training: false read as 'no' (YAML 1.1 reads `no` as false)")
    if not kwargs.get("output_dir"):
        origins["output_dir"] = Origin(
            source=origins["output_dir"].source,
            reason="nothing saved from Python; `pipeline train` saves to --output or runs/<run id>",
        )

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
    evaluates = [k for k in ("eval_strategy", "eval_on_start", "load_best_model_at_end", "do_eval")
                 if k in user and user[k] not in (False, "no", None)]
    if evaluates and spec.validation is None:
        spec_problems.append(
            f"training.{evaluates[0]}: evaluation needs validation data, and the spec has none "
            f"(got {evaluates[0]}={user[evaluates[0]]!r}); add validation: FILE, or remove it"
        )
    if kwargs.get("load_best_model_at_end") and spec.validation is not None:
        evaluation, saving = kwargs.get("eval_strategy", "no"), kwargs.get("save_strategy", "no")
        if not kwargs.get("output_dir") or saving not in (evaluation, "best"):
            spec_problems.append(
                "training.load_best_model_at_end: the best model is reloaded from the checkpoints saved when it "
                f"evaluates (got eval_strategy={evaluation!r}, save_strategy={saving!r}, output_dir="
                f"{kwargs.get('output_dir')!r}); set save_strategy: {evaluation} and an output_dir"
            )
    if spec.packing and kwargs.get("use_cache"):
        # transformers keeps packed examples apart (a mask from the restarting position ids) only without a cache
        spec_problems.append(
            "training.use_cache: packing needs it off (got use_cache=True): with a KV cache transformers does not "
            "keep packed conversations apart, and each attends to those before it; remove use_cache"
        )
    if spec.checkpoint is True and not kwargs.get("output_dir"):
        spec_problems.append(
            "checkpoint: true resumes from the latest checkpoint in training.output_dir, which is not set; "
            "set training.output_dir (and a save_strategy that writes checkpoints)"
        )
    if spec_problems or hardware_problems:
        raise (SpecError if spec_problems else HardwareError)(hardware_problems + spec_problems)
    return kwargs, origins


def deepspeed_config(stage: int, offload: str | None) -> dict[str, Any]:
    """The DeepSpeed config of a ZeRO stage: the batch sizes, precision and clipping (and stage 3's bucket sizes)
    left ``"auto"`` for the Trainer to fill from its own arguments (and the model's width); offload to CPU
    memory; a stage-3 model saved whole."""
    zero: dict[str, Any] = {"stage": stage}
    cpu = {"device": "cpu", "pin_memory": True}
    if offload:
        zero["offload_optimizer"] = cpu
    if offload == "parameters":
        zero["offload_param"] = cpu
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        # Buckets sized from the model's width by the Trainer (hidden x hidden values), not DeepSpeed's fixed
        # 5e8: a process of bert-110m on 2 CPUs peaked at 2422 MB instead of 2944 MB (bench/MEMORY.md)
        zero.update(reduce_bucket_size="auto", stage3_prefetch_bucket_size="auto",
                    stage3_param_persistence_threshold="auto")
    auto = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")
    return {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            **{key: "auto" for key in auto}}


def _mixed_precision(spec: Spec, hardware: Hardware) -> Layer:
    """bf16 autocast where the accelerator has it; fp16 with the Trainer's loss scaler on a CUDA GPU without it
    (unless the weights that train are float16 themselves: the scaler unscales float32 gradients only); none on a
    CPU or MPS, or where the user set either."""
    if {"bf16", "fp16"} & set(spec.training):
        return ("user", "training", {})
    if hardware.bf16:
        return ("hardware", f"bfloat16 mixed precision: {hardware.name} has it", {"bf16": True})
    trains_half = spec.dtype in ("float16", "bfloat16") and not spec.lora
    if hardware.cuda and not trains_half:
        return ("hardware", f"float16 mixed precision with a loss scaler: {hardware.name} has no bfloat16", {"fp16": True})
    return ("hardware", "no mixed precision here", {})


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
        layers.append(
            ("task", "new heads stay unquantized (with transformers' own skips)", {"llm_int8_skip_modules": rule.heads})
        )
    if spec.lora in (None, False):
        raise SpecError(
            "quantize: 4-bit and 8-bit weights cannot be trained directly (got quantize without lora); "
            "add lora: true to train adapters on the quantized model (QLoRA)"
        )
    given = layers[0][2]
    if spec.training.get("fsdp") and hardware.cuda and "bnb_4bit_quant_storage" not in given:
        # FSDP flattens and shards parameters of one float dtype: uint8 storage fails ("Integer parameters are
        # unsupported"), so the packed 4-bit weights are stored as the compute dtype
        layers.append(("pipeline", "FSDP shards the 4-bit weights only in a float storage: the compute dtype",
                       {"bnb_4bit_quant_storage": given.get("bnb_4bit_compute_dtype", "bfloat16")}))
    kwargs, origins = _layered(*layers)
    notes = [] if hardware.cuda else ["quantize: kept on a CPU (quantize_on_cpu); bitsandbytes runs 4-bit there"]
    if hardware.cuda and not hardware.bf16 and str(kwargs.get("bnb_4bit_compute_dtype")) in ("bfloat16", "torch.bfloat16"):
        notes.append(
            f"quantize: bnb_4bit_compute_dtype bfloat16 (the seed's) on a GPU without bfloat16 ({hardware.name}): "
            "it is emulated there, slowly; set quantize.bnb_4bit_compute_dtype: float16 to compute natively"
        )
    if spec.training.get("gradient_checkpointing") is None:
        notes.append(
            "gradient checkpointing: on, as peft's k-bit preparation of a quantized model turns it on (activations "
            "recomputed in backward: less memory, about a third more compute); training.gradient_checkpointing: "
            "false turns it off"
        )
    return kwargs, origins, notes


TASK_TYPE_REASON = "peft's task type for {task} (which head it trains in full)"


def lora_kwargs(spec: Spec) -> tuple[dict[str, Any] | None, dict[str, Origin], list[str]]:
    """`LoraConfig` kwargs, or ``None``: seed defaults for ``True``, the user's dict otherwise.

    ``task_type`` comes from the task table unless the user set one.
    """
    if spec.lora in (None, False):  # an empty dict is LoRA with LoraConfig's own defaults
        return None, {}, []
    notes = []
    given = LORA_DEFAULTS if spec.lora is True else spec.lora
    seeded = {k: v for k, v in LORA_DEFAULTS.items() if k in given and given[k] == v}
    left_out = [k for k in LORA_DEFAULTS if k not in given]
    if left_out:
        notes.append(f"lora: your dict leaves out the seed's {', '.join(left_out)}; LoraConfig's own defaults fill "
                     "them (a dotted --set lora.KEY=VALUE keeps the seed's)")
    rule = TASKS[spec.task]
    excluded = {"exclude_modules": rule.lora_exclude} if rule.lora_exclude and given.get("target_modules") == "all-linear" else {}
    # The task fills in only what the user left out.
    kwargs, origins = _layered(
        ("task", TASK_TYPE_REASON.format(task=spec.task), {"task_type": rule.lora_task}),
        ("task", "all-linear skips what trains in full (a head) or not at all (a pooler the task does not use)",
         excluded),
        ("seed", "seed default", seeded),
        ("user", "lora", {k: v for k, v in given.items() if k not in seeded}),
    )
    return kwargs, origins, notes


def _ignored(spec: Spec) -> list[str]:
    """Notes for fields the user set that this task does not use."""
    rule = TASKS[spec.task]
    return [
        f"{field}: ignored, {spec.task} does not use it"
        for field in TASK_FIELDS
        if field in spec.model_fields_set and field not in rule.fields
    ]


TASK_FIELDS = tuple(sorted(set().union(*(task.fields for task in TASKS.values()))))
"""The spec fields some task reads and others ignore (`Task.fields`)."""


VALUE_WIDTH = 40
"""The plan table's value column; a longer value takes its line whole, its origin goes below."""


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
    distillation: FrozenMapping | None = None
    """With a teacher: ``teacher``, ``temperature``, ``alpha`` and the ``loss`` term for this task."""
    dtype: str = "auto"
    """The dtype the model's weights are loaded in (``auto``: the checkpoint's)."""
    metrics: str | None = None
    """What evaluation reports besides the loss: the task's defaults or the spec's function."""
    maxlength: int | None = None
    """Tokens per example (LM tasks: per block); ``None`` when neither the spec nor the model's config says."""
    attention: str = "sdpa"
    lean_memory: bool = False
    """CPU: freed activations go back to the OS (lower peak, slower steps); see `Spec.lean_memory`."""
    memory: Memory | None = None
    """The estimated peak memory, when the model's config was given to `plan`."""
    chat: FrozenMapping | None = None
    """chat: the template, the tokens in the loss, the truncation rule and packing."""
    objective: FrozenMapping | None = None
    """Tasks trained through sentence-transformers: the loss and what it scores (embeddings: its scale, the
    candidates each anchor is scored against, the batch sampler)."""
    data: tuple[str, ...] = ()
    """What the data gives training, counted by the shell with the tokenizer (`training.planning`; chat:
    conversations, trained tokens and their share, answers cut, end-of-turn markers trained)."""
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        rows = [("task", self.task, "spec")]
        for key in ("model_class", "collator", "task_type", "dtype", "metrics", "maxlength", "attention", "lean_memory"):
            value = getattr(self, key)
            if value is not None:
                origin = self.provenance.get(key)
                rows.append((key, str(value), f"{origin.source}: {origin.reason}" if origin else "task"))
        sections = ("training_args", "quantization", "lora") + tuple(s for s in ("distillation", "chat", "objective") if getattr(self, s))
        for section in sections:
            values = getattr(self, section)
            if values is None:
                rows.append((section, "none", ""))
                continue
            for key in sorted(values):
                origin = self.provenance[f"{section}.{key}"]
                rows.append((f"{section}.{key}", repr(thaw(values[key])), f"{origin.source}: {origin.reason}"))
        width = max(len(name) for name, _, _ in rows)
        value_width = min(max(len(value) for _, value, _ in rows), VALUE_WIDTH)
        lines = [f"plan for {self.hardware.name}"]
        for name, value, why in rows:
            if len(value) <= value_width:
                lines.append(f"  {name:<{width}}  {value:<{value_width}}  {why}".rstrip())
            else:  # whole (a path stays one piece), its origin on the next line, in the origins' column
                lines.append(f"  {name:<{width}}  {value}")
                lines.append(f"  {'':<{width}}  {'':<{value_width}}  {why}".rstrip())
        lines += self.memory.lines() if self.memory else ["memory  no estimate (the model's config.json was not read)"]
        lines += ["data:"] + [f"  {line}" for line in self.data] if self.data else []
        lines += ["notes:"] + [f"  - {note}" for note in self.notes] if self.notes else []
        return "\n".join(lines)


def plan(
    spec: Spec,
    hardware: Hardware,
    config: Mapping[str, Any] | None = None,
    teacher: Mapping[str, Any] | None = None,
    trainable: int | None = None,
    longest: int | None = None,
) -> Plan:
    """The exact configs ``spec`` runs with on ``hardware``, every value with its origin.

    ``config``: the base model's ``config.json`` as a dict (`files.model_config` reads
    it); with it the plan also holds the default ``maxlength`` and the memory estimate
    (which counts the teacher when its ``config.json`` is given as ``teacher``). ``trainable``: the
    trainable parameters as the shell counted them on the model itself (`training.planning`), which the
    estimate then takes instead of its formula's; ``longest``: the longest training example in tokens as
    the shell counted it (chat: after templating), which the estimate takes where it is under ``maxlength``
    (batches pad to their longest). Pure and cheap: no torch import, no I/O. Raises `HardwareError` or `SpecError`
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
    if rule.sentences is not None:
        errors += _unsupported(spec)
    if errors:
        kind = HardwareError if all(isinstance(e, HardwareError) for e in errors) else SpecError
        raise kind([p for e in errors for p in e.problems])

    provenance = {"task_type": Origin(source="task", reason=TASK_TYPE_REASON.format(task=spec.task))}
    notes: list[str] = []
    for name, (kwargs, origins, section_notes) in results.items():
        provenance |= {f"{name}.{key}": origin for key, origin in origins.items()}
        notes += section_notes
    lora = results["lora"][0]
    training, quantization = results["training_args"][0], results["quantization"][0]
    provenance["attention"] = Origin(
        source="pipeline", reason="needs least memory (no attention matrix kept); eager where a model lacks it"
    )
    metrics = _metrics(spec, provenance)
    dtype = _dtype(spec, lora, quantization, provenance)
    distillation = _distillation(spec, "4-bit" if quantization else dtype, provenance, notes)
    spec, chosen = _cached_if_needed(spec, hardware, config, (training, quantization, lora, dtype), trainable, longest)
    maxlength, estimate = _length_and_memory(
        spec, hardware, (config, teacher), (training, quantization, lora, dtype), provenance, notes, trainable, longest
    )
    lean = _lean_memory(spec, hardware, estimate, provenance)
    chat = _chat(spec, provenance)
    objective = _objective(spec, hardware, training, provenance)
    if chosen:
        provenance["objective.loss"] = chosen
    notes += _engines(spec, training, hardware, estimate is not None)
    return Plan(
        task=spec.task,
        hardware=hardware,
        model_class=rule.model_class,
        collator="DataCollatorWithFlattening (a batch in one row, no padding)" if spec.packing else rule.collator,
        task_type=lora["task_type"] if lora else None,
        training_args=training,
        quantization=quantization,
        lora=lora,
        provenance=FrozenDict(provenance),
        distillation=distillation,
        dtype=dtype,
        metrics=metrics,
        maxlength=maxlength,
        lean_memory=lean,
        memory=estimate,
        chat=chat,
        objective=objective,
        notes=tuple(notes + _ignored(spec)),
    )


def _chat(spec: Spec, provenance: dict[str, Origin]) -> FrozenDict | None:
    """chat's choices with their origins: the template (the tokenizer's unless named), what trains, the cut."""
    if spec.task != "chat":
        return None
    given = spec.model_fields_set
    template = ("the tokenizer's" if spec.template is None else spec.template if len(spec.template) < 30
                else "a Jinja string")
    values = {"template": template, "train_on": spec.train_on, "truncation": spec.truncation, "packing": spec.packing}
    reasons = {
        "template": "the chat template in tokenizer_config.json" if spec.template is None else "template",
        "train_on": "the loss on each answer and its end-of-turn marker" if spec.train_on == "answers" else "train_on",
        "truncation": "a conversation over maxlength loses its start (the prompt first)" if spec.truncation == "prompt"
        else "truncation: conversations over maxlength are dropped",
        "packing": "one conversation a row, padded" if not spec.packing else
        "each batch in one row, positions restarting per conversation (DataCollatorWithFlattening)",
    }
    for key in values:
        provenance[f"chat.{key}"] = Origin(source="user" if key in given else "task", reason=reasons[key])
    return FrozenDict(values)


def _unsupported(spec: Spec) -> list[SpecError]:
    """What a sentence-transformers task refuses: mining where it has negatives already (or mines none), a model
    passed in Python, a ``loss`` it does not take, a teacher where it does not distill."""
    rule, problems = TASKS[spec.task], []
    given = [c for c in rule.columns_of(spec.columns) if c]
    if spec.mine and (rule.sentences.mine is None or len(given) > 2):
        problems.append(f"mine: {spec.task} mines negatives for (anchor, positive) pairs (got mine={spec.mine} with "
                        f"columns {given}); remove mine, or the negative column")
    for field in ("base", "teacher"):
        if isinstance(getattr(spec, field), tuple):
            problems.append(f"{field}: {spec.task} loads its models with sentence-transformers, from a folder or hub id "
                            "(got a loaded pair); save the model and give its folder")
    allowed = rule.sentences.losses
    if spec.loss is not None and allowed and spec.loss not in allowed:
        problems.append(f"loss: {spec.task} trains with {' or '.join(allowed)} (got {spec.loss!r})")
    if spec.teacher is not None and rule.sentences.distill is None:
        problems.append(f"teacher: {spec.task} does not distill yet (got teacher={spec.teacher!r}); remove teacher")
    return [SpecError(problems)] if problems else []


def _objective(spec: Spec, hardware: Hardware, training: Mapping[str, Any], provenance: dict[str, Origin]
               ) -> FrozenDict | None:
    """A sentence-transformers task's section (`Sentences.section`), at the batch the plan trains with."""
    rule = TASKS[spec.task]
    if rule.sentences is None:
        return None
    batch = int(training.get("per_device_train_batch_size", 8))
    accumulation = int(training.get("gradient_accumulation_steps", 1))
    values, reasons = rule.sentences.section(spec, batch, accumulation, hardware.processes, rule.columns_of(spec.columns))
    given = spec.model_fields_set
    for key in values:
        provenance[f"objective.{key}"] = Origin(source="user" if key in given else "task", reason=reasons[key])
    return FrozenDict(values)


def _engines(spec: Spec, training: dict[str, Any], hardware: Hardware, estimated: bool) -> list[str]:
    """What the plan says of the engines it does not model: the memory estimate is one plain process's,
    and FSDP runs only on GPUs (on a CPU accelerate trains plain DDP, and says nothing)."""
    notes = []
    used = [key for key in ("deepspeed", "fsdp", "torch_compile") if training.get(key) and not spec.zero]
    if used and estimated:
        notes.append(f"memory: the estimate does not model {', '.join(used)}: it is one plain process's")
    if training.get("fsdp") and not hardware.cuda:
        notes.append("training.fsdp: no CUDA here, and FSDP runs only on GPUs: this trains plain "
                     f"{'DDP' if hardware.processes > 1 else 'single-process'} instead, each process holding the "
                     "whole model")
    return notes


def _dtype(spec: Spec, lora: Any, quantization: Any, provenance: dict[str, Origin]) -> str:
    """The weights' dtype: the spec's; float32 for a full fine-tune; the checkpoint's for frozen LoRA bases."""
    if spec.dtype:
        provenance["dtype"] = Origin(source="user", reason="dtype")
        return spec.dtype
    if lora is None and quantization is None:
        provenance["dtype"] = Origin(
            source="pipeline", reason="full fine-tune: float32 master weights (a bf16 checkpoint would train in bf16)"
        )
        return "float32"
    provenance["dtype"] = Origin(source="pipeline", reason="the checkpoint's own: LoRA leaves the base frozen")
    return "auto"


def _distillation(spec: Spec, loaded: str, provenance: dict[str, Origin], notes: list[str]) -> dict[str, Any] | None:
    """Teacher (``loaded`` as the model is), temperature, alpha and the task's term; ``None`` without a teacher."""
    given = "distillation" in spec.model_fields_set
    if spec.teacher is None:
        if given:
            notes.append("distillation: ignored, there is no teacher; set teacher: MODEL to distill")
        return None
    teacher = spec.teacher if isinstance(spec.teacher, str) else "a loaded model"
    temperature, alpha = spec.distillation
    origin = Origin(source="user", reason="distillation") if given else Origin(source="pipeline", reason="txtai's default")
    provenance |= {
        "distillation.teacher": Origin(source="user", reason="teacher"),
        "distillation.loaded": Origin(source="pipeline", reason="as the model: frozen, it only runs forward"),
        "distillation.temperature": origin,
        "distillation.alpha": origin,
        "distillation.loss": Origin(source="task", reason=f"{spec.task}: (1 - alpha) * loss + alpha * T^2 * this"),
    }
    if TASKS[spec.task].sentences is not None:
        provenance["distillation.loss"] = Origin(source="task", reason=f"{spec.task}: (1 - alpha) * ranking loss + "
                                                 "alpha * this; the teacher scores each row once, before training")
        notes.append("distillation.temperature: not used by margin-MSE (it matches score margins, not distributions)")
    return {"teacher": teacher, "loaded": loaded, "temperature": temperature, "alpha": alpha,
            "loss": TASKS[spec.task].distillation}


LEAN_SHARE = 0.5
"""Above this share of the available memory, a CPU run trades speed for a lower peak (`Spec.lean_memory`)."""


def _lean_memory(spec: Spec, hardware: Hardware, estimate: Memory | None, provenance: dict[str, Origin]) -> bool:
    """Whether freed activations go back to the OS: the spec's choice; on a CPU, when memory is tight."""
    if hardware.accelerator:
        provenance["lean_memory"] = Origin(source="hardware", reason="activations live on the accelerator")
        return False
    if spec.lean_memory is not None:
        provenance["lean_memory"] = Origin(source="user", reason="lean_memory")
        return spec.lean_memory
    if estimate is None or estimate.available is None:
        provenance["lean_memory"] = Origin(source="pipeline", reason="no estimate: speed first")
        return False
    share = estimate.total / estimate.available
    tight = share > LEAN_SHARE
    provenance["lean_memory"] = Origin(
        source="pipeline",
        reason=f"the estimate is {share:.0%} of the memory: " + ("a lower peak first" if tight else "speed first"),
    )
    return tight


def _metrics(spec: Spec, provenance: dict[str, Origin]) -> str | None:
    """What evaluation reports besides the loss: the spec's function, or the task's defaults."""
    if spec.metrics is not None:
        provenance["metrics"] = Origin(source="user", reason="metrics")
        return spec.metrics if isinstance(spec.metrics, str) else getattr(spec.metrics, "__name__", "a function")
    if TASKS[spec.task].metrics:
        provenance["metrics"] = Origin(source="task", reason="on validation data")
        return TASKS[spec.task].metrics
    return None


def _length_and_memory(
    spec: Spec,
    hardware: Hardware,
    models: tuple[Mapping[str, Any] | None, Mapping[str, Any] | None],
    configs: tuple[Mapping[str, Any], Mapping[str, Any] | None, Mapping[str, Any] | None, str],
    provenance: dict[str, Origin],
    notes: list[str],
    trainable: int | None = None,
    longest: int | None = None,
) -> tuple[int | None, Memory | None]:
    """``maxlength`` (the spec's, or a default from the model's config that fits) and the memory estimate."""
    maxlength = spec.maxlength
    if maxlength:
        provenance["maxlength"] = Origin(source="user", reason="maxlength")
    model = _shape(models[0], notes)
    if model is None:
        return maxlength, None
    teacher = _shape(models[1], notes) if spec.teacher is not None else None
    if spec.teacher is not None and teacher is None:
        notes.append("memory: the teacher is not counted (its config.json was not read)")

    training = configs[0]

    def setup(length: int) -> Setup:
        return replace(_setup(spec, hardware, model, *configs, length), teacher=teacher, trainable=trainable)

    if maxlength is None and model.positions:
        full = min(model.positions, LONGEST_DEFAULT)
        maxlength, reason = _default_maxlength(model, setup, hardware, full)
        provenance["maxlength"] = Origin(source="pipeline", reason=reason)
        smaller = _smaller_batch(spec, model, setup(full), maxlength, hardware) if maxlength < full else None
        if smaller:  # the length the model reads, in smaller batches: the data stays whole
            batch, steps, why = smaller
            maxlength = full
            training |= {"per_device_train_batch_size": batch, "gradient_accumulation_steps": steps}
            provenance["maxlength"] = Origin(source="pipeline", reason=why)
            for key in ("per_device_train_batch_size", "gradient_accumulation_steps"):
                provenance[f"training_args.{key}"] = Origin(source="pipeline", reason=why)
    if not maxlength:
        return maxlength, None
    if longest and longest < maxlength:
        notes.append(f"memory: counted at the longest training example, {longest} tokens as the data gives them "
                     f"(batches pad to their longest), not maxlength {maxlength}")
    return maxlength, memory(model, setup(min(maxlength, longest or maxlength)), hardware.available)


def _cached_if_needed(
    spec: Spec,
    hardware: Hardware,
    config: Mapping[str, Any] | None,
    configs: tuple[Mapping[str, Any], Mapping[str, Any] | None, Mapping[str, Any] | None, str],
    trainable: int | None,
    longest: int | None,
) -> tuple[Spec, Origin | None]:
    """Where examples are scored against their batch (`Setup.cached`) and the spec left the loss to the plan: the
    spec with the cached loss when the batch does not fit at its length and does embedded a few texts at a time
    (the same candidates; a smaller batch would have fewer, a shorter length cuts the texts), with why."""
    model = _shape(config, []) if config is not None else None
    if model is None or hardware.available is None or TASKS[spec.task].sentences is None or spec.loss is not None:
        return spec, None
    length = spec.maxlength or min(model.positions or 512, LONGEST_DEFAULT)
    base = replace(_setup(spec, hardware, model, *configs, min(length, longest or length)), trainable=trainable)
    if base.cached is None or roomy(memory(model, base).total, hardware.available):
        return spec, None
    cached = replace(base, batch=base.cached)
    if not roomy(memory(model, cached).total, hardware.available):
        return spec, None
    why = (f"the batch's {base.batch} texts at once need about {memory(model, base).total / 2**30:.1f} GiB of "
           f"{hardware.available / 2**30:.1f}: the cached loss embeds them {base.cached} at a time, the same "
           "candidates per anchor (a smaller batch would have fewer); set loss to choose")
    return spec.model_copy(update={"loss": "cached"}), Origin(source="pipeline", reason=why)


def _smaller_batch(spec: Spec, model: Shape, base: Setup, halved: int, hardware: Hardware
                   ) -> tuple[int, int, str] | None:
    """Where halving the default length was the way to fit: the largest smaller batch (with the same effective
    batch through accumulation) at which ``base``, the full default length, fits with room, as (batch,
    accumulation steps, why); ``None`` when the user set the batch or no batch fits."""
    if "per_device_train_batch_size" in spec.training or base.cached is not None:  # fewer negatives: not the same
        return None
    length = base.tokens
    for batch, steps in smaller_batches(base):
        if roomy(memory(model, replace(base, batch=batch, accumulation=steps)).total, hardware.available):
            why = (f"keeps maxlength {length} (the model's length, not halved to {halved}) in batches of {batch} x "
                   f"{steps} accumulation steps: the same effective batch of {base.batch * base.accumulation} "
                   f"within {hardware.available / 2**30:.1f} GiB with room; set maxlength or the batch to choose")
            return batch, steps, why
    return None


LONGEST_DEFAULT = 2048
"""The longest default ``maxlength``: a model's full context (131,072 tokens for Llama 3) rarely fits."""


def _shape(config: Mapping[str, Any] | None, notes: list[str]) -> Shape | None:
    if config is None:
        return None
    try:
        return shape(config)
    except (ValueError, TypeError) as e:
        notes.append(f"memory: no estimate, the model's config.json is not one this reads ({e})")
        return None


def _default_maxlength(model: Shape, setup: Any, hardware: Hardware, length: int) -> tuple[int, str]:
    """``length`` (the model's positions, at most `LONGEST_DEFAULT`), halved (down to 128) until the estimate
    fits."""
    reason = f"the model's {model.positions:,} positions"
    if length < (model.positions or 0):
        reason += f", capped at {LONGEST_DEFAULT}"
    available = hardware.available
    if available is not None:
        first = length
        while length > 128 and not roomy(memory(model, setup(length)).total, available):
            length //= 2
        if length < first:
            reason += f", halved to fit {available / 2**30:.1f} GiB"
    return length, reason + "; set maxlength to choose"


def _setup(
    spec: Spec,
    hardware: Hardware,
    model: Shape,
    training: Mapping[str, Any],
    quantization: Mapping[str, Any] | None,
    lora: Mapping[str, Any] | None,
    dtype: str,
    tokens: int,
) -> Setup:
    """The numbers the memory estimate reads, from the derived configs."""
    rule = TASKS[spec.task]
    bits = None
    if quantization:
        bits = 4 if quantization.get("load_in_4bit") else 8
    device = "cuda" if hardware.cuda else "mps" if hardware.mps else "xpu" if hardware.xpu else "cpu"
    batch, cached = int(training.get("per_device_train_batch_size", 8)), None
    if rule.sentences:  # each text of a row encoded on its own
        batch, cached = (f(spec, batch, rule.columns_of(spec.columns)) for f in (rule.sentences.forward,
                                                                                  rule.sentences.cached))
    return Setup(
        task=spec.task,
        batch=batch,
        accumulation=int(training.get("gradient_accumulation_steps", 1)),
        tokens=tokens,
        device=device,
        lora_r=int(lora.get("r", 8)) if lora else None,
        lora_dropout=float(lora.get("lora_dropout", 0.0)) if lora else 0.0,
        lora_targets=_targets(lora.get("target_modules")) if lora else "all-linear",
        quantized_bits=bits,
        double_quant=bool(quantization.get("bnb_4bit_use_double_quant", False)) if quantization else False,
        checkpointing=training.get("gradient_checkpointing"),
        optimizer=str(training.get("optim", "adamw_torch_fused")),
        dtype=model.dtype if dtype == "auto" else dtype,
        mixed_precision=bool(training.get("bf16") or training.get("fp16")),
        language_model=rule.vocabulary,
        models=rule.models,
        zero=spec.zero,
        offload=spec.offload,
        shards=hardware.processes,
        cached=cached,
    )


def _targets(value: Any) -> tuple[str, ...] | str:
    if value is None:
        return ("q_proj", "v_proj", "query", "value")  # peft's default for most models: attention q and v
    if isinstance(value, str):
        return value if value == "all-linear" else (value,)
    return tuple(str(v) for v in value)
