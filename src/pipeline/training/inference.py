"""Using a trained model: predictions for a few inputs, or the task's metrics on a data file,
from a `Run` or a run folder.

The shell: loads models (a run folder's full model, or its adapter merged into the base)
and runs them. Inputs are texts, or for question answering ``(question, context)`` pairs
(a text pair for pair classification). Each prediction is a plain dict.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.training.hush import hushed
from pipeline.errors import SpecError
from pipeline.tasks import TASKS

__all__ = ["evaluate", "predict", "read_corpus", "read_inputs", "run_task"]

def predict(run: Any, inputs: list[Any], task: str | None = None, hardware: Any = None,
            generation: dict[str, Any] | None = None, corpus: list[str] | None = None) -> list[dict[str, Any]]:
    """One prediction per input, by task:

    - text-classification: ``label`` and ``score``, with ``scores`` of every label (multi-label:
      ``labels`` above 0.5; regression: ``value``)
    - language-generation / sequence-sequence: ``text``, greedy, up to 32 new tokens
    - chat: ``text``, the reply to a question (or to a list of messages) prompted with the run's template,
      greedy, up to 64 new tokens, ending at the end-of-turn marker
    - language-modeling: ``fills``, per mask token of the input, its five likeliest tokens
    - question-answering: ``answer`` (``""`` for no answer) and ``score``
    - token-detection: ``tokens``, each with the probability it was ``replaced``
    - token-classification: ``entities``, each with its ``entity`` text, ``type``, ``start`` and ``end``
      characters and ``score``
    - embeddings, similarity: ``embedding``, the input's normalized vector; given a ``corpus`` (texts),
      ``ranked``: the ten corpus texts most similar to the input, each with its cosine ``score``
    - reranking: for a query and a ``corpus``, ``ranked``: the ten passages it scores highest, each with its
      ``score``; for a (query, passage) pair, its ``score``

    Each task's module under `pipeline.tasks` says how (its ``predict``).

    ``run`` is a trained `Run` or a run folder (``task`` then comes from its spec.yaml). Inputs are
    prepared as the run's training prepared its data: its ``prefix``, its ``maxlength``, and for
    question answering its strided windows over a long context. A folder's model goes to the GPU
    where ``hardware`` (default: this machine) has one. ``generation``: options for ``generate`` where the
    task generates (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``).
    """
    import torch

    model, tokenizer, document, length, _ = _prepared(run, task, hardware)
    model.eval()
    with torch.no_grad():
        kit = Kit(model, tokenizer, length, document, generation, corpus)
        return TASKS[document["task"]].predict(list(inputs), kit)


class Kit:
    """What a task's ``predict`` runs with (`pipeline.tasks.task.Kit`)."""

    def __init__(self, model: Any, tokenizer: Any, length: int, document: dict[str, Any],
                 generation: dict[str, Any] | None = None, corpus: list[str] | None = None):
        self.model, self.tokenizer, self.length, self.document = model, tokenizer, length, document
        self.generation, self.corpus = dict(generation or {}), list(corpus or [])

    def tokenize(self, *texts: Any, **kwargs: Any) -> Any:
        batch = self.tokenizer(*texts, **{"truncation": True, "max_length": self.length, "return_tensors": "pt", **kwargs})
        return batch.to(self.model.device)

    def encode(self, rows: list[dict[str, Any]]) -> Any:
        from datasets import Dataset

        from pipeline.core.spec import Spec
        from pipeline.io.data import encode

        spec = Spec(**{**self.document, "columns": None, "base": "run", "train": rows})
        return encode(Dataset.from_list(rows), spec, self.tokenizer, self.length, windows=True)

    def outputs(self, features: Any, drop: tuple[str, ...] = ()) -> list[Any]:
        from pipeline.training.stages import collator

        features = features.remove_columns([c for c in drop if c in features.column_names])
        collate = collator(self.document["task"], self.tokenizer, self.model)
        found = []
        for i in range(0, len(features), 16):
            batch = collate([features[j] for j in range(i, min(i + 16, len(features)))]).to(self.model.device)
            found.append(self.model(**batch))
        return found


SPEC_FIELDS = ("task", "columns", "maxlength", "stride", "prefix", "merge", "metrics", "template", "train_on",
               "truncation")
"""What evaluation and predict take from the run's spec: how its data is read and scored."""


