"""What a run wants: one immutable `Spec`, with txtai's parameter names."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from . import _fields
from ._frozen import Frozen, FrozenDict, FrozenMapping, freeze
from .tasks import TASKS

__all__ = ["LORA_DEFAULTS", "QUANTIZE_DEFAULTS", "TRAINING_DEFAULTS", "Spec", "TaskName"]

TaskName = Literal[
    "text-classification",
    "language-generation",
    "language-modeling",
    "question-answering",
    "sequence-sequence",
    "token-detection",
]

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


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_keys(given: Mapping[str, Any], known: frozenset[str], what: str) -> list[str]:
    return [
        f".{key}: unknown {what} field{_suggest(key, known) or f'; see the {what} documentation for valid names'}"
        for key in given
        if key not in known
    ]


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise ValueError("\n".join(problems))


# -- data sources ------------------------------------------------------------------------


def _kind(value: Any) -> str:
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
    kind = _kind(value)
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
        return tuple(value)
    raise ValueError(f"expected a path, a hub id or a (model, tokenizer) pair (got {type(value).__name__})")


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

    base: Annotated[
        Any, BeforeValidator(_base), WithJsonSchema({"type": "string", "description": "model folder or hub id"})
    ]
    task: TaskName = "text-classification"
    train: DataSource
    validation: DataSource = None
    columns: tuple[str | None, ...] | None = None
    maxlength: int | None = Field(None, ge=1)
    stride: int = Field(128, ge=0)
    prefix: str | None = None
    merge: Literal["concat", "pack"] | None = "concat"
    tokenizers: int | None = Field(None, ge=1)
    """Processes for tokenizing (``datasets.map(num_proc=...)``)."""
    checkpoint: str | bool | None = None
    """Resume from this checkpoint directory, or ``True`` for the latest in ``output_dir``."""
    quantize: bool | FrozenMapping | None = None
    quantize_on_cpu: bool = False
    """Keep 4-bit quantization on a CPU (bitsandbytes >= 0.45 runs it) instead of dropping it."""
    lora: bool | FrozenMapping | None = None
    generator: str | None = None
    """token-detection: the generator (masked LM) model; defaults to ``base``."""
    metrics: Annotated[
        Callable[..., Any] | str | None,
        WithJsonSchema({"type": ["string", "null"], "description": "a compute_metrics function as 'module:name'"}),
    ] = None
    """A ``compute_metrics`` function for evaluation, or its import path ``"module:name"``."""
    training: FrozenMapping = Field(default_factory=FrozenDict)

    @field_validator("task", mode="before")
    @classmethod
    def _known_task(cls, task: Any) -> Any:
        if isinstance(task, str) and task not in TASKS:
            raise ValueError(f"unknown task {task!r}{_suggest(task, TASKS)} (tasks: {', '.join(TASKS)})")
        return task

    @field_validator("training")
    @classmethod
    def _training_arguments(cls, training: Mapping[str, Any]) -> Mapping[str, Any]:
        _raise_if(_unknown_keys(training, _fields.TRAINING_ARGUMENTS, "TrainingArguments"))
        return training

    @field_validator("quantize")
    @classmethod
    def _bits_and_bytes(cls, quantize: Any) -> Any:
        if not isinstance(quantize, Mapping):
            return quantize
        problems = _unknown_keys(quantize, _fields.BITS_AND_BYTES_CONFIG, "BitsAndBytesConfig")
        four, eight = bool(quantize.get("load_in_4bit")), bool(quantize.get("load_in_8bit"))
        if four == eight:
            problems.append(
                "set exactly one of load_in_4bit or load_in_8bit to true "
                f"(got load_in_4bit={four}, load_in_8bit={eight}); or use quantize: true for the NF4 defaults"
            )
        kind = quantize.get("bnb_4bit_quant_type", "nf4")
        if kind not in ("nf4", "fp4"):
            problems.append(f".bnb_4bit_quant_type: must be 'nf4' or 'fp4' (got {kind!r})")
        for key in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
            dtype = quantize.get(key)
            if dtype is not None and str(dtype).removeprefix("torch.") not in COMPUTE_DTYPES + ("uint8",):
                problems.append(f".{key}: must be one of {', '.join(COMPUTE_DTYPES)} (got {dtype!r})")
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
        if lora.get("bias", "none") not in ("none", "all", "lora_only"):
            problems.append(f".bias: must be 'none', 'all' or 'lora_only' (got {lora['bias']!r})")
        task_type = lora.get("task_type")
        if task_type is not None and str(task_type).removeprefix("TaskType.") not in LORA_TASK_TYPES:
            problems.append(
                f".task_type: {task_type!r} is not a peft TaskType{_suggest(str(task_type), LORA_TASK_TYPES)}; "
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
    def _stride_fits_maxlength(self) -> Spec:
        if self.task == "question-answering" and self.maxlength and self.stride >= self.maxlength // 2:
            raise ValueError(
                f"stride: question windows must advance, so stride must be under half of maxlength "
                f"(got stride={self.stride}, maxlength={self.maxlength}); set e.g. stride: {self.maxlength // 4}"
            )
        return self
