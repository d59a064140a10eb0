"""Default metrics per task: scikit-learn's, on the validation data, named in the plan."""

import math

import numpy as np
import pytest
from transformers import EvalPrediction

from pipeline import Hardware, Spec, fine_tune, plan, start
from pipeline._metrics import default_metrics, perplexity
from pipeline.testing import sentences, sentiment

CPU = Hardware()


def test_single_label_accuracy_and_macro_f1():
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    result = default_metrics("text-classification", None)(EvalPrediction(logits, np.array([0, 1, 1, 0])))
    assert result["accuracy"] == 0.75
    assert result["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)  # class 0: P 2/3 R 1; class 1: P 1 R 1/2


def test_multi_label_micro_f1_and_regression():
    multi = default_metrics("text-classification", "multi_label_classification")
    assert multi(EvalPrediction(np.array([[3.0, -3.0], [3.0, 3.0]]), np.array([[1.0, 0.0], [1.0, 1.0]]))) == {
        "micro_f1": 1.0}
    regression = default_metrics("text-classification", "regression")(
        EvalPrediction(np.array([[1.0], [2.0], [3.0]]), np.array([1.0, 2.0, 4.0])))
    assert regression["mse"] == pytest.approx(1 / 3) and 0.9 < regression["pearson"] < 1.0


def test_language_models_report_perplexity_and_others_no_default():
    assert perplexity("language-generation", {"eval_loss": 2.0}) == {"eval_perplexity": math.exp(2.0)}
    assert perplexity("text-classification", {"eval_loss": 2.0}) == {}
    assert default_metrics("question-answering", None) is None


def test_the_plan_names_the_metrics():
    rows = sentiment(4)
    assert "accuracy" in plan(Spec(base="m", train=rows), CPU).metrics
    assert plan(Spec(base="m", train=rows, metrics="mod:fn"), CPU).provenance["metrics"].source == "user"
    assert plan(Spec(base="m", task="language-generation", train=rows), CPU).metrics == "perplexity"


def test_a_classification_run_reports_accuracy_and_a_language_model_perplexity(models):
    classified = fine_tune(start(Spec(base=models["bert"], train=sentiment(32), validation=sentiment(16, 1),
                                      training={"max_steps": 2, "disable_tqdm": True}), CPU))
    assert 0 <= classified.metrics["eval_accuracy"] <= 1 and "eval_macro_f1" in classified.metrics
    texts = [{"text": t} for t in sentences(32)]
    generated = fine_tune(start(Spec(base=models["llama"], task="language-generation", train=texts,
                                     validation=texts[:8], maxlength=16,
                                     training={"max_steps": 2, "disable_tqdm": True}), CPU))
    assert generated.metrics["eval_perplexity"] == pytest.approx(math.exp(generated.metrics["eval_loss"]))


def test_a_metrics_function_replaces_the_defaults(models):
    def mine(prediction):
        return {"mine": 1.0}

    run = fine_tune(start(Spec(base=models["bert"], train=sentiment(16), validation=sentiment(8, 1), metrics=mine,
                               training={"max_steps": 1, "disable_tqdm": True}), CPU))
    assert run.metrics["eval_mine"] == 1.0 and "eval_accuracy" not in run.metrics
