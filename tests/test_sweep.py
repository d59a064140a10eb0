"""training/sweep.py: sweeps as a Python API, the records the CLI prints."""

import csv

import pytest

from pipeline import Hardware, Spec, SpecError, sweep
from pipeline.testing import sentiment


def spec_for(models):
    return Spec(base=models["bert"], train=sentiment(32), validation=sentiment(16, 1), lora=True, maxlength=16,
                training={"max_steps": 2, "disable_tqdm": True, "logging_strategy": "no"})


def test_a_random_sweep_from_python_returns_its_records_and_writes_them(models, tmp_path):
    rows = sweep(spec_for(models), grid={"lora.r": [2, 4]}, ranges={"training.learning_rate": "1e-4:1e-2:log"},
                 search="random", trials=2, seed=3, output=tmp_path, hardware=Hardware())
    assert len(rows) == 2 and all(1e-4 <= r["training.learning_rate"] <= 1e-2 for r in rows)
    assert all(r["lora.r"] in (2, 4) and "eval_loss" in r and (tmp_path / r["run"]).is_dir() for r in rows)
    written = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [w["run"] for w in written] == [r["run"] for r in rows]
    assert (tmp_path / "sweep.png").exists()


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "nothing to vary"),
    ({"ranges": {"lora.r": "2:8"}}, "add --search random"),
    ({"grid": {"lora.r": [2]}, "ranges": {"lora.r": "2:8"}, "search": "optuna"}, "both vary lora.r"),
    ({"grid": {"lora.r": [2]}, "metric": "eval_bleu"}, "--metric 'eval_bleu'"),
    ({"grid": {"lora.r": [2]}, "storage": "sqlite:///study.db"}, "--storage shares an Optuna study: add --search optuna"),
])
def test_a_sweep_that_cannot_run_is_refused_before_anything_trains(models, tmp_path, fields, message):
    with pytest.raises(SpecError, match=message):
        sweep(spec_for(models), output=tmp_path / "sweep", hardware=Hardware(), **fields)
    assert not (tmp_path / "sweep").exists()


def test_a_run_that_fails_its_checks_announces_no_run_folder(tmp_path, caplog):
    """`run <id> -> <folder>` is said once training starts, not before a preflight that refuses the spec."""
    import logging

    from pipeline import DataError
    from pipeline.training.sweep import train_into

    bad = Spec(base=str(tmp_path), train=[{"message": "hi", "label": 0}] * 4)
    with caplog.at_level(logging.INFO, logger="pipeline"), pytest.raises(DataError, match="missing column"):
        train_into(bad, Hardware(), output=tmp_path / "out")
    assert not any(r.getMessage().startswith("run ") for r in caplog.records), caplog.text
    assert not (tmp_path / "out").exists()


def test_the_sweep_plot_marks_the_best_run_and_leaves_out_what_did_not_vary():
    """One panel per value that varied (a constant one gets none), the best run marked, whole numbers on an integer
    axis, and no minor tick labels on a log axis (they ran together)."""
    from matplotlib.ticker import NullFormatter

    from pipeline.io.runs import sweep_figure

    rows = [{"run": str(i), "lora.r": r, "training.learning_rate": lr, "seed": 0, "eval_loss": loss}
            for i, (r, lr, loss) in enumerate([(4, 1e-4, 0.9), (8, 1e-3, 0.5), (16, 3e-2, 0.7)])]
    figure = sweep_figure(rows, ["lora.r", "training.learning_rate", "seed"], "eval_loss",
                          log={"training.learning_rate"}, maximize=False)
    r, rate = figure.axes
    assert [a.get_xlabel() for a in figure.axes] == ["lora.r", "training.learning_rate"]
    assert all(float(t).is_integer() for t in r.get_xticks())
    assert isinstance(rate.xaxis.get_minor_formatter(), NullFormatter)
    best = [c for a in figure.axes for c in a.collections if c.get_label() == "best"]
    assert len(best) == 2 and all(tuple(c.get_offsets()[0])[1] == 0.5 for c in best)


def test_force_over_another_run_removes_nothing_when_the_spec_is_refused(tmp_path):
    """--force over another run's folder with a spec that fails its checks: the error, and the other run's
    checkpoints still there (bad input loses nothing)."""
    import json

    from pipeline import DataError
    from pipeline.training.sweep import train_into

    out = tmp_path / "out"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"id": "another"}))
    bad = Spec(base=str(tmp_path), train=[{"message": "hi", "label": 0}] * 4)
    with pytest.raises(DataError, match="missing column"):
        train_into(bad, Hardware(), force=True, output=out)
    assert (out / "checkpoint-2").is_dir()
