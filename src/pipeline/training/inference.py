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
from pipeline.core.errors import SpecError
from pipeline.tasks import TASKS, saved_class

__all__ = ["evaluate", "predict", "read_inputs", "run_task"]

GENERATED_TOKENS = 32
"""New tokens generated per input (language generation, sequence to sequence)."""


def predict(run: Any, inputs: list[Any], task: str | None = None, hardware: Any = None) -> list[dict[str, Any]]:
    """One prediction per input, by task:

    - text-classification: ``label`` and ``score``, with ``scores`` of every label (multi-label:
      ``labels`` above 0.5; regression: ``value``)
    - language-generation / sequence-sequence: ``text``, greedy, up to 32 new tokens
    - language-modeling: ``fills``, per mask token of the input, its five likeliest tokens
    - question-answering: ``answer`` (``""`` for no answer) and ``score``
    - token-detection: ``tokens``, each with the probability it was ``replaced``

    ``run`` is a trained `Run` or a run folder (``task`` then comes from its spec.yaml). Inputs are
    prepared as the run's training prepared its data: its ``prefix``, its ``maxlength``, and for
    question answering its strided windows over a long context. A folder's model goes to the GPU
    where ``hardware`` (default: this machine) has one.
    """
    import torch

    model, tokenizer, document, length, _ = _prepared(run, task, hardware)
    model.eval()
    with torch.no_grad():
        if document["task"] == "question-answering":
            return _answers(model, tokenizer, document, length, inputs)
        return [_one(document, model, tokenizer, length, item) for item in inputs]


SPEC_FIELDS = ("task", "columns", "maxlength", "stride", "prefix", "merge", "metrics")
"""What evaluation and predict take from the run's spec: how its data is read and scored."""


def _prepared(run: Any, task: str | None, hardware: Any) -> tuple[Any, Any, dict[str, Any], int, int | None]:
    """The run's model and tokenizer, the spec fields that say how its inputs were prepared
    (`SPEC_FIELDS`, with the task), the length training cut them to (`stages.maxlength`) and the
    plan's evaluation batch size (``None`` where it set none)."""
    from pipeline.core.frozen import thaw
    from pipeline.training.stages import maxlength

    if hasattr(run, "spec"):
        document, planned = {k: thaw(v) for k, v in run.spec if k in SPEC_FIELDS}, run.plan.model_dump(mode="json")
    else:
        found = _spec_document(run, required=task is None)
        document, planned = {k: v for k, v in found.items() if k in SPEC_FIELDS}, _plan(run)
    model, tokenizer, task = _model(run, task or document.get("task"), hardware)
    document["task"] = task
    length = maxlength(document.get("maxlength"), planned.get("maxlength"), tokenizer, [model.config])
    return model, tokenizer, document, length, (planned.get("training_args") or {}).get("per_device_eval_batch_size")


def evaluate(run: Any, source: Any, task: str | None = None, hardware: Any = None) -> dict[str, float]:
    """``eval_loss`` and the task's metrics (or the run's own ``metrics`` function) of a trained run on
    ``source`` (a data file, rows, a DataFrame or a Dataset with the columns it trained on), its data
    prepared as training prepared it (the same length, windows and prefix).

    Raises `DataError` for data the run cannot read (missing columns, labels it does not know).
    """
    from pipeline.tasks.metrics import perplexity
    from pipeline.training.trainer import Arguments, Trainer, quiet_progress
    from pipeline.io.data import encode, problems, read
    from pipeline.core.errors import DataError
    from pipeline.core.spec import Spec
    from pipeline.training.stages import collator, scoring

    model, tokenizer, document, length, batch = _prepared(run, task, hardware)
    task = document["task"]
    spec = Spec(**{**document, "base": "run", "train": source})
    dataset = read(spec.train, "data")
    found = problems(dataset, spec, "data")
    labels = None
    if task == "text-classification" and not found:
        labels, dataset = _labels(model.config, dataset, spec, found)
    if found:
        raise DataError(found)
    encoded, scores = scoring(spec, labels, dataset, encode(dataset, spec, tokenizer, length, labels, windows=True))
    # the training's evaluation batch: a token loss is averaged per batch, so another size scores otherwise
    args = Arguments(output_dir="", report_to="none", disable_tqdm=True, use_cpu=str(model.device) == "cpu",
                     **({"per_device_eval_batch_size": batch} if batch else {}))
    trainer = Trainer(model=model, args=args, data_collator=collator(task, tokenizer, model),
                      processing_class=tokenizer, **scores)
    quiet_progress(trainer)
    metrics = trainer.evaluate(encoded)
    return metrics | perplexity(task, metrics)


