"""Default evaluation metrics per task; a spec's own ``metrics`` function replaces them.

Classification with scikit-learn (maintained, and already what users compare against);
question answering SQuAD's exact match and F1, written out here: the reference script is a
few lines, and ``evaluate``'s copy of it is fetched from the Hub, which these runs cannot
reach; sequence to sequence the share of target tokens predicted right.

Imports numpy and scikit-learn inside the functions: only the stages use this module.
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Windows", "best_answers", "best_span", "default_metrics", "perplexity", "predicted_ids"]

LONGEST_ANSWER = 30
"""Tokens in the longest answer span considered (SQuAD's reference scripts use 30)."""


@dataclass(frozen=True)
class Windows:
    """What scoring question answering needs besides the logits: per window (in evaluation order)
    its example, its CLS position and each token's character span in the context (``None`` off
    the context); per example its context and its answers (``("",)`` for none)."""

    example: Sequence[int]
    cls: Sequence[int]
    offsets: Sequence[Sequence[Sequence[int] | None]]
    contexts: Sequence[str]
    answers: Sequence[Sequence[str]]


def default_metrics(task: str, problem_type: str | None, windows: Windows | None = None
                    ) -> Callable[[Any], dict[str, float]] | None:
    """The ``compute_metrics`` function for ``task``; ``None`` where the loss says it all (the language
    models' perplexity comes from the loss: `perplexity`)."""
    if task == "question-answering":
        return (lambda prediction: _squad(prediction, windows)) if windows else None
    if task == "sequence-sequence":
        return _token_accuracy
    if task != "text-classification":
        return None
    if problem_type == "regression":
        return _regression
    if problem_type == "multi_label_classification":
        return _multi_label
    return _single_label


def predicted_ids(task: str) -> Callable[[Any, Any], Any] | None:
    """The Trainer's ``preprocess_logits_for_metrics`` for ``task``: sequence to sequence keeps the
    argmax of each position, not a vocabulary of logits per target token."""
    if task != "sequence-sequence":
        return None
    return lambda logits, labels: (logits[0] if isinstance(logits, tuple) else logits).argmax(-1)


def _single_label(prediction: Any) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    predicted, truth = prediction.predictions.argmax(-1), prediction.label_ids
    return {"accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0))}


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


def perplexity(task: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """``eval_perplexity`` (exp of the mean token loss) for the language-model tasks that have it."""
    if task not in ("language-generation", "language-modeling") or "eval_loss" not in metrics:
        return {}
    return {"eval_perplexity": math.exp(min(metrics["eval_loss"], 700))}


def _token_accuracy(prediction: Any) -> dict[str, float]:
    predicted, truth = prediction.predictions, prediction.label_ids
    scored = truth != -100
    return {"token_accuracy": float((predicted[scored] == truth[scored]).mean()) if scored.any() else 0.0}


def best_span(start: Any, end: Any, context: Any, cls: int) -> tuple[int, int, float, float]:
    """The likeliest answer in one window: ``(first, last, score, null)``, token positions of the
    best span inside the context (``last - first < LONGEST_ANSWER``), its score (start + end logit)
    and the no-answer score (both at CLS). ``first`` is -1 when the window holds no context."""
    import numpy as np

    start, end, context = np.asarray(start, dtype=float), np.asarray(end, dtype=float), np.asarray(context, dtype=bool)
    null = float(start[cls] + end[cls])
    scores = start[:, None] + end[None, :]
    n = len(start)
    inside = np.triu(np.ones((n, n), dtype=bool)) & ~np.triu(np.ones((n, n), dtype=bool), LONGEST_ANSWER)
    inside &= context[:, None] & context[None, :]
    if not inside.any():
        return -1, -1, -math.inf, null
    scores = np.where(inside, scores, -np.inf)
    first, last = divmod(int(scores.argmax()), n)
    return first, last, float(scores[first, last]), null


def best_answers(starts: Any, ends: Any, windows: Windows) -> list[tuple[str, int, float]]:
    """Per example: its answer (``""`` for none), the window it comes from and its score (start + end
    logit): the best span over its windows, or no answer where CLS scores higher than every span (the
    least no-answer score of its windows, as SQuAD's reference post-processing does)."""
    best: dict[int, tuple[float, int, str]] = {}
    null: dict[int, tuple[float, int]] = {}
    for i, example in enumerate(windows.example):
        offsets = windows.offsets[i]
        n = len(offsets)
        context = [o is not None for o in offsets]
        first, last, score, none = best_span(starts[i][:n], ends[i][:n], context, windows.cls[i])
        if none < null.get(example, (math.inf, -1))[0]:
            null[example] = (none, i)
        if first >= 0 and score > best.get(example, (-math.inf, -1, ""))[0]:
            best[example] = (score, i, windows.contexts[example][offsets[first][0] : offsets[last][1]])
    found = []
    for example in range(len(windows.contexts)):
        score, window, text = best.get(example, (-math.inf, -1, ""))
        none, none_window = null.get(example, (math.inf, -1))
        found.append((text, window, score) if score > none else ("", none_window, none))
    return found


def _squad(prediction: Any, windows: Windows) -> dict[str, float]:
    """SQuAD (v2 when some questions have no answer) exact match and F1 per question, of `best_answers`."""
    starts, ends = prediction.predictions[:2]
    exact, f1 = [], []
    for (answer, _, _), answers in zip(best_answers(starts, ends, windows), windows.answers):
        exact.append(max(float(_normal(answer) == _normal(a)) for a in answers))
        f1.append(max(_f1(answer, a) for a in answers))
    return {"exact_match": sum(exact) / len(exact) if exact else 0.0, "f1": sum(f1) / len(f1) if f1 else 0.0}


def _normal(text: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _f1(predicted: str, truth: str) -> float:
    """SQuAD's token F1 of two answers; both empty (no answer) is 1."""
    p, t = _normal(predicted).split(), _normal(truth).split()
    if not p or not t:
        return float(p == t)
    common = sum((collections.Counter(p) & collections.Counter(t)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)
