"""What a run wants: one immutable `Spec`, with txtai's parameter names."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, StrictInt, WithJsonSchema, field_validator, model_validator

from pipeline.core import fields as _fields
from pipeline.core.frozen import Frozen, FrozenDict, FrozenMapping, freeze, suggest
from pipeline.tasks import TASKS

__all__ = ["LORA_DEFAULTS", "QUANTIZE_DEFAULTS", "TRAINING_DEFAULTS", "Spec", "TaskName"]

TaskName = Literal[tuple(TASKS)]  # type: ignore[valid-type]  # the registry's names

# The defaults the seed fixes (see MISSION.md); derive.py applies them.
TRAINING_DEFAULTS: Mapping[str, Any] = FrozenDict(
    output_dir="", save_strategy="no", report_to="none", log_level="warning"
)
QUANTIZE_DEFAULTS: Mapping[str, Any] = FrozenDict(
    load_in_4bit=True,
    bnb_4bit_use_double_quant=True,
    bnb_4bit_quant_type="nf4",
    bnb_4bit_compute_dtype="bfloat16",
)
LORA_DEFAULTS: Mapping[str, Any] = FrozenDict(
    r=16, lora_alpha=8, target_modules="all-linear", lora_dropout=0.05, bias="none"
)

LORA_TASK_TYPES = ("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")
COMPUTE_DTYPES = ("bfloat16", "float16", "float32")
STORAGE_DTYPES = (*COMPUTE_DTYPES, "uint8")


def _names(value: Any, allow_text: bool = True) -> bool:
    """A module name (when ``allow_text``) or a list of them."""
    if isinstance(value, str):
        return allow_text
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


_FROM = {"TrainingArguments": "transformers", "BitsAndBytesConfig": "transformers", "LoraConfig": "peft"}


def _unknown_keys(given: Mapping[str, Any], known: frozenset[str], what: str) -> list[str]:
    library = _FROM[what]
    documented = f"; see the {what} documentation of {library} {_fields.KNOWN[library]} (the version pipeline knows)"
    return [f".{key}: unknown {what} field{suggest(key, known) or documented}" for key in given if key not in known]


# Our limits for TrainingArguments numbers (transformers checks few): an interval each,
# "[" / "]" inclusive, and a value to suggest.
INF = float("inf")
TRAINING_RANGES: Mapping[str, tuple[str, float, float, str, Any]] = FrozenDict(
    {
        **dict.fromkeys(["per_device_train_batch_size", "per_device_eval_batch_size"], ("[", 1, INF, ")", 8)),
        **dict.fromkeys(["gradient_accumulation_steps", "eval_accumulation_steps"], ("[", 1, INF, ")", 1)),
        "torch_empty_cache_steps": ("[", 1, INF, ")", 50),
        "save_total_limit": ("[", 1, INF, ")", 2),
        "dataloader_prefetch_factor": ("[", 1, INF, ")", 2),
        "ddp_bucket_cap_mb": ("[", 1, INF, ")", 25),
        "ddp_timeout": ("[", 1, INF, ")", 1800),
        "dataloader_num_workers": ("[", 0, INF, ")", 0),
        "seed": ("[", 0, 2**32 - 1, "]", 42),
        "data_seed": ("[", 0, 2**32 - 1, "]", 42),
        "local_rank": ("[", -1, INF, ")", -1),
        "max_steps": ("[", -1, INF, ")", -1),
        "num_train_epochs": ("(", 0, INF, ")", 3),
        "learning_rate": ("[", 0, INF, ")", 5e-5),
        "warmup_steps": ("[", 0, INF, ")", 0.1),
        "weight_decay": ("[", 0, INF, ")", 0.01),
        "adam_beta1": ("[", 0, 1, ")", 0.9),
        "adam_beta2": ("[", 0, 1, ")", 0.999),
        "adam_epsilon": ("(", 0, INF, ")", 1e-8),
        "max_grad_norm": ("[", 0, INF, ")", 1.0),
        "label_smoothing_factor": ("[", 0, 1, ")", 0.1),
        "neftune_noise_alpha": ("(", 0, INF, ")", 5),
        "logging_steps": ("(", 0, INF, ")", 50),
        "eval_steps": ("(", 0, INF, ")", 50),
        "save_steps": ("(", 0, INF, ")", 500),
        "eval_delay": ("[", 0, INF, ")", 0),
    }
)
STEPS = ("logging_steps", "eval_steps", "save_steps")
"""Steps that are a fraction of the run below 1 and a whole count above it."""


def _interval(low_bracket: str, low: float, high: float, high_bracket: str) -> str:
    if high == INF:
        return f"{'>=' if low_bracket == '[' else '>'} {low:g}"
    return f"in {low_bracket}{low:g}, {high:.10g}{high_bracket}"


def _training_value(key: str, value: Any) -> str | None:
    """What is wrong with one TrainingArguments value, or None: its type, choices and range."""
    kind = _fields.TRAINING_TYPES.get(key, "")
    base = kind.rstrip("?")
    if value is None:
        return None if kind.endswith("?") or not kind else f"must not be null; leave {key} out for its default"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    rule = TRAINING_RANGES.get(key)
    fix = f"; use e.g. {key}: {rule[4]}" if rule else ""
    if value is False and key in _fields.FALSE_MEANS_NO:
        return None  # YAML 1.1's `no`: the plan reads it as "no" and says so
    if base == "bool" and not isinstance(value, bool):
        return f"must be true or false (got {value!r})"
    if base == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        return f"must be a whole number (got {value!r}){fix}"
    if base == "float" and not number:
        return f"must be a number (got {value!r}){fix}"
    if base == "str" and not isinstance(value, str):
        return f"must be text (got {value!r})"
    choices = _fields.TRAINING_CHOICES.get(key)
    if choices and value not in choices:
        shown = ", ".join(repr(c) for c in choices[:12]) + (", ..." if len(choices) > 12 else "")
        return f"must be one of {shown} (got {value!r}){suggest(str(value), choices)}"
    if rule and number:
        low_bracket, low, high, high_bracket, _ = rule
        too_low = value < low or (low_bracket == "(" and value == low)
        too_high = value > high or (high_bracket == ")" and value == high)
        if too_low or too_high:
            return f"must be {_interval(low_bracket, low, high, high_bracket)} (got {value!r}){fix}"
        if key == "max_steps" and value == 0:
            return f"must be -1 (train num_train_epochs) or >= 1 (got 0){fix}"
        if key in STEPS and value > 1 and value != int(value):
            return f"must be a fraction of the run (below 1) or a whole number of steps (got {value!r}){fix}"
    return None


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise ValueError("\n".join(problems))


# -- data sources ------------------------------------------------------------------------


def source_kind(value: Any) -> str:
    """'frame', 'dataset', 'splits' or '' for an object we recognise by its type name."""
    names = {f"{c.__module__.split('.')[0]}.{c.__name__}" for c in type(value).__mro__}
    if "pandas.DataFrame" in names:
        return "frame"
    if "datasets.DatasetDict" in names or "datasets.IterableDatasetDict" in names:
        return "splits"
    if "datasets.Dataset" in names:
        return "dataset"
    return ""


def _data_source(value: Any) -> Any:
    """A file path (str), a tuple of frozen rows, or a live DataFrame / Dataset."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    kind = source_kind(value)
    if kind == "splits":
        raise ValueError(
            f"got a DatasetDict with splits {sorted(value)}; pass one split, "
            f"e.g. data[{sorted(value)[0]!r}]"
        )
    if kind:
        return value
    if isinstance(value, (list, tuple)):
        bad = [i for i, row in enumerate(value) if not isinstance(row, Mapping)]
        if bad:
            raise ValueError(f"rows must be dicts of column -> value (row {bad[0]} is {type(value[bad[0]]).__name__})")
        return freeze(value)
    raise ValueError(
        "expected a file path (.jsonl, .json, .csv, .parquet), a list of dicts, a pandas DataFrame "
        f"or a datasets.Dataset (got {type(value).__name__})"
    )


