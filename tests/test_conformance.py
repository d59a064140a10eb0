"""The conformance suite: what every task in `TASKS` must pass, parametrized over the registry, so a task added
later is held to it without a test of its own (as transformers' common model tests hold every model).

Each task declares its fixture in `CASES` (a tiny model, a few rows); a task without one fails here first.
"""

import pytest

from pipeline import TASKS, Hardware, Spec, SpecError
from pipeline.testing import sentiment

CPU = Hardware()


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
