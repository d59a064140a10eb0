"""Sweep searches: the values each trial takes. A grid of choices, random draws from choices and
ranges, or a study's suggestions (Optuna's ``Trial``, passed in). Pure: imports nothing heavy and
touches no file.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import SpecError

__all__ = ["LOWER", "Range", "best", "better", "grid", "parse_range", "random_trials", "suggest"]

LOWER = frozenset({"loss", "perplexity", "mse", "mae", "rmse", "seconds", "runtime", "error"})
"""Words of a metric's name that make lower better (``eval_loss``, ``eval_perplexity``, ``eval_mse``)."""
HIGHER = frozenset({"accuracy", "f1", "precision", "recall", "exact", "ndcg", "mrr", "map", "spearman", "pearson"})
"""Words that make higher better (``eval_accuracy``, ``eval_macro_f1``, ``eval_cosine_ndcg@10``, ``eval_spearman``)."""


def better(metric: str, maximize: bool | None = None) -> str:
    """``"maximize"`` or ``"minimize"``: what the caller says (``maximize``), else what the metric's name says.
    Raises `SpecError` for a metric whose name says neither, with no direction given.

    >>> better("eval_loss"), better("eval_cosine_ndcg@10"), better("eval_accuracy", maximize=False)
    ('minimize', 'maximize', 'minimize')
    """
    if maximize is not None:
        return "maximize" if maximize else "minimize"
    words = set(re.split(r"[_@.\-]", metric.lower()))
    if words & LOWER:
        return "minimize"
    if words & HIGHER:
        return "maximize"
    raise SpecError(f"--metric {metric!r}: which way is better is not known; add --maximize or --minimize "
                    f"(lower is better for names with {', '.join(sorted(LOWER))}; higher for {', '.join(sorted(HIGHER))})")


def best(rows: list[Mapping[str, Any]], metric: str, direction: str) -> Mapping[str, Any] | None:
    """The row with the best ``metric`` (``direction``: `better`'s), of those that report it and were not pruned."""
    scored = [r for r in rows if metric in r and not r.get("pruned")]
    if not scored:
        return None
    return (max if direction == "maximize" else min)(scored, key=lambda r: r[metric])


@dataclass(frozen=True)
class Range:
    """Values from ``low`` to ``high``: whole numbers when both are, evenly on a log scale with ``log``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def draw(self, rnd: random.Random) -> float | int:
        if self.integer:
            if self.log:
                return min(int(round(math.exp(rnd.uniform(math.log(self.low), math.log(self.high))))), int(self.high))
            return rnd.randint(int(self.low), int(self.high))
        if self.log:
            return math.exp(rnd.uniform(math.log(self.low), math.log(self.high)))
        return rnd.uniform(self.low, self.high)


def parse_range(text: str) -> tuple[str, Range]:
    """``key=low:high`` or ``key=low:high:log`` (e.g. ``training.learning_rate=1e-5:1e-3:log``)."""
    key, _, bounds = text.partition("=")
    parts = bounds.split(":")
    expected = f"--range: expected key=low:high or key=low:high:log (got {text!r})"
    if not key or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
        raise SpecError(expected)
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise SpecError(expected) from None
    log = len(parts) == 3
    if not low < high:
        raise SpecError(f"--range {key}: low ({parts[0]}) must be below high ({parts[1]})")
    if log and low <= 0:
        raise SpecError(f"--range {key}: a log range needs low > 0 (got {parts[0]})")
    integer = all(p.lstrip("-").isdigit() for p in parts[:2])
    return key, Range(low, high, log=log, integer=integer)


def grid(choices: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the choices, the first axis slowest."""
    return [dict(zip(choices, combo)) for combo in itertools.product(*choices.values())]


def random_trials(
    choices: Mapping[str, list[Any]], ranges: Mapping[str, Range], trials: int, seed: int = 0
) -> list[dict[str, Any]]:
    """``trials`` independent draws: one of each axis' choices, a value from each range."""
    rnd = random.Random(seed)
    return [
        {**{k: rnd.choice(v) for k, v in choices.items()}, **{k: r.draw(rnd) for k, r in ranges.items()}}
        for _ in range(trials)
    ]


def suggest(trial: Any, choices: Mapping[str, list[Any]], ranges: Mapping[str, Range]) -> dict[str, Any]:
    """One trial's values, asked of an Optuna ``Trial`` (its sampler learns from the trials before)."""
    found: dict[str, Any] = {}
    for key, values in choices.items():
        index = trial.suggest_categorical(key, list(range(len(values))))  # any value, not only what Optuna stores
        found[key] = values[index]
    for key, r in ranges.items():
        if r.integer:
            found[key] = trial.suggest_int(key, int(r.low), int(r.high), log=r.log)
        else:
            found[key] = trial.suggest_float(key, r.low, r.high, log=r.log)
    return found