def _base(value: Any) -> Any:
    """A local path or hub id, or an already loaded ``(model, tokenizer)`` pair."""
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        model, tokenizer = value
        if not hasattr(model, "config") or not callable(tokenizer):
            raise ValueError(
                f"a loaded pair is (model, tokenizer): a transformers model with a .config and a tokenizer "
                f"(got ({type(model).__name__}, {type(tokenizer).__name__}))"
            )
        return tuple(value)
    raise ValueError(f"expected a path, a hub id or a (model, tokenizer) pair (got {type(value).__name__})")


def _teacher(value: Any) -> Any:
    """No teacher, or one given as ``base`` is: a path, a hub id or a loaded pair."""
    return None if value is None else _base(value)


def _distillation(value: Any) -> Any:
    """``(temperature, alpha)``: temperature > 0 softens both distributions; alpha in [0, 1] weighs the teacher."""
    if isinstance(value, Mapping):
        value = (value.get("temperature", 1.0), value.get("alpha", 0.5))
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"expected (temperature, alpha), e.g. [2.0, 0.5] (got {value!r})")
    temperature, alpha = value
    problems = []
    for name, number in (("temperature", temperature), ("alpha", alpha)):
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            problems.append(f"{name} must be a number (got {number!r})")
    if not problems and temperature <= 0:
        problems.append(f"temperature must be > 0 (got {temperature!r}); 1 keeps the teacher's probabilities, 2-4 soften them")
    if not problems and not 0 <= alpha <= 1:
        problems.append(f"alpha must be in [0, 1] (got {alpha!r}); 0 ignores the teacher, 1 learns from it alone")
    _raise_if(problems)
    return (float(temperature), float(alpha))


