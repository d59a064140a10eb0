"""What a task is: one `Task` value, written by each task's own module.

A task owns what differs between tasks: the model class and peft task type, its data columns
and their checks, labels, encoding, the collator, default metrics, the distillation term,
prediction, the per-task part of the memory model and its plan notes. Everything else (the
plan, the stages, the Trainer) is shared and reads the task's value: no ``if task == ...``.

Pure like the core: a task module imports no torch, transformers or datasets and touches no
file. What it does with a tokenizer, a model or tensors it does through the objects the shell
hands it: the tokenizer, a model's outputs (tensor methods), ``library`` (transformers' classes and
ours, by name), ``kl`` (the distillation divergences), a `Kit` (prediction).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from pipeline.errors import DataError

__all__ = ["Kit", "Labels", "Sentences", "Task", "unit", "argmax_ids", "blocks", "check_texts", "encode_blocks", "rows", "shown", "text_problems", "texts"]


class Kit(Protocol):
    """What prediction gets from the shell (`pipeline.training.inference`): the loaded model and
    tokenizer, the length and spec fields training used, and the ways to run them."""

    model: Any
    tokenizer: Any
    length: int
    document: Mapping[str, Any]
    """The run's spec fields that say how its inputs were prepared (task, columns, prefix, stride...)."""
    corpus: Sequence[str]
    """Texts the inputs are ranked against, where the caller gave them (embeddings)."""
    generation: Mapping[str, Any]
    """``generate`` options the caller gave (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``)."""

    def tokenize(self, *texts: Any, **kwargs: Any) -> Any:
        """The tokenizer's batch of one input as tensors on the model's device, cut to ``length``."""

    def encode(self, rows: list[dict[str, Any]]) -> Any:
        """Rows encoded as training encodes them (the task's `Task.encode`, with its windows)."""

    def outputs(self, features: Any, drop: Sequence[str] = ()) -> list[Any]:
        """The model's outputs for encoded ``features`` (without the ``drop`` columns), batch by batch."""


@dataclass(frozen=True)
class Labels:
    """What a label column holds and how it maps to the model's outputs."""

    num_labels: int
    problem_type: str | None = None
    classes: tuple[Any, ...] | None = None
    """Original label values in id order, when they are not already ids 0..n-1."""

    def encode(self, value: Any) -> Any:
        if self.problem_type == "multi_label_classification":
            return [float(v) for v in value]
        if self.problem_type == "regression":
            return float(value)
        return self.classes.index(value) if self.classes else int(value)

    def name(self, index: int) -> str:
        return str(self.classes[index]) if self.classes else str(index)

    def config(self) -> dict[str, Any]:
        """Model config overrides: label count, problem type and label names."""
        kwargs: dict[str, Any] = {"num_labels": self.num_labels}
        if self.problem_type:
            kwargs["problem_type"] = self.problem_type
        if self.classes:
            kwargs["id2label"] = {i: str(c) for i, c in enumerate(self.classes)}
            kwargs["label2id"] = {str(c): i for i, c in enumerate(self.classes)}
        return kwargs


@dataclass(frozen=True)
class Sentences:
    """What a task trained through sentence-transformers names and builds: that library's trainer, its loss and
    its evaluator take the place of the Trainer's model loss and ``compute_metrics``."""

    loss: Callable[[Any, Any, Any, int, Mapping[str, Any]], Any]
    """``(library, model, spec, processes, objective) -> loss module``, as the plan's ``objective`` section says."""
    evaluator: Callable[[Any, Any, tuple[str | None, ...]], Any]
    """``(library, rows, columns) -> evaluator`` of held-out rows (its metrics: `Task.metric_names`)."""
    section: Callable[..., tuple[dict[str, Any], dict[str, str]]]
    """``(spec, batch, accumulation, processes, columns) -> (values, reasons)``: the plan's ``objective``
    section (pure)."""
    forward: Callable[[Any, int, tuple[str | None, ...]], int]
    """``(spec, batch, columns) -> texts``: the texts whose activations a step holds at once (what the memory
    estimate counts as its batch)."""
    trainer: str = "SentenceTransformerTrainer"
    """The library's trainer class (the shell adds our resume records to it, and to its arguments)."""
    backbone: str = "AutoModel"
    """The transformers auto class inside the model (what the plan counts the trainable parameters on)."""
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """What the model class takes besides the folder when a run loads it to train (a cross-encoder's one label)."""
    losses: tuple[str, ...] = ()
    """The values of the spec's ``loss`` it takes (the first its default); empty: it reads no ``loss``."""
    cached: Callable[[Any, int, tuple[str | None, ...]], int | None] = lambda spec, batch, columns: None
    """``(spec, batch, columns) -> texts``: where examples are scored against their batch (and the loss is not cached
    already), the texts a step holds at once with the loss's cached form (same batch, less memory); ``None``: no
    such form (a smaller batch then trains the same)."""
    mine: Callable[[Any, Any, Any, Any], Any] | None = None
    """``(library, model, encoded, spec) -> encoded``: the training rows with hard negatives mined by the model before
    it trains (``spec.mine``); ``None``: the task mines none."""
    distill: Callable[[Any, Any, Any, Any, Any], Any] | None = None
    """``(library, teacher, student, encoded, spec) -> encoded``: each row with the teacher's target as its ``label``,
    for the task's loss to mix in (``spec.teacher``); ``None``: the task does not distill."""