def _prepared(run: Any, task: str | None, hardware: Any, command: str = "predict"
              ) -> tuple[Any, Any, dict[str, Any], int, int | None]:
    """The run's model and tokenizer, the spec fields that say how its inputs were prepared
    (`SPEC_FIELDS`, with the task), the length training cut them to (`stages.maxlength`) and the
    plan's evaluation batch size (``None`` where it set none)."""
    from pipeline.core.frozen import thaw
    from pipeline.training.stages import _parts, maxlength

    if hasattr(run, "spec"):
        document, planned = {k: thaw(v) for k, v in run.spec if k in SPEC_FIELDS}, run.plan.model_dump(mode="json")
    else:
        found = _spec_document(run, required=task is None, command=command)
        document, planned = {k: v for k, v in found.items() if k in SPEC_FIELDS}, _plan(run)
    model, tokenizer, task = _model(run, task or document.get("task"), hardware, command)
    document["task"] = task
    length = maxlength(document.get("maxlength"), planned.get("maxlength"), tokenizer, [p.config for p in _parts(model)])
    if TASKS[task].sentences is not None:
        model.max_seq_length = length
    return model, tokenizer, document, length, (planned.get("training_args") or {}).get("per_device_eval_batch_size")


def evaluate(run: Any, source: Any, task: str | None = None, hardware: Any = None) -> dict[str, float]:
    """``eval_loss`` and the task's metrics (or the run's own ``metrics`` function) of a trained run on
    ``source`` (a data file, rows, a DataFrame or a Dataset with the columns it trained on), its data
    prepared as training prepared it (the same length, windows and prefix).

    Raises `DataError` for data the run cannot read (missing columns, labels it does not know).
    """
    return evaluation(run, source, task, hardware)[0]


def evaluation(run: Any, source: Any, task: str | None = None, hardware: Any = None
               ) -> tuple[dict[str, float], dict[str, Any] | None]:
    """`evaluate`'s metrics, and the task's report where it has one (a classifier: precision, recall and F1
    per class, and the confusion matrix; see `Task.report`)."""
    from pipeline.io.data import encode, problems, read
    from pipeline.io.runs import final_metrics
    from pipeline.training.trainer import Arguments, Trainer, quiet_progress
    from pipeline.errors import DataError
    from pipeline.core.spec import Spec
    from pipeline.training.stages import collator, scoring

    model, tokenizer, document, length, batch = _prepared(run, task, hardware, "evaluate")
    task = document["task"]
    spec = Spec(**{**document, "base": "run", "train": source})
    dataset = read(spec.train, "data")
    found = problems(dataset, spec, "data")
    if TASKS[task].sentences is not None:  # its evaluator's metrics (retrieval), as training reports them
        if found:
            raise DataError(found)
        from pipeline.io.data import columns
        from pipeline.training.stages import library

        scored = TASKS[task].sentences.evaluator(library(), dataset, columns(spec))(model)
        return {f"eval_{key}": float(value) for key, value in scored.items()}, None
    labels = None
    if TASKS[task].read_labels and not found:
        labels, dataset = _labels(model.config, dataset, spec, found)
    if found:
        raise DataError(found)
    encoded, scores = scoring(spec, labels, dataset, encode(dataset, spec, tokenizer, length, labels, windows=True))
    # the training's evaluation batch: a token loss is averaged per batch, so another size scores otherwise
    args = Arguments(output_dir="", report_to="none", disable_tqdm=True, use_cpu=str(model.device) == "cpu",
                     **({"per_device_eval_batch_size": batch} if batch else {}))
    trainer = Trainer(model=model, args=args, data_collator=collator(task, tokenizer, model),
                      processing_class=tokenizer, **scores)
    trainer.token_mean = TASKS[task].token_mean
    quiet_progress(trainer)
    report = None
    if TASKS[task].report:  # the predictions too: one pass gives the metrics and the report
        prediction = trainer.predict(encoded, metric_key_prefix="eval")
        metrics, report = prediction.metrics, TASKS[task].report(labels, prediction)
    else:
        metrics = trainer.evaluate(encoded)
    return final_metrics(metrics | TASKS[task].after_evaluation(metrics)), report  # no runtimes, epoch or counters


