"""The shipped examples cannot rot: every spec validates, plans and trains; the scripts run."""

import contextlib
import io
import runpy
from pathlib import Path

import pytest

from pipeline import Hardware, fine_tune, load_spec, plan, profile, start

EXAMPLES = Path(__file__).parents[1] / "examples"
SPECS = sorted(EXAMPLES.glob("*.yaml"))


def test_there_is_a_spec_for_every_task():
    from pipeline import TASKS

    assert {load_spec(path).task for path in SPECS} == set(TASKS)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_example_specs_plan_on_a_cpu_and_a_gpu(path):
    spec = load_spec(path)
    assert Path(spec.train).is_file()
    for hardware in (Hardware(), profile("cuda-bf16")):
        assert plan(spec, hardware).task == spec.task


@pytest.mark.parametrize("path", [p for p in SPECS if p.stem not in ("classification", "distillation", "search", "reranking", "similarity")],
                         ids=lambda p: p.stem)
def test_tiny_model_example_specs_train(path, models):
    """Each on the fixture's copy of its tiny model, for a few steps."""
    spec = load_spec(path)
    name = Path(spec.base).name
    settings = {"base": models[name], "training.max_steps": 3, "training.disable_tqdm": True}
    if spec.generator:
        settings["generator"] = f"{models['electra']}/generator"
    run = fine_tune(start(load_spec(path, settings), Hardware()))
    assert run.metrics["train_loss"] > 0


def test_the_distillation_example_trains_with_a_tiny_teacher(models, tmp_path):
    path = EXAMPLES / "distillation.yaml"
    quick = {"base": models["bert"], "training.max_steps": 3, "training.disable_tqdm": True}
    teacher = {**quick, "teacher": None, "training.output_dir": str(tmp_path / "teacher")}
    fine_tune(start(load_spec(path, teacher), Hardware()))
    run = fine_tune(start(load_spec(path, {**quick, "teacher": str(tmp_path / "teacher")}), Hardware()))
    assert run.teacher is not None and run.plan.distillation["temperature"] == 2.0


@pytest.mark.parametrize("script", ["compose.py", "sweep.py"])
def test_example_scripts_run(script):
    """Each script as ``python examples/SCRIPT`` runs it (``__main__``), in this process: the libraries'
    import is paid once for the suite."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert ("best:" if script == "sweep.py" else "3. trained and merged: BertForSequenceClassification") in out.getvalue()