def _loss_alone(*_: Any) -> tuple[None, None]:
    return None, None


def _no_term(*_: Any) -> Any:
    raise NotImplementedError("no per-batch distillation term: the plan refuses a teacher, or the teacher's targets "
                              "come from Sentences.distill before training")


def unit(value: Any) -> bool:
    """A number from 0 to 1 (not a bool): a relevance, a similarity."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1


@dataclass(frozen=True)
class Task:
    """One task: its facts (read by the pure plan) and what it does (called by the stages)."""

    name: str
    model_class: str
    """The transformers auto class that trains it (the shell resolves the name)."""
    lora_task: str
    """peft ``TaskType`` member name."""
    collator: str
    """The collator, as the plan shows it."""
    columns: tuple[str | None, ...]
    """Default data columns (txtai's names); ``None``: a column that may be left out."""
    column_counts: tuple[int, ...]
    """How many columns a spec may name."""
    metrics: str | None
    """What evaluation reports besides the loss, as the plan shows it (``None``: the loss alone)."""
    metric_names: tuple[str, ...]
    """The names `metrics` reports (classification: which of them depends on the labels)."""
    distillation: str
    """What the teacher's term compares; mixed as (1 - alpha) * loss + alpha * T^2 * term."""

    encode: Callable[..., dict[str, Any]]
    """``(batch, columns, tokenizer, maxlength, spec, labels, indices) -> features``, unpadded; ``indices``
    (the rows' places in the set) asks for what scoring needs beside the features (question answering's
    windows, named by `scored_columns`)."""
    predict: Callable[[list[Any], Kit], list[dict[str, Any]]]
    """``(inputs, kit) -> predictions``, one plain dict per input."""
    check: Callable[[Any, tuple[str | None, ...], str], list[str]]
    """``(dataset, columns, field) -> problems`` that show without a tokenizer, each naming its rows."""
    collate: Callable[..., Any] = lambda library, tokenizer, model, seed: None
    """``(library, tokenizer, model, seed) -> collator``: each batch padded to its own longest; ``None``: the
    trainer's own (sentence-transformers' collators tokenize the texts themselves)."""
    distill: Callable[..., Any] = _no_term
    """``(student, teacher, inputs, kl, problem) -> tensor``: the teacher's term per labelled item, flat;
    ``kl.softmax(s, t)``, ``kl.sigmoid(s, t)`` and ``kl.vocabulary(s, t)`` come from the shell. A task trained
    through sentence-transformers has none (its teacher's targets come from `Sentences.distill`)."""
    score: Callable[..., tuple[Callable[[Any], dict[str, float]] | None, Callable[[Any, Any], Any] | None]] = _loss_alone
    """``(labels, rows, encoded, columns) -> (compute_metrics, preprocess_logits_for_metrics)`` for the
    Trainer, from the evaluation ``rows`` and their ``encoded`` features (in evaluation order)."""
    report: Callable[[Labels | None, Any], dict[str, Any] | None] | None = None
    """``(labels, prediction) -> {"classes": [per-class rows], "confusion": {"labels", "matrix"}}`` from the
    Trainer's predictions, for `pipeline evaluate` (``None`` where it has none for these labels)."""
    read_labels: Callable[..., Labels] | None = None
    """``(values, field, where) -> Labels`` from the label column's values; ``None``: no label column."""
    load: Callable[..., Any] | None = None
    """``(pretrained, library, spec, kwargs) -> model`` where the model is not one `model_class` loaded from
    ``spec.base`` (token detection: a pair); ``pretrained(class, name, kwargs)`` loads as the plan says."""
    said: Callable[[dict[str, Any]], str] = lambda p: f"{shown(p)}  ->  {p}"
    """One prediction as a line for a person (``pipeline predict``)."""
    prepare_tokenizer: Callable[[Any, Any], None] | None = None
    """``(tokenizer, spec) -> None``: what the task sets on the tokenizer it trains with, which the run folder
    keeps (chat: the spec's template, so plain transformers renders conversations as training did)."""
    summary: Callable[[Any, str], tuple[list[str], list[str]]] | None = None
    """``(encoded, field) -> (notes, problems)``: what a split trains on, said before training (chat: trained
    tokens, answers cut); problems stop the run."""
    scored_columns: tuple[str, ...] = ()
    """Columns `encode` adds with ``indices`` for scoring, dropped before the model sees the features."""

    saved_class: str | None = None
    """The auto class that loads a saved model, where it is not `model_class` (token detection)."""
    language_model: bool = False
    """Texts are merged into blocks (``merge``) and the model learns the text itself."""
    token_loss: bool = False
    """The loss is a mean over tokens (not one value per example), so processes average it by tokens."""
    vocabulary: bool = False
    """Its output is a distribution over the vocabulary per token (memory: the LM head and its logits)."""
    head: Callable[[int, int], int] | None = None
    """``(hidden, labels) -> parameters`` of the new head peft trains in full beside LoRA; ``None``: none."""
    heads: tuple[str, ...] = ()
    """New output heads; kept out of 4-bit quantization, which cannot initialise them."""
    lora_exclude: tuple[str, ...] = ()
    """What "all-linear" LoRA must skip: heads peft trains in full for this task type, layers the task never
    uses (embeddings: BERT's pooler)."""
    fields: frozenset[str] = frozenset()
    """The task-specific spec fields it reads (``merge``, ``prefix``, ``stride``, ``generator``)."""
    roles: tuple[str, ...] = ()
    """What each column position is, by name (``columns: {role: column}``); default: the default columns'."""
    hub_tag: str | None = None
    """The Hub's ``pipeline_tag`` for a model of this task (its model card's metadata)."""
    inputs: int = 1
    """How many of the leading columns one `predict` input holds (question answering: question, context)."""
    models: int = 1
    """Models trained together (token detection: generator and discriminator)."""
    perplexity: bool = False
    """Evaluation reports ``eval_perplexity``, exp of the mean loss over the held-out tokens (`token_mean`)."""
    sentences: Sentences | None = None
    """Trained through sentence-transformers (`Sentences`); ``None``: through the Trainer, the model's own loss."""

    @property
    def load_class(self) -> str:
        """The auto class that loads one saved model of the task: `saved_class`, else `model_class`."""
        return self.saved_class or self.model_class

    @property
    def token_mean(self) -> str | None:
        """How evaluation averages a loss whose exp is a perplexity: over every held-out token, ``"shifted"`` for a
        causal LM (position i predicts token i + 1), else ``"aligned"``; ``None`` where the task has no perplexity."""
        if not self.perplexity:
            return None
        return "shifted" if self.lora_task == "CAUSAL_LM" else "aligned"

    def reported(self, validation: bool, own_metrics: bool) -> frozenset[str] | None:
        """The final metrics a run can report, known before it trains: ``train_loss``, and with validation
        data ``eval_loss`` and the task's ``eval_*`` metrics. ``None`` when a ``metrics`` function of the
        user's names its own."""
        if own_metrics and validation:
            return None
        found = {"train_loss"}
        if validation:
            found |= {"eval_loss", *(f"eval_{name}" for name in self.metric_names)}
        return frozenset(found)

    def columns_of(self, given: tuple[str | None, ...] | None) -> tuple[str | None, ...]:
        """The data columns a spec reads: its own (the optional ones left out filled in as ``None``), or the
        defaults."""
        if not given:
            return self.columns
        optional = [i for i, c in enumerate(self.columns) if c is None]
        if len(given) == len(self.columns) - len(optional):
            found = list(given)
            for i in optional:
                found.insert(i, None)
            return tuple(found)
        return tuple(given)

    @property
    def role_names(self) -> tuple[str, ...]:
        return self.roles or tuple(str(c) for c in self.columns)

    def by_role(self, given: Mapping[str, str | None]) -> tuple[str | None, ...]:
        """``{role: column}`` as the positional columns, the roles left out at their defaults; `ValueError`
        naming the roles for one that is not."""
        unknown = [role for role in given if role not in self.role_names]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a role of {self.name} (roles: {', '.join(self.role_names)})")
        return tuple(given.get(role, default) for role, default in zip(self.role_names, self.columns))

    def after_evaluation(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Metrics evaluation derives from its loss: ``eval_perplexity`` where the task has it."""
        if not self.perplexity or "eval_loss" not in metrics:
            return {}
        return {"eval_perplexity": math.exp(min(metrics["eval_loss"], 700))}


# -- shared by the tasks ---------------------------------------------------------------------


def texts(batch: Mapping[str, list[Any]], column: str) -> list[str]:
    """A column of texts from a batch; `DataError` for a value that is not text."""
    found = batch[column]
    bad = [t for t in found if not isinstance(t, str)]
    if bad:
        raise DataError(f"column {column!r}: expected text, got {bad[0]!r}; drop or fill the rows without text")
    return found


def shown(prediction: Mapping[str, Any]) -> str:
    """A prediction's input as text (a pair joined by ``|``)."""
    given = prediction["input"]
    return given if isinstance(given, str) else " | ".join(given)


def rows(indices: Sequence[int]) -> str:
    """Rows counted from 1, as a person (and a JSON-lines file's line numbers) count them."""
    shown = ", ".join(str(i + 1) for i in indices[:5])
    more = f" and {len(indices) - 5} more" if len(indices) > 5 else ""
    return f"row{'s' if len(indices) > 1 else ''} {shown}{more}"


def text_problems(dataset: Any, column: str, field: str, what: str = "text", optional: bool = False) -> list[str]:
    """Rows of ``column`` without text (not a string, or blank; ``optional``: null is fine), named."""
    values = dataset[column]
    bad = [i for i, text in enumerate(values)
           if not (optional and text is None) and (not isinstance(text, str) or not text.strip())]
    if not bad:
        return []
    return [f"{field}: column {column!r}: {rows(bad)} without {what} (got {values[bad[0]]!r}); fill or drop them"]


def blocks(batch: Mapping[str, list[Any]], column: str, tokenizer: Any, maxlength: int, merge: str | None
           ) -> dict[str, list[list[int]]]:
    """Concatenate into ``maxlength`` blocks, pack whole texts into blocks, or truncate each."""
    ids = tokenizer(texts(batch, column), truncation=merge is None, max_length=maxlength)["input_ids"]
    if merge == "concat":
        flat = [token for text in ids for token in text]
        found = [flat[i : i + maxlength] for i in range(0, len(flat), maxlength)]
    elif merge == "pack":
        found = []
        for text in (t[:maxlength] for t in ids):
            if found and len(found[-1]) + len(text) <= maxlength:
                found[-1] = found[-1] + text
            else:
                found.append(list(text))
    else:
        found = ids
    return {"input_ids": found, "attention_mask": [[1] * len(b) for b in found]}


def encode_blocks(batch, columns, tokenizer, maxlength, spec, labels, indices):
    """A language model's `Task.encode`: its text column in `blocks` as ``spec.merge`` says."""
    return blocks(batch, columns[0], tokenizer, maxlength, spec.merge)


def check_texts(dataset: Any, columns: tuple[str | None, ...], field: str) -> list[str]:
    """A language model's `Task.check`: every row of its text column has text."""
    return text_problems(dataset, columns[0], field)


def argmax_ids(logits: Any, labels: Any) -> Any:
    """The Trainer's ``preprocess_logits_for_metrics`` for per-token scores: each position's likeliest id, kept
    instead of a whole distribution per token."""
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(-1)


def masked_vocabulary(student: Any, teacher: Any, inputs: Mapping[str, Any], kl: Any, shift: bool = False) -> Any:
    """The softened-vocabulary KL at each labelled token (``shift``: position i predicts token i + 1)."""
    s, t, labels = student.logits, teacher.logits, inputs["labels"]
    if shift:
        s, t, labels = s[:, :-1], t[:, :-1], labels[:, 1:]
    mask = labels != -100
    return kl.softmax(*kl.vocabulary(s[mask], t[mask]))
