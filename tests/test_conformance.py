"""The conformance suite: what every task in `TASKS` must pass, parametrized over the registry, so a task added
later is held to it without a test of its own (as transformers' common model tests hold every model).

Each task declares its fixture in `CASES` (a tiny model, a few rows); a task without one fails here first.
"""

from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline import TASKS, Hardware, Spec, SpecError, fine_tune, predict, start
from pipeline.testing import (conversations, questions, rerank_rows, scored_pairs, search_pairs, sentences, sentiment,
                              tagged_rows)

CPU = Hardware()


@dataclass(frozen=True)
class Case:
    """What a task's conformance runs train on: a tiny model (a `tiny_models` name), a few rows, held-out rows,
    the spec fields it needs, and inputs to predict."""

    model: str
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    inputs: list[Any]
    fields: dict[str, Any] = field(default_factory=dict)


TEXTS = [{"text": t} for t in sentences(40)]
HELD_TEXTS = [{"text": t} for t in sentences(12, seed=1)]
CASES = {
    "text-classification": Case("bert", sentiment(40), sentiment(12, 1), ["the car was great", "the hat was awful"]),
    "language-generation": Case("llama", TEXTS, HELD_TEXTS, ["the car is"]),
    "language-modeling": Case("bert", TEXTS, HELD_TEXTS, ["the car is [MASK] and the hat is red"]),
    "question-answering": Case("bert", questions(40), questions(12, 1),
                               [("what color is the boat ?", "the hat the boat is green .")], {"stride": 8}),
    "sequence-sequence": Case("bart", [{"source": t["text"], "target": t["text"]} for t in TEXTS],
                              [{"source": t["text"], "target": t["text"]} for t in HELD_TEXTS], ["copy: the car is red"],
                              {"prefix": "copy: "}),
    "token-detection": Case("electra", TEXTS, HELD_TEXTS, ["the car is red and the hat is blue"]),
    "token-classification": Case("bert", tagged_rows(40), tagged_rows(12, 1), ["the car is red and a blue hat"]),
    "chat": Case("chat", conversations(40), conversations(12, 1), ["the car is red . what color is the car ?"]),
    "embeddings": Case("bert", search_pairs(asked=1), search_pairs(held_out=True, asked=1), ["where is the azil car?"]),
    "reranking": Case("bert", rerank_rows(asked=1), rerank_rows(held_out=True, asked=1),
                      [("the red car", "the car is red")]),
    "similarity": Case("bert", scored_pairs(), scored_pairs(held_out=True), [("the vermo car", "the red car")]),
}
"""Every task's case: a task added to `TASKS` without one fails `test_every_task_declares_its_case`."""

NOT_METRICS = ("_runtime", "_samples_per_second", "_steps_per_second", "epoch")


def spec_of(models, task: str, **training) -> Spec:
    case = CASES[task]
    fields = dict(case.fields)
    if task == "token-detection":
        fields["generator"] = f"{models['electra']}/generator"
    return Spec(base=models[case.model], task=task, train=case.train, validation=case.validation, maxlength=32,
                training={"max_steps": 4, "per_device_train_batch_size": 8, "learning_rate": 1e-3, "disable_tqdm": True,
                          "logging_strategy": "no", **training}, **fields)


@pytest.fixture(scope="module")
def short(models, tmp_path_factory):
    """Per task: a short run with validation data, saved to its folder as `pipeline train` writes it."""
    from pipeline.io.runs import write_run

    found = {}
    for task in TASKS:
        folder = tmp_path_factory.mktemp(task)
        run = fine_tune(start(spec_of(models, task, output_dir=str(folder)), CPU))
        write_run(folder, "conformance", run)
        found[task] = (run, folder)
    return found


def test_every_task_declares_its_case():
    assert set(CASES) == set(TASKS)


@pytest.mark.parametrize("task", list(TASKS))
def test_a_run_reports_the_metrics_its_task_names_and_no_other(short, task):
    """What a run reports is what `Task.reported` promised before it trained (a sweep's --metric is checked
    against that), and nothing its data cannot support; a sentence-transformers task adds the same metrics
    measured before training (``before_eval_*``)."""
    run, _ = short[task]
    promised = TASKS[task].reported(validation=True, own_metrics=False)
    reported = {k for k in run.metrics if not k.startswith("before_") and not k.endswith(NOT_METRICS)}
    reported -= {"total_flos", "train_runtime"}
    assert reported <= promised  # classification promises each label kind's metrics; its labels pick some
    assert {"train_loss", "eval_loss"} <= reported
    assert not TASKS[task].metric_names or reported - {"train_loss", "eval_loss"}
    before = {k.removeprefix("before_") for k in run.metrics if k.startswith("before_")}
    assert before <= promised - {"eval_loss", "train_loss"}


