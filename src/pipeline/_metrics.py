"""Default evaluation metrics per task, computed with scikit-learn (maintained, and already what
users compare against); a spec's own ``metrics`` function replaces them.

Imports numpy and scikit-learn inside the functions: only the stages use this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["default_metrics", "perplexity"]


def default_metrics(task: str, problem_type: str | None) -> Callable[[Any], dict[str, float]] | None:
    """The ``compute_metrics`` function for ``task`` (classification only: the others need no logits)."""
    if task != "text-classification":
        return None
    if problem_type == "regression":
        return _regression
    if problem_type == "multi_label_classification":
        return _multi_label
    return _single_label


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