def _labels(config: Any, dataset: Any, spec: Any, found: list[str]) -> tuple[Any, Any]:
    """The model's own label mapping (its names, else ids), every label of the data checked against it;
    returns it with the dataset (its labels as text where the model names them)."""
    from pipeline.io.data import Labels, columns

    problem = config.problem_type
    if problem in ("regression", "multi_label_classification") or config.num_labels == 1:
        return Labels(config.num_labels, problem or "regression"), dataset
    column = columns(spec)[-1]
    names = [config.id2label[i] for i in range(config.num_labels)]
    named = names != [f"LABEL_{i}" for i in range(config.num_labels)]
    one = lambda v: not isinstance(v, (list, tuple, dict))  # noqa: E731 (a label per row, not a tag sequence)
    if named:  # trained on text labels, or on ids that are not 0..n-1 (saved as their text)
        dataset = dataset.map(lambda batch: {column: [str(v) if one(v) else v for v in batch[column]]}, batched=True)
    known = names if named else list(range(config.num_labels))
    unknown = sorted({str(v) for v in dataset[column] if one(v) and v not in known})
    if unknown:
        found.append(f"data: column {column!r}: labels {unknown[:5]} are not the model's ({', '.join(map(str, known))})")
    return Labels(config.num_labels, classes=tuple(names) if named else None), dataset


@hushed()
def _model(run: Any, task: str | None, hardware: Any = None, command: str = "predict") -> tuple[Any, Any, str]:
    if hasattr(run, "model") and hasattr(run, "spec"):
        from pipeline.training.stages import _parts

        task = task or run.spec.task
        if TASKS[task].sentences is not None:
            return run.model, run.tokenizer, task
        model = _parts(run.model)[-1]  # the model a run saves (token detection: its discriminator)
        return model, run.tokenizer, task
    from pipeline.io.files import config_file
    from pipeline.io.runs import is_adapter
    from pipeline.training.saved import merged
    from pipeline.training.stages import library, saved_class

    folder = Path(run)
    if not config_file(folder).is_file() and not is_adapter(folder):
        raise SpecError(f"{command}: {str(folder)!r} holds no model (no config.json); give a run folder")
    task = task or _spec_document(folder, command=command)["task"]
    if task not in TASKS:
        raise SpecError(f"{command}: unknown task {task!r} (tasks: {', '.join(TASKS)})")
    from pipeline.training.detect import detect

    cuda = (hardware if hardware is not None else detect()).cuda
    if TASKS[task].sentences is not None:  # saved whole (the adapter merged), as sentence-transformers loads it
        from pipeline.training.sentences import load

        model = load(TASKS[task].model_class, str(folder), "auto", cuda)
        return model, model.tokenizer, task
    if is_adapter(folder):
        model = merged(folder)
    else:
        model = getattr(library(), saved_class(task)).from_pretrained(folder)
    tokenizer = library().AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if cuda:
        model = model.to(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    return model, tokenizer, task


def run_task(folder: str | Path) -> str:
    """The task of a run folder, from its spec.yaml."""
    return _spec_document(folder)["task"]


def _spec_document(folder: str | Path, required: bool = True, command: str = "predict") -> dict[str, Any]:
    """A run folder's spec.yaml, which names its task (``{}`` where it has none and none is ``required``)."""
    import yaml

    try:
        document = yaml.safe_load((Path(folder) / "spec.yaml").read_text())
    except (OSError, yaml.YAMLError):
        document = None
    if not isinstance(document, dict) or "task" not in document:
        if not required:
            return {}
        raise SpecError(f"{command}: {str(folder)!r} has no spec.yaml to name its task; give a run folder, or "
                        "name its task (task=... in Python)")
    return document


def _plan(folder: str | Path) -> dict[str, Any]:
    """A run folder's plan.json (``{}`` where it has none)."""
    try:
        found = json.loads((Path(folder) / "plan.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def read_corpus(path: str | Path) -> list[str]:
    """Texts to rank from a file: one per line, or JSON lines each with a ``text`` (else its first text value)."""
    found = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = line
        if isinstance(row, dict):
            texts = [row["text"]] if isinstance(row.get("text"), str) else [v for v in row.values() if isinstance(v, str)]
            if not texts:
                raise SpecError(f"{path}: line {number} has no text (got {line[:80]!r}); give a 'text' field")
            row = texts[0]
        found.append(row if isinstance(row, str) else str(row))
    return found


def read_inputs(path: str | Path, task: str) -> list[Any]:
    """Inputs from a file: one text per line, or JSON lines with the task's columns (QA: question, context)."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    columns = [c for c in TASKS[task].columns if c is not None]
    found = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            found.append(line)
            continue
        if not isinstance(row, dict):
            found.append(row)
        else:
            named = tuple(row[c] for c in columns[: TASKS[task].inputs])
            found.append(named if len(named) > 1 else named[0])
    return found