@pytest.mark.parametrize("task", list(TASKS))
def test_a_saved_run_reloads_to_the_predictions_of_the_run_in_memory(short, task):
    run, folder = short[task]
    inputs = CASES[task].inputs
    live, saved = predict(run, inputs), predict(str(folder), inputs)
    assert len(live) == len(saved) == len(inputs)
    for a, b in zip(live, saved):
        assert a.keys() == b.keys()
        for key in a:
            if key in ("score", "value", "embedding", "scores", "fills", "tokens", "entities"):
                _close(a[key], b[key], f"{task}: {key}")
            else:
                assert a[key] == b[key], (task, key)


def _close(a: Any, b: Any, where: str) -> None:
    """Equal structure, numbers within 1e-4."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for x, y in zip(a, b):
            _close(x, y, where)
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-4), where
    else:
        assert a == b, where


# -- sweeps: which way is better comes from the metric ----------------------------------------------------------


@pytest.mark.parametrize("task", list(TASKS))
def test_every_metric_a_task_reports_has_a_direction(task):
    """A sweep ranks trials by any metric a run reports; each one's better direction is known (losses, perplexity
    and errors down, the rest up), so no metric is minimised because a flag was left out."""
    from pipeline.core.search import better

    reported = TASKS[task].reported(validation=True, own_metrics=False)
    for metric in reported:
        assert better(metric) in ("minimize", "maximize"), metric
    for metric in ("train_loss", "eval_loss", "eval_perplexity", "eval_mse"):
        if metric in reported:
            assert better(metric) == "minimize", metric
    for metric in reported - {"train_loss", "eval_loss", "eval_perplexity", "eval_mse"}:
        assert better(metric) == "maximize", metric


def test_a_metric_of_unknown_direction_is_refused_unless_the_direction_is_given():
    from pipeline.core.search import better

    with pytest.raises(SpecError, match=r"--metric 'eval_bleu_like': which way is better is not known; add "
                                        r"--maximize or --minimize"):
        better("eval_bleu_like")
    assert better("eval_bleu_like", maximize=True) == "maximize"
    assert better("eval_accuracy", maximize=False) == "minimize"  # what the user says wins


def test_a_sweep_by_accuracy_names_the_more_accurate_run_best_without_maximize(models, tmp_path):
    """lr 1e-6 leaves the classifier at chance; lr 3e-3 learns the toy sentiment. Ranked by eval_accuracy with no
    direction given, the learnt run is best, on the CLI's line and in Optuna's study."""
    import json

    import optuna

    from pipeline.testing import invoke

    spec = {"base": models["bert"], "train": sentiment(64), "validation": sentiment(32, 1), "maxlength": 16,
            "training": {"num_train_epochs": 10, "per_device_train_batch_size": 8, "disable_tqdm": True,
                         "logging_strategy": "no"}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = invoke("sweep", tmp_path / "spec.json", "--grid", "training.learning_rate=1e-6,3e-3", "--metric",
                 "eval_accuracy", "--output", tmp_path / "sweep", "-q")
    assert out.returncode == 0, out.stderr
    import csv

    rows = {float(r["training.learning_rate"]): r for r in csv.DictReader((tmp_path / "sweep" / "results.csv").open())}
    assert float(rows[3e-3]["eval_accuracy"]) > float(rows[1e-6]["eval_accuracy"])
    assert f"best run by eval_accuracy (highest): {rows[3e-3]['run']}" in out.stdout

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    out = invoke("sweep", tmp_path / "spec.json", "--search", "optuna", "--trials", "1", "--range",
                 "training.learning_rate=1e-3:1e-2", "--metric", "eval_accuracy", "--storage", storage, "--study", "s",
                 "--output", tmp_path / "optuna", "-q")
    assert out.returncode == 0, out.stderr
    assert optuna.load_study(study_name="s", storage=storage).direction == optuna.study.StudyDirection.MAXIMIZE


# -- metrics against an independent computation -----------------------------------------------------------------

CAUSAL_PERPLEXITY = [t for t, task in TASKS.items() if task.perplexity and task.lora_task == "CAUSAL_LM"]


@pytest.mark.parametrize("task", CAUSAL_PERPLEXITY)
def test_perplexity_is_exp_of_the_mean_loss_over_every_held_out_token(short, task):
    """Each held-out row alone, unpadded, summed over its trained tokens: exp(sum / tokens) is the run's
    eval_perplexity, whatever its evaluation batches held (a mean of batch means weighs a short row's tokens more)."""
    import math

    import torch

    from pipeline.io.data import encode

    run, _ = short[task]
    encoded = encode(run.eval_data, run.spec, run.tokenizer, 32, run.labels)
    total, tokens = 0.0, 0
    with torch.no_grad():
        labelled = encoded["labels"] if "labels" in encoded.column_names else encoded["input_ids"]  # the LM collator's
        for ids, labels in zip(encoded["input_ids"], labelled):
            logits = run.model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            target = torch.tensor(labels[1:])
            kept = target != -100
            total += torch.nn.functional.cross_entropy(logits[kept], target[kept], reduction="sum").item()
            tokens += int(kept.sum())
    assert run.metrics["eval_loss"] == pytest.approx(total / tokens, rel=1e-4)
    assert run.metrics["eval_perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-4)