def _labels(config: Any, dataset: Any, spec: Any, found: list[str]) -> tuple[Any, Any]:
    """The model's own label mapping (its names, else ids), every label of the data checked against it;
    returns it with the dataset (its labels as text where the model names them)."""
    from pipeline.io.data import Labels, columns

    problem = config.problem_type
    if problem in ("regression", "multi_label_classification") or config.num_labels == 1:
        return Labels(config.num_labels, problem or "regression"), dataset
    column = columns(spec)[2]
    names = [config.id2label[i] for i in range(config.num_labels)]
    named = names != [f"LABEL_{i}" for i in range(config.num_labels)]
    if named:  # trained on text labels, or on ids that are not 0..n-1 (saved as their text)
        dataset = dataset.map(lambda batch: {column: [str(v) for v in batch[column]]}, batched=True)
    known = names if named else list(range(config.num_labels))
    unknown = sorted({str(v) for v in dataset[column] if v not in known})
    if unknown:
        found.append(f"data: column {column!r}: labels {unknown[:5]} are not the model's ({', '.join(map(str, known))})")
    return Labels(config.num_labels, classes=tuple(names) if named else None), dataset


@hushed()
def _model(run: Any, task: str | None, hardware: Any = None) -> tuple[Any, Any, str]:
    if hasattr(run, "model") and hasattr(run, "spec"):
        model = run.model.discriminator if run.spec.task == "token-detection" else run.model
        return model, run.tokenizer, task or run.spec.task
    import transformers

    from pipeline.io.files import config_file
    from pipeline.io.runs import is_adapter
    from pipeline.training.saved import merged

    folder = Path(run)
    if not config_file(folder).is_file() and not is_adapter(folder):
        raise SpecError(f"predict: {str(folder)!r} holds no model (no config.json); give a run folder")
    task = task or run_task(folder)
    if task not in TASKS:
        raise SpecError(f"predict: unknown task {task!r} (tasks: {', '.join(TASKS)})")
    if is_adapter(folder):
        model = merged(folder)
    else:
        model = getattr(transformers, saved_class(task)).from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    from pipeline.training.detect import detect

    if (hardware if hardware is not None else detect()).cuda:
        model = model.to(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    return model, tokenizer, task


def run_task(folder: str | Path) -> str:
    """The task of a run folder, from its spec.yaml."""
    return _spec_document(folder)["task"]


def _spec_document(folder: str | Path, required: bool = True) -> dict[str, Any]:
    """A run folder's spec.yaml, which names its task (``{}`` where it has none and none is ``required``)."""
    import yaml

    try:
        document = yaml.safe_load((Path(folder) / "spec.yaml").read_text())
    except (OSError, yaml.YAMLError):
        document = None
    if not isinstance(document, dict) or "task" not in document:
        if not required:
            return {}
        raise SpecError(f"predict: {str(folder)!r} has no spec.yaml to name its task; give a run folder")
    return document


def _plan(folder: str | Path) -> dict[str, Any]:
    """A run folder's plan.json (``{}`` where it has none)."""
    try:
        found = json.loads((Path(folder) / "plan.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _one(document: dict[str, Any], model: Any, tokenizer: Any, length: int, item: Any) -> dict[str, Any]:
    task = document["task"]
    texts = tuple(item) if isinstance(item, (list, tuple)) else (item,)
    if task == "sequence-sequence" and document.get("prefix"):  # as `data._sequences` prefixes each source
        texts = (f"{document['prefix']}{texts[0]}", *texts[1:])
    batch = tokenizer(*texts, truncation=True, max_length=length, return_tensors="pt").to(model.device)
    if task in ("language-generation", "sequence-sequence"):
        batch.pop("token_type_ids", None)
        out = model.generate(**batch, max_new_tokens=GENERATED_TOKENS, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        new = out[0][batch["input_ids"].shape[1] :] if task == "language-generation" else out[0]
        return {"input": item, "text": tokenizer.decode(new, skip_special_tokens=True).strip()}
    logits = model(**batch).logits[0]
    if task == "language-modeling":
        masked = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
        if not masked:
            raise SpecError(f"predict: language-modeling fills {tokenizer.mask_token!r} tokens; {item!r} has none")
        fills = []
        for position in masked:
            top = logits[position].softmax(-1).topk(5)
            fills.append([{"token": tokenizer.decode([i]).strip(), "score": float(p)}
                          for p, i in zip(top.values, top.indices)])
        return {"input": item, "fills": fills}
    if task == "token-detection":
        replaced = logits.sigmoid().tolist()
        tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
        return {"input": item, "tokens": [{"token": t, "replaced": p} for t, p in zip(tokens, replaced)]}
    names = model.config.id2label
    problem = model.config.problem_type
    if problem == "regression" or model.config.num_labels == 1:
        return {"input": item, "value": float(logits[0])}
    if problem == "multi_label_classification":
        scores = {names[i]: float(p) for i, p in enumerate(logits.sigmoid())}
        return {"input": item, "labels": [n for n, p in scores.items() if p > 0.5], "scores": scores}
    scores = {names[i]: float(p) for i, p in enumerate(logits.softmax(-1))}
    label = max(scores, key=scores.get)
    return {"input": item, "label": label, "score": scores[label], "scores": scores}


def _answers(model: Any, tokenizer: Any, document: dict[str, Any], length: int, items: list[Any]
             ) -> list[dict[str, Any]]:
    """Each (question, context) cut into windows as training cut them (`data.encode`: its order, length
    and stride), the best span over them as evaluation picks it (`_metrics.best_answers`), or ``""``
    where no answer scores higher; its probability within its window."""
    import math

    import torch
    from datasets import Dataset

    from pipeline.tasks.metrics import Windows, best_answers
    from pipeline.io.data import WINDOW_COLUMNS, encode
    from pipeline.core.spec import Spec
    from pipeline.training.stages import collator

    rows = [{"question": question, "context": context, "answers": None} for question, context in items]
    spec = Spec(**{**document, "columns": None, "base": "run", "train": rows})
    encoded = encode(Dataset.from_list(rows), spec, tokenizer, length, windows=True)
    windows = Windows(encoded["example"], encoded["cls"], encoded["offsets"], [r["context"] for r in rows],
                      [("",)] * len(rows))
    features = encoded.remove_columns([*WINDOW_COLUMNS, "start_positions", "end_positions"])
    collate, starts, ends = collator("question-answering", tokenizer, model), [], []
    for i in range(0, len(features), 16):
        batch = collate([features[j] for j in range(i, min(i + 16, len(features)))]).to(model.device)
        output = model(**batch)
        starts += output.start_logits.float().cpu().tolist()
        ends += output.end_logits.float().cpu().tolist()
    found = []
    for item, (answer, window, score) in zip(items, best_answers(starts, ends, windows)):
        n = len(windows.offsets[window])  # the window's own tokens, not the batch's padding
        normal = sum(float(torch.tensor(logits[window][:n]).logsumexp(0)) for logits in (starts, ends))
        found.append({"input": item, "answer": answer, "score": math.exp(score - normal)})
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
        if task == "question-answering":
            found.append((row[columns[0]], row[columns[1]]))
        else:
            found.append(row[columns[0]] if isinstance(row, dict) else row)
    return found
