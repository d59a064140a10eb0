"""Default metrics per task (scikit-learn's for classification, SQuAD's for question answering), on the
validation data, named in the plan."""

import math

import numpy as np
import pytest
from transformers import EvalPrediction

from pipeline import Hardware, Spec, fine_tune, plan, start
from pipeline.tasks import TASKS
from pipeline.tasks import Labels
from pipeline.tasks.questions import Windows, _squad, best_span
from pipeline.testing import sentences, sentiment

CPU = Hardware()


def default_metrics(task, problem):
    """The task's ``compute_metrics`` for labels of ``problem`` (no rows: tasks that score rows are tested below)."""
    return TASKS[task].score(Labels(2, problem), None, None, None)[0]


def predicted_ids(task):
    return TASKS[task].score(None, None, None, None)[1]


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
    assert TASKS["language-generation"].after_evaluation({"eval_loss": 2.0}) == {"eval_perplexity": math.exp(2.0)}
    assert TASKS["text-classification"].after_evaluation({"eval_loss": 2.0}) == {}
    assert default_metrics("token-detection", None) is None


def test_best_span_stays_in_the_context_and_within_the_longest_answer():
    start = [5.0, 9.0, 1.0, 2.0] + [-9.0] * 41
    end = [5.0, 0.0, 1.0, 3.0] + [0.0] * 40 + [8.0]
    context = [False, False] + [True] * 43
    first, last, score, null = best_span(start, end, context, cls=0)
    assert (first, last, score, null) == (3, 3, 5.0, 10.0)  # not from 1 (off the context), nor to 44 (too long)
    assert best_span(start, end, [False] * 45, cls=0)[0] == -1


def squad(windows, starts, ends):
    width = max(len(o) for o in windows.offsets)
    pad = lambda rows: np.array([r + [-100.0] * (width - len(r)) for r in rows])  # as the Trainer pads
    return _squad(EvalPrediction((pad(starts), pad(ends)), None), windows)


def test_squad_exact_match_and_f1_per_question_over_its_windows():
    contexts = ["the red car", "a blue sky", "no answer here"]
    token = lambda text, at: [at, at + len(text)]
    windows = Windows(
        example=[0, 0, 1, 2],
        cls=[0, 0, 0, 0],
        offsets=[
            [None, token("the", 0), token("red", 4)],  # question 0's first window, then its second
            [None, token("red", 4), token("car", 8)],
            [None, token("a", 0), token("blue", 2), token("sky", 7)],
            [None, token("no", 0), token("answer", 3)],
        ],
        contexts=contexts,
        answers=[("red car",), ("blue", "blue sky"), ("",)],
    )
    starts = [[0.0, 1.0, 2.0], [0.0, 5.0, 0.0], [0.0, 4.0, 1.0, 0.0], [9.0, 1.0, 1.0]]
    ends = [[0.0, 0.0, 2.0], [0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 4.0], [9.0, 1.0, 1.0]]
    result = squad(windows, starts, ends)
    # "red car" from the second window (10 beats 4); "a blue sky" normalizes to "blue sky"; CLS wins: ""
    assert result == {"exact_match": 1.0, "f1": 1.0, "answerable_exact_match": 1.0, "answerable_f1": 1.0,
                      "unanswerable_exact_match": 1.0}
    ends[1] = [0.0, 5.0, 0.0]  # now "red": F1 of "red" against "red car" is 2/3
    starts[2][1] = -9.0  # and "blue sky" still best for the second question (start at "blue")
    starts[3], ends[3] = [0.0, 3.0, 1.0], [0.0, 1.0, 1.0]  # and "no" beats CLS where there is no answer
    result = squad(windows, starts, ends)
    assert result["exact_match"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    # split as SQuAD v2's script does: the questions with an answer, and those without (none found is right)
    assert result["answerable_exact_match"] == 0.5 and result["answerable_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["unanswerable_exact_match"] == 0.0


def test_sequence_to_sequence_token_accuracy_counts_target_tokens_only():
    logits = np.zeros((2, 3, 5))
    logits[0, [0, 1, 2], [1, 2, 3]] = 1  # predicts 1 2 3
    logits[1, [0, 1, 2], [4, 4, 4]] = 1  # predicts 4 4 4
    ids = predicted_ids("sequence-sequence")(logits, None)
    labels = np.array([[1, 2, 0], [4, -100, -100]])
    assert default_metrics("sequence-sequence", None)(EvalPrediction(ids, labels)) == {"token_accuracy": 0.75}
    assert predicted_ids("text-classification") is None


def test_the_plan_names_the_metrics():
    rows = sentiment(4)
    assert "accuracy" in plan(Spec(base="m", train=rows), CPU).metrics
    assert plan(Spec(base="m", train=rows, metrics="mod:fn"), CPU).provenance["metrics"].source == "user"
    assert plan(Spec(base="m", task="language-generation", train=rows), CPU).metrics == "perplexity"
    assert "exact_match, f1" in plan(Spec(base="m", task="question-answering", train=rows), CPU).metrics


def test_a_classification_run_reports_accuracy_and_a_language_model_perplexity(models):
    classified = fine_tune(start(Spec(base=models["bert"], train=sentiment(32), validation=sentiment(16, 1),
                                      training={"max_steps": 2, "disable_tqdm": True}), CPU))
    assert 0 <= classified.metrics["eval_accuracy"] <= 1 and "eval_macro_f1" in classified.metrics
    texts = [{"text": t} for t in sentences(32)]
    generated = fine_tune(start(Spec(base=models["llama"], task="language-generation", train=texts,
                                     validation=texts[:8], maxlength=16,
                                     training={"max_steps": 2, "disable_tqdm": True}), CPU))
    assert generated.metrics["eval_perplexity"] == pytest.approx(math.exp(generated.metrics["eval_loss"]))
    pairs = [{"source": t, "target": t} for t in sentences(16)]
    translated = fine_tune(start(Spec(base=models["bart"], task="sequence-sequence", train=pairs, validation=pairs[:8],
                                      maxlength=16, training={"max_steps": 2, "disable_tqdm": True}), CPU))
    assert 0 <= translated.metrics["eval_token_accuracy"] <= 1


def test_a_metrics_function_replaces_the_defaults(models):
    def mine(prediction):
        return {"mine": 1.0}

    run = fine_tune(start(Spec(base=models["bert"], train=sentiment(16), validation=sentiment(8, 1), metrics=mine,
                               training={"max_steps": 1, "disable_tqdm": True}), CPU))
    assert run.metrics["eval_mine"] == 1.0 and "eval_accuracy" not in run.metrics
