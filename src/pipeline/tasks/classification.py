"""Text classification: one label per text (or text pair): classes, a multi-label vector, or a
regression value, read from the label column. Metrics with scikit-learn."""

from __future__ import annotations

import math
from typing import Any

from pipeline.errors import DataError
from pipeline.tasks.task import Kit, Labels, Task, shown, text_problems, texts


def read_labels(values: list[Any], field: str, where: Any = None) -> Labels:
    """Detect single-label classes (ints or strings), multi-label vectors or regression floats.

    ``where(i)`` names row ``i`` of ``values`` (default: "row i+1"). A label column that
    would silently change the task (a missing value, one class, empty vectors) is refused.
    """
    where = where or (lambda i: f"row {i + 1}")
    kinds = [_label_kind(v) for v in values]
    if None in kinds:
        row = kinds.index(None)
        raise DataError(
            f"{field}: label {values[row]!r} in {where(row)} is not a class (int or string), a regression value "
            "(float) or a multi-label vector (list of 0/1); fill or drop the row"
        )
    if len(set(kinds)) > 1:
        raise DataError(
            f"{field}: labels mix {' and '.join(sorted(set(kinds)))} ({where(kinds.index(kinds[0]))}: {values[0]!r}, "
            f"{where(next(i for i, k in enumerate(kinds) if k != kinds[0]))}: "
            f"{next(v for v, k in zip(values, kinds) if k != kinds[0])!r}); use one kind of label for every row"
        )
    kind = kinds[0]
    if kind == "string":  # a CSV reads a column of ints and words as text: the same mix JSON is refused for
        numbers = [i for i, v in enumerate(values) if v.strip().lstrip("-").isdigit()]
        if numbers and len(numbers) < len(values):
            word = next(i for i, v in enumerate(values) if not v.strip().lstrip("-").isdigit())
            raise DataError(
                f"{field}: labels mix numbers and words ({where(numbers[0])}: {values[numbers[0]]!r}, "
                f"{where(word)}: {values[word]!r}); use one kind of label for every row (all names, or all ids)"
            )
    if kind == "float" and set(values) <= {0.0, 1.0}:
        row = next(i for i, v in enumerate(values) if isinstance(v, float))
        raise DataError(
            f"{field}: labels are floats that are all 0.0 or 1.0 ({where(row)}: {values[row]!r}), which would be "
            "read as a regression target; for two classes give ints 0 and 1 (a regression target is read as "
            "one when its values are not all 0 and 1)"
        )
    if kind == "vector":
        sizes = {len(v) for v in values}
        if len(sizes) > 1:
            raise DataError(f"{field}: multi-label vectors differ in length ({sorted(sizes)}); give every row all labels")
        if sizes == {0}:
            raise DataError(f"{field}: the multi-label vectors are empty; give each row one 0/1 value per label")
        return Labels(sizes.pop(), "multi_label_classification")
    if kind == "float":
        return Labels(1, "regression")
    classes = tuple(sorted(set(values)))
    if len(classes) < 2:
        raise DataError(
            f"{field}: every row has the label {classes[0]!r}: one class cannot be learned (and would be read "
            "as regression); give rows of at least two classes"
        )
    if kind == "int" and classes == tuple(range(len(classes))):
        return Labels(len(classes))
    return Labels(len(classes), classes=classes)


def _label_kind(value: Any) -> str | None:
    if isinstance(value, int):  # bool too
        return "int"
    if isinstance(value, float):
        return None if math.isnan(value) else "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and v == v for v in value):
        return "vector"
    return None


def _check(dataset: Any, columns: tuple[str | None, ...], field: str) -> list[str]:
    return [problem for column in columns[:-1] if column for problem in text_problems(dataset, column, field)]


def _encode(batch, columns, tokenizer, maxlength, spec, labels, indices):
    text, pair, label = columns
    pairs = texts(batch, pair) if pair else None
    encoded = tokenizer(texts(batch, text), pairs, truncation=True, max_length=maxlength)
    encoded["labels"] = [labels.encode(v) for v in batch[label]]
    return encoded


def _collate(library: Any, tokenizer: Any, model: Any, seed: int) -> Any:
    return library.DataCollatorWithPadding(tokenizer)