DataSource = Annotated[
    Any,
    BeforeValidator(_data_source),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}, {"type": "null"}],
            "description": "a .jsonl/.json/.csv/.parquet file, or rows (in Python also a DataFrame or Dataset)",
        }
    ),
]


class Spec(Frozen):
    """Everything one fine-tuning run needs: model, task, data and the three configs.

    ``quantize`` and ``lora``: ``True`` takes the seed defaults, a dict replaces them.
    ``training`` holds `TrainingArguments` overrides; unknown names are rejected.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True)

    base: Annotated[
        Any, BeforeValidator(_base), WithJsonSchema({"type": "string", "description": "model folder or hub id"})
    ]
    task: TaskName = "text-classification"
    """What the model learns (one of `pipeline.TASKS`)."""
    train: DataSource
    """The training data."""
    validation: DataSource = None
    """Held-out data, evaluated each epoch (the task's metrics)."""
    columns: tuple[str | None, ...] | None = None
    """The data's columns for the task's roles: a list in the task's order, or ``{role: column}``."""
    maxlength: StrictInt | None = Field(None, ge=1)
    """Tokens per text (language models: per block); default the model's positions, at most 2048, within memory."""
    stride: StrictInt = Field(128, ge=0)
    """QA window overlap; when not given and 128 does not fit, a quarter of ``maxlength``."""
    prefix: str | None = None
    """sequence-sequence: text put before each source (e.g. ``"summarize: "``)."""
    merge: Literal["concat", "pack"] | None = "concat"
    """Language models: texts concatenated into ``maxlength`` blocks, packed whole into blocks, or (null) one each."""
    template: str | None = None
    """chat: the chat template: the tokenizer's own by default, a built-in (chatml, llama-3, mistral) or a Jinja string."""
    train_on: Literal["answers", "all"] = "answers"
    """chat: the tokens in the loss: each answer and its end-of-turn marker, or every token (prompts too)."""
    truncation: Literal["prompt", "drop"] = "prompt"
    """chat: a conversation longer than ``maxlength`` loses its start (the prompt first), or is dropped."""
    packing: bool = False
    """chat: each batch's conversations in one row, positions restarting at each (no padding, no attention across)."""
    loss: Literal["in-batch", "cached", "pointwise", "listwise"] | None = None
    """embeddings: in-batch negatives ranking (default), or its cached form (GradCache), which embeds the batch in
    mini-batches: a large batch (many negatives per anchor) in the memory of a small one. reranking: pointwise
    (default: each labelled pair on its own) or listwise (rows of a query, its passages and their labels as lists)."""
    scale: float = Field(20.0, gt=0)
    """embeddings: the ranking loss's scale, by which cosine similarities are multiplied before the softmax
    (1 / temperature)."""
    pooling: Literal["mean", "cls", "max", "lasttoken"] | None = None
    """embeddings, similarity: how token embeddings become one vector (default: the model's own, mean for a plain
    transformers model)."""
    normalize: bool | None = None
    """embeddings, similarity: vectors scaled to length 1 (default: as the model does)."""
    mine: StrictInt | None = Field(None, ge=1)
    """embeddings: before training, this many hard negatives per pair, mined with the base model from the training
    passages (sentence-transformers' miner: the anchor's most similar passages that are not its positive, scored
    at most 95% of the positive, so a paraphrase of it is not taken for a negative); each pair becomes as many
    (anchor, positive, negative) rows."""
    tokenizers: StrictInt | None = Field(None, ge=1)
    """Processes for tokenizing (``datasets.map(num_proc=...)``)."""
    checkpoint: str | bool | None = None
    """Resume from this checkpoint directory, or ``True`` for the latest in ``output_dir``."""
    quantize: bool | FrozenMapping | None = None
    """4-bit base weights (`BitsAndBytesConfig`): true for the seed's, a mapping to replace them; needs lora."""
    quantize_on_cpu: bool = False
    """Keep 4-bit quantization on a CPU (bitsandbytes >= 0.45 runs it) instead of dropping it."""
    lora: bool | FrozenMapping | None = None
    """LoRA adapters (`LoraConfig`): true for the seed's, a mapping to replace them."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    """The weights' dtype when loaded: default float32 for a full fine-tune (master weights that take small
    updates), the checkpoint's own (``auto``) for LoRA, whose base weights are frozen."""
    zero: Literal[1, 2, 3] | None = None
    """DeepSpeed ZeRO over the training processes: optimizer state (1), and gradients (2), and the weights (3)
    sharded, each process holding its share; needs DeepSpeed (``pip install -e .[scale]``)."""
    offload: Literal["optimizer", "parameters"] | None = None
    """With ``zero``: the optimizer state (and with ``parameters``, stage 3, the weights too) in CPU memory."""
    lean_memory: bool | None = None
    """CPU only: hand freed activations back to the OS (glibc's mmap threshold pinned at 128 KiB): peak RSS
    15-33% lower, steps up to 1.5x slower. Default: on when the estimated peak exceeds half the memory."""
    generator: str | None = None
    """token-detection: the generator (masked LM) model; defaults to ``base``."""
    metrics: Annotated[
        Callable[..., Any] | str | None,
        WithJsonSchema({"type": ["string", "null"], "description": "a compute_metrics function as 'module:name'"}),
    ] = None
    """A ``compute_metrics`` function for evaluation, or its import path ``"module:name"``."""
    teacher: Annotated[
        Any,
        BeforeValidator(_teacher),
        WithJsonSchema({"type": ["string", "null"], "description": "teacher model folder or hub id"}),
    ] = None
    """Knowledge distillation: a trained model of the same task and vocabulary (path, hub id or loaded pair)."""
    distillation: Annotated[tuple[float, float], BeforeValidator(_distillation)] = (1.0, 0.5)
    """``(temperature, alpha)`` with a teacher (txtai's names and default): the loss is
    ``(1 - alpha) * loss + alpha * T^2 * KL(teacher / T || student / T)``, per labelled token or example."""
    training: FrozenMapping = Field(default_factory=FrozenDict)
    """`TrainingArguments` overrides (unknown names are refused)."""

    @classmethod
    def _unknown(cls, key: str) -> str:
        """Where an unknown top-level key probably belongs: a config section, or the closest field."""
        for section, names, what in (("training", _fields.TRAINING_ARGUMENTS, "TrainingArguments"),
                                     ("lora", _fields.LORA_CONFIG, "LoraConfig"),
                                     ("quantize", _fields.BITS_AND_BYTES_CONFIG, "BitsAndBytesConfig")):
            if key in names:
                return f"; did you mean {section}.{key}? ({what} fields go under {section})"
        return super()._unknown(key)

    @field_validator("train")
    @classmethod
    def _train_given(cls, train: Any) -> Any:
        if train is None:
            raise ValueError("no training data (got None); give a file, a list of rows, a DataFrame or a Dataset")
        return train

    @model_validator(mode="before")
    @classmethod
    def _columns_by_role(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("columns"), Mapping):
            task = TASKS.get(data.get("task") or "text-classification")
            if task is not None:
                try:
                    return {**data, "columns": task.by_role(data["columns"])}
                except ValueError as e:
                    raise ValueError(f"columns: {e}") from None
        return data

    @field_validator("task", mode="before")
    @classmethod
    def _known_task(cls, task: Any) -> Any:
        if isinstance(task, str) and task not in TASKS:
            raise ValueError(f"unknown task {task!r}{suggest(task, TASKS)} (tasks: {', '.join(TASKS)})")
        return task

    @field_validator("training")
    @classmethod
    def _training_arguments(cls, training: Mapping[str, Any]) -> Mapping[str, Any]:
        problems = _unknown_keys(training, _fields.TRAINING_ARGUMENTS, "TrainingArguments")
        for key, value in training.items():
            wrong = _training_value(key, value) if key in _fields.TRAINING_ARGUMENTS else None
            if wrong:
                problems.append(f".{key}: {wrong}")
        if training.get("bf16") is True and training.get("fp16") is True:
            problems.append(".fp16: bf16 and fp16 are both set; choose one mixed precision")
        if "output_dir" in training and training["output_dir"] is None:
            problems.append(
                ".output_dir: null makes transformers write to 'trainer_output'; "
                "use '' to train in memory and save nothing, or give a folder"
            )
        _raise_if(problems)
        return training

    @field_validator("quantize")
    @classmethod
    def _bits_and_bytes(cls, quantize: Any) -> Any:
        if not isinstance(quantize, Mapping):
            return quantize
        problems = _unknown_keys(quantize, _fields.BITS_AND_BYTES_CONFIG, "BitsAndBytesConfig")
        four, eight = quantize.get("load_in_4bit") is True, quantize.get("load_in_8bit") is True
        plain = all(isinstance(quantize.get(k, False), bool) for k in ("load_in_4bit", "load_in_8bit"))
        if four == eight and plain:
            problems.append(
                "set exactly one of load_in_4bit or load_in_8bit to true "
                f"(got load_in_4bit={four}, load_in_8bit={eight}); or use quantize: true for the NF4 defaults"
            )
        kind = quantize.get("bnb_4bit_quant_type", "nf4")
        if kind not in ("nf4", "fp4"):
            problems.append(f".bnb_4bit_quant_type: must be 'nf4' or 'fp4' (got {kind!r})")
        for key, allowed in (("bnb_4bit_compute_dtype", COMPUTE_DTYPES), ("bnb_4bit_quant_storage", STORAGE_DTYPES)):
            dtype = quantize.get(key)
            if dtype is not None and str(dtype).removeprefix("torch.") not in allowed:
                problems.append(f".{key}: must be one of {', '.join(allowed)} (got {dtype!r})")
        for key in ("load_in_4bit", "load_in_8bit", "bnb_4bit_use_double_quant", "llm_int8_has_fp16_weight",
                    "llm_int8_enable_fp32_cpu_offload"):
            if key in quantize and not isinstance(quantize[key], bool):
                problems.append(f".{key}: must be true or false (got {quantize[key]!r})")
        if not _names(quantize.get("llm_int8_skip_modules", ()), allow_text=False):
            problems.append(
                f".llm_int8_skip_modules: must be a list of module names (got {quantize['llm_int8_skip_modules']!r}); "
                "use e.g. [classifier]"
            )
        threshold = quantize.get("llm_int8_threshold", 6.0)
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or threshold <= 0:
            problems.append(f".llm_int8_threshold: must be a number > 0 (got {threshold!r})")
        _raise_if(problems)
        return quantize

    @field_validator("lora")
    @classmethod
    def _lora_config(cls, lora: Any) -> Any:
        if not isinstance(lora, Mapping):
            return lora
        problems = _unknown_keys(lora, _fields.LORA_CONFIG, "LoraConfig")
        r = lora.get("r", 8)
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            problems.append(f".r: must be an integer >= 1 (got {r!r}); use e.g. lora: {{r: 16}}")
        alpha = lora.get("lora_alpha", 8)
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
            problems.append(f".lora_alpha: must be a number > 0 (got {alpha!r}); use e.g. lora: {{lora_alpha: 16}}")
        dropout = lora.get("lora_dropout", 0.0)
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            problems.append(f".lora_dropout: must be in [0, 1) (got {dropout!r}); use e.g. lora: {{lora_dropout: 0.05}}")
        for key in ("target_modules", "exclude_modules", "modules_to_save"):
            value = lora.get(key)
            if value is not None and not _names(value, allow_text=key != "modules_to_save"):
                problems.append(
                    f".{key}: must be a module name or a list of them (got {value!r}); use e.g. {key}: [q_proj, v_proj]"
                )
        for key in ("use_dora", "use_rslora", "fan_in_fan_out", "inference_mode", "use_qalora", "lora_bias"):
            if key in lora and not isinstance(lora[key], bool):
                problems.append(f".{key}: must be true or false (got {lora[key]!r})")
        if lora.get("bias", "none") not in ("none", "all", "lora_only"):
            problems.append(f".bias: must be 'none', 'all' or 'lora_only' (got {lora['bias']!r})")
        task_type = lora.get("task_type")
        if task_type is not None and str(task_type).removeprefix("TaskType.") not in LORA_TASK_TYPES:
            problems.append(
                f".task_type: {task_type!r} is not a peft TaskType{suggest(str(task_type), LORA_TASK_TYPES)}; "
                f"use one of {', '.join(LORA_TASK_TYPES)} or leave it out to take the task's"
            )
        _raise_if(problems)
        return lora

    @model_validator(mode="after")
    def _columns_fit_task(self) -> Spec:
        rule = TASKS[self.task]
        if self.columns is not None and len(self.columns) not in rule.column_counts:
            counts = " or ".join(str(n) for n in rule.column_counts)
            raise ValueError(
                f"columns: {self.task} takes {counts} columns (got {len(self.columns)}: {list(self.columns)}); "
                f"the default is {list(rule.columns)}"
            )
        return self

    @model_validator(mode="after")
    def _columns_named(self) -> Spec:
        if self.columns is None:
            return self
        defaults = TASKS[self.task].columns
        optional = {i for i, c in enumerate(defaults) if c is None} if len(self.columns) == len(defaults) else set()
        missing = [i for i, c in enumerate(self.columns) if c is None and i not in optional]
        if missing:
            raise ValueError(
                f"columns: position {missing[0]} has no name (got {list(self.columns)}); name every column "
                f"(only the second text of a classification pair may be null), e.g. {list(defaults)}"
            )
        return self

    @model_validator(mode="after")
    def _sharding_fits(self) -> Spec:
        problems = []
        if self.offload and not self.zero:
            problems.append(f"offload: moves what ZeRO shards; set zero: too (got offload={self.offload!r}, no zero)")
        if self.offload == "parameters" and self.zero not in (None, 3):
            problems.append(f"offload: parameters needs zero: 3, which shards the weights (got zero={self.zero})")
        for key in ("deepspeed", "fsdp"):
            if self.zero and self.training.get(key):
                problems.append(f"zero: the plan writes the DeepSpeed config from it; leave out training.{key} "
                                f"(got zero={self.zero} and training.{key})")
        if self.zero and self.quantize:
            problems.append(f"zero: not planned with 4-bit weights (got zero={self.zero}, quantize); drop one")
        _raise_if(problems)
        return self

    def stride_for(self, maxlength: int) -> int:
        """The QA window overlap: the spec's ``stride``; when not given, 128 (txtai's) where it fits, else a quarter of ``maxlength``."""
        given = "stride" in self.model_fields_set
        return self.stride if given or self.stride < maxlength // 2 else maxlength // 4

    @model_validator(mode="after")
    def _stride_fits_maxlength(self) -> Spec:
        given = "stride" in self.model_fields_set
        if "stride" in TASKS[self.task].fields and self.maxlength and given and self.stride >= self.maxlength // 2:
            raise ValueError(
                f"stride: question windows must advance, so stride must be under half of maxlength "
                f"(got stride={self.stride}, maxlength={self.maxlength}); set e.g. stride: {self.maxlength // 4}"
            )
        return self
