"""search.py: the values each sweep trial takes (grid, random draws, Optuna's suggestions)."""

import math

import optuna
import pytest

from pipeline import SpecError
from pipeline.core.search import Range, grid, parse_range, random_trials, suggest


def test_ranges_parse_with_their_scale_and_kind():
    assert parse_range("training.learning_rate=1e-5:1e-3:log") == (
        "training.learning_rate", Range(1e-5, 1e-3, log=True, integer=False))
    assert parse_range("lora.r=4:64") == ("lora.r", Range(4, 64, log=False, integer=True))
    for bad, said in (("lr=1:", "expected key=low:high"), ("lr=2:1", "must be below high"),
                      ("lr=0:1:log", "needs low > 0"), ("lr=1:2:ln", "expected"), ("=1:2", "expected")):
        with pytest.raises(SpecError, match=said):
            parse_range(bad)


def test_a_grid_is_every_combination():
    assert grid({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]


def test_random_trials_draw_within_the_ranges_reproducibly():
    ranges = {"lr": Range(1e-5, 1e-1, log=True), "r": Range(4, 64, integer=True)}
    trials = random_trials({"opt": ["adamw", "sgd"]}, ranges, 400, seed=1)
    assert trials == random_trials({"opt": ["adamw", "sgd"]}, ranges, 400, seed=1)
    assert trials != random_trials({"opt": ["adamw", "sgd"]}, ranges, 400, seed=2)
    assert all(1e-5 <= t["lr"] <= 1e-1 and isinstance(t["r"], int) and 4 <= t["r"] <= 64 for t in trials)
    assert {t["opt"] for t in trials} == {"adamw", "sgd"}
    below = sum(t["lr"] < 1e-3 for t in trials) / len(trials)  # log scale: half the draws below the middle decade
    assert 0.4 < below < 0.6
    assert math.isclose(sum(t["r"] for t in trials) / len(trials), 34, rel_tol=0.1)


def test_optuna_suggests_from_the_same_choices_and_ranges():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    choices = {"training.optim": ["adamw_torch", "sgd"], "lora": [True, {"r": 4}]}
    ranges = {"training.learning_rate": Range(1e-4, 1e-2, log=True), "lora.r": Range(2, 8, integer=True)}
    for _ in range(20):
        values = suggest(study.ask(), choices, ranges)
        assert values["training.optim"] in choices["training.optim"] and values["lora"] in choices["lora"]
        assert 1e-4 <= values["training.learning_rate"] <= 1e-2 and 2 <= values["lora.r"] <= 8