def _distill(student: Any, teacher: Any, inputs: Any, kl: Any, problem: str | None) -> Any:
    s, t = student.logits, teacher.logits
    if problem == "regression":
        return (s.float() - t.float()).pow(2).flatten()
    if problem == "multi_label_classification":
        return kl.sigmoid(s, t).flatten()
    return kl.softmax(s, t)


def _score(labels: Labels | None, rows: Any, encoded: Any, columns: Any) -> tuple[Any, None]:
    problem = labels.problem_type if labels else None
    return {"regression": _regression, "multi_label_classification": _multi_label}.get(problem, _single_label), None


def _single_label(prediction: Any) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    predicted, truth = prediction.predictions.argmax(-1), prediction.label_ids
    return {"accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0))}


def _report(labels: Labels | None, prediction: Any) -> dict[str, Any] | None:
    """Precision, recall, F1 and support per class, and the confusion matrix (rows: the true class, columns:
    the predicted one), for single-label classes."""
    if labels is not None and labels.problem_type:
        return None
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    ids = list(range(prediction.predictions.shape[-1]))
    names = [labels.name(i) if labels else str(i) for i in ids]
    predicted, truth = prediction.predictions.argmax(-1), prediction.label_ids
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=ids, zero_division=0)
    rows = [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support)]
    return {"classes": rows, "confusion": {"labels": names, "matrix": confusion_matrix(truth, predicted, labels=ids).tolist()}}


def _multi_label(prediction: Any) -> dict[str, float]:
    from sklearn.metrics import f1_score

    predicted = (prediction.predictions > 0).astype(int)  # logit > 0: probability > 0.5
    return {"micro_f1": float(f1_score(prediction.label_ids.astype(int), predicted, average="micro", zero_division=0))}


def _regression(prediction: Any) -> dict[str, float]:
    from scipy.stats import pearsonr
    from sklearn.metrics import mean_squared_error

    predicted, truth = prediction.predictions.reshape(-1), prediction.label_ids.reshape(-1)
    pearson = float(pearsonr(predicted, truth)[0]) if len(truth) > 1 and truth.std() > 0 and predicted.std() > 0 else 0.0
    return {"mse": float(mean_squared_error(truth, predicted)), "pearson": pearson}


def _predict(items: list[Any], kit: Kit) -> list[dict[str, Any]]:
    config = kit.model.config
    found = []
    for item in items:
        logits = kit.model(**kit.tokenize(*(tuple(item) if isinstance(item, (list, tuple)) else (item,)))).logits[0]
        if config.problem_type == "regression" or config.num_labels == 1:
            found.append({"input": item, "value": float(logits[0])})
        elif config.problem_type == "multi_label_classification":
            scores = {config.id2label[i]: float(p) for i, p in enumerate(logits.sigmoid())}
            found.append({"input": item, "labels": [n for n, p in scores.items() if p > 0.5], "scores": scores})
        else:
            scores = {config.id2label[i]: float(p) for i, p in enumerate(logits.softmax(-1))}
            label = max(scores, key=scores.get)
            found.append({"input": item, "label": label, "score": scores[label], "scores": scores})
    return found


TASK = Task(
    name="text-classification",
    model_class="AutoModelForSequenceClassification",
    lora_task="SEQ_CLS",
    collator="DataCollatorWithPadding",
    columns=("text", None, "label"),
    column_counts=(2, 3),
    metrics="accuracy, macro_f1 (multi-label: micro_f1; regression: mse, pearson), with scikit-learn",
    metric_names=("accuracy", "macro_f1", "micro_f1", "mse", "pearson"),
    distillation="KL of softmax(logits/T) per example (multi-label: KL of sigmoid(logits/T) per label; "
    "regression: squared error to the teacher's output)",
    encode=_encode,
    collate=_collate,
    distill=_distill,
    predict=_predict,
    check=_check,
    score=_score,
    report=_report,
    read_labels=read_labels,
    said=lambda p: (f"{p['label']} ({p['score']:.2f})  {shown(p)}" if "label" in p
                    else f"{', '.join(p['labels']) or '(none)'}  {shown(p)}" if "labels" in p
                    else f"{p['value']:.4g}  {shown(p)}"),
    head=lambda hidden, labels: hidden * (hidden + labels),  # pooler and classifier
    heads=("classifier", "score", "pre_classifier", "pooler.dense", "classification_head", "logits_proj"),
    roles=("text", "text_pair", "label"),
    hub_tag="text-classification",
)
