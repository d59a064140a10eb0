"""Using a trained model: predictions for a few inputs, or the task's metrics on a data file,
from a `Run` or a run folder.

The shell: loads models (a run folder's full model, or its adapter merged into the base)
and runs them. Inputs are texts, or for question answering ``(question, context)`` pairs
(a text pair for pair classification). Each prediction is a plain dict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._hush import hushed
from .errors import SpecError
from .tasks import TASKS, saved_class

__all__ = ["evaluate", "predict", "read_inputs", "run_task"]

GENERATED_TOKENS = 32
"""New tokens generated per input (language generation, sequence to sequence)."""


def predict(run: Any, inputs: list[Any], task: str | None = None) -> list[dict[str, Any]]:
    """One prediction per input, by task:

    - text-classification: ``label`` and ``score``, with ``scores`` of every label (multi-label:
      ``labels`` above 0.5; regression: ``value``)
    - language-generation / sequence-sequence: ``text``, greedy, up to 32 new tokens
    - language-modeling: ``fills``, per mask token of the input, its five likeliest tokens
    - question-answering: ``answer`` (``""`` for no answer) and ``score``
    - token-detection: ``tokens``, each with the probability it was ``replaced``

    ``run`` is a trained `Run` or a run folder (``task`` then comes from its spec.yaml).
    """
    import torch

    model, tokenizer, task = _model(run, task)
    model.eval()
    with torch.no_grad():
        return [_one(task, model, tokenizer, item) for item in inputs]


SPEC_FIELDS = ("task", "columns", "maxlength", "stride", "prefix", "merge", "metrics")
"""What evaluation takes from the run's spec: how its data is read and scored."""


def evaluate(run: Any, source: Any, task: str | None = None) -> dict[str, float]:
    """``eval_loss`` and the task's metrics (or the run's own ``metrics`` function) of a trained run on
    ``source`` (a data file, rows, a DataFrame or a Dataset with the columns it trained on).

    Raises `DataError` for data the run cannot read (missing columns, labels it does not know).
    """
    from ._frozen import thaw
    from ._metrics import perplexity
    from ._trainer import Arguments, Trainer, quiet_progress
    from .data import encode, problems, read
    from .errors import DataError
    from .specs import Spec
    from .stages import collator, scoring

    if hasattr(run, "spec"):
        document = {k: thaw(v) for k, v in run.spec if k in SPEC_FIELDS}
    else:
        document = {k: v for k, v in _spec_document(run).items() if k in SPEC_FIELDS}
    model, tokenizer, task = _model(run, task or document.get("task"))
    spec = Spec(**{**document, "task": task, "base": "run", "train": source})
    dataset = read(spec.train, "data")
    found = problems(dataset, spec, "data")
    labels = None
    if task == "text-classification" and not found:
        labels, dataset = _labels(model.config, dataset, spec, found)
    if found:
        raise DataError(found)
    maxlength = spec.maxlength or min(getattr(tokenizer, "model_max_length", 512), 512)
    encoded, scores = scoring(spec, labels, dataset, encode(dataset, spec, tokenizer, maxlength, labels, windows=True))
    args = Arguments(output_dir="", report_to="none", per_device_eval_batch_size=16, disable_tqdm=True,
                     use_cpu=str(model.device) == "cpu")
    trainer = Trainer(model=model, args=args, data_collator=collator(task, tokenizer, model),
                      processing_class=tokenizer, **scores)
    quiet_progress(trainer)
    metrics = trainer.evaluate(encoded)
    return metrics | perplexity(task, metrics)


def _labels(config: Any, dataset: Any, spec: Any, found: list[str]) -> tuple[Any, Any]:
    """The model's own label mapping (its names, else ids), every label of the data checked against it;
    returns it with the dataset (its labels as text where the model names them)."""
    from .data import Labels, columns

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
def _model(run: Any, task: str | None) -> tuple[Any, Any, str]:
    if hasattr(run, "model") and hasattr(run, "spec"):
        model = run.model.discriminator if run.spec.task == "token-detection" else run.model
        return model, run.tokenizer, task or run.spec.task
    import transformers

    from .files import config_file
    from .runs import is_adapter, merged

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
    return model, tokenizer, task


def run_task(folder: str | Path) -> str:
    """The task of a run folder, from its spec.yaml."""
    return _spec_document(folder)["task"]


def _spec_document(folder: str | Path) -> dict[str, Any]:
    """A run folder's spec.yaml, which names its task."""
    import yaml

    try:
        document = yaml.safe_load((Path(folder) / "spec.yaml").read_text())
    except (OSError, yaml.YAMLError):
        document = None
    if not isinstance(document, dict) or "task" not in document:
        raise SpecError(f"predict: {str(folder)!r} has no spec.yaml to name its task; give a run folder")
    return document


def _one(task: str, model: Any, tokenizer: Any, item: Any) -> dict[str, Any]:
    if task == "question-answering":
        return _answer(model, tokenizer, item)
    texts = tuple(item) if isinstance(item, (list, tuple)) else (item,)
    batch = tokenizer(*texts, truncation=True, return_tensors="pt").to(model.device)
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


def _answer(model: Any, tokenizer: Any, item: Any) -> dict[str, Any]:
    """The likeliest span of the context (as training windows put it: second, or first for
    left-padding tokenizers), or ``""`` where no answer scores higher; its probability."""
    import math

    from ._metrics import best_span
    from .data import cls_position

    question, context = item
    right = tokenizer.padding_side == "right"
    batch = tokenizer(*((question, context) if right else (context, question)), truncation="only_second" if right
                      else "only_first", return_offsets_mapping=True, return_tensors="pt")
    offsets = batch.pop("offset_mapping")[0].tolist()
    inside = [sequence == (1 if right else 0) for sequence in batch.sequence_ids(0)]
    output = model(**batch.to(model.device))
    start, end = output.start_logits[0].float(), output.end_logits[0].float()
    ids = batch["input_ids"][0].tolist()
    first, last, score, null = best_span(start.tolist(), end.tolist(), inside, cls_position(ids, tokenizer))
    normal = float(start.logsumexp(-1) + end.logsumexp(-1))  # log of the softmax denominators
    if first < 0 or null >= score:
        return {"input": item, "answer": "", "score": math.exp(null - normal)}
    return {"input": item, "answer": context[offsets[first][0] : offsets[last][1]], "score": math.exp(score - normal)}


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
