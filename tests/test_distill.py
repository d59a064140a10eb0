"""Knowledge distillation on every task: a trained teacher, a smaller student, the mixed loss."""

import pytest
import torch
import torch.nn.functional as F

from pipeline import Hardware, Spec, SpecError, fine_tune, plan, start
from pipeline.training.distill import sigmoid_kl, softmax_kl
from pipeline.testing import questions, sentences, sentiment, truncated

CPU = Hardware()
TEXTS = [{"text": t} for t in sentences(160)]
PAIRS = [{"source": t, "target": t} for t in sentences(160)]
# task -> (fixture model, rows, extra spec fields)
JOBS = {
    "text-classification": ("bert", sentiment(160), {}),
    "language-generation": ("llama", TEXTS, {}),
    "language-modeling": ("bert", TEXTS, {}),
    "question-answering": ("bert", questions(160), {"stride": 8}),
    "sequence-sequence": ("bart", PAIRS, {"prefix": "copy: "}),
    "token-detection": ("electra", TEXTS, {}),
}


def spec_for(models, task, base, rows=None, **fields):
    name, default_rows, extra = JOBS[task]
    rows = rows or default_rows
    if task == "token-detection":
        extra = {**extra, "generator": f"{base}/generator"}
    training = {"learning_rate": 2e-3, "num_train_epochs": 4, "per_device_train_batch_size": 16,
                "logging_strategy": "no", "disable_tqdm": True, **fields.pop("training", {})}
    return Spec(base=base, task=task, train=rows, maxlength=32, training=training, **extra, **fields)


def eval_losses(run):
    return [entry["eval_loss"] for entry in run.log_history if "eval_loss" in entry]


@pytest.fixture(scope="module")
def teachers(models, tmp_path_factory):
    """Per task: a teacher trained well past chance (its eval loss checked), and a one-layer student base."""
    found = {}
    for task, (name, rows, _) in JOBS.items():
        folder = tmp_path_factory.mktemp(f"teacher-{task}")
        spec = spec_for(models, task, models[name], validation=rows[:48],
                        training={"output_dir": str(folder), "eval_on_start": True, "num_train_epochs": 6})
        run = fine_tune(start(spec, CPU))
        losses = eval_losses(run)
        assert losses[-1] < 0.8 * losses[0], f"{task} teacher did not learn: {losses}"
        student = truncated(models[name], tmp_path_factory.mktemp(f"student-{task}"), layers=1)
        found[task] = (str(folder), student)
    return found


def weights(run):
    return {k: v.clone() for k, v in run.model.state_dict().items()}


@pytest.mark.parametrize("task", list(JOBS))
def test_a_smaller_student_learns_from_its_teacher_and_alpha_zero_is_plain_training(models, teachers, task):
    teacher, student = teachers[task]
    rows = JOBS[task][1]
    distilled = fine_tune(start(spec_for(models, task, student, teacher=teacher, distillation=(2.0, 0.5),
                                         validation=rows[:48],
                                         training={"eval_on_start": True, "num_train_epochs": 6}), CPU))
    losses = eval_losses(distilled)
    assert losses[-1] < 0.9 * losses[0], f"{task} student eval loss {losses}"
    assert distilled.plan.distillation["alpha"] == 0.5 and distilled.plan.distillation["temperature"] == 2.0

    short = {"max_steps": 3}
    plain = fine_tune(start(spec_for(models, task, student, rows=rows[:48], training=short), CPU))
    ignored = fine_tune(start(spec_for(models, task, student, rows=rows[:48], teacher=teacher,
                                       distillation=(2.0, 0.0), training=short), CPU))
    mixed = fine_tune(start(spec_for(models, task, student, rows=rows[:48], teacher=teacher,
                                     distillation=(2.0, 0.5), training=short), CPU))
    same, taught = weights(plain), weights(ignored)
    assert same.keys() == taught.keys()
    assert all(torch.equal(same[k], taught[k]) for k in same), f"{task}: alpha=0 changed the weights"
    assert plain.metrics["train_loss"] == ignored.metrics["train_loss"]
    assert mixed.metrics["train_loss"] != plain.metrics["train_loss"]  # the teacher's term is in the loss


def test_the_divergences_match_their_definitions():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    # txtai / Hinton: T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean
    expected = F.kl_div(F.log_softmax(student / 2, -1), F.softmax(teacher / 2, -1), reduction="batchmean") * 4
    torch.testing.assert_close(softmax_kl(student, teacher, 2.0).mean(), expected)
    assert torch.all(softmax_kl(student, student, 3.0).abs() < 1e-6)

    p, q = torch.sigmoid(teacher / 2), torch.sigmoid(student / 2)
    bernoulli = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
    torch.testing.assert_close(sigmoid_kl(student, teacher, 2.0), bernoulli * 4)
    assert torch.all(sigmoid_kl(student, teacher, 1.0) >= 0)


def test_gradient_accumulation_gives_the_step_of_one_large_batch(models, teachers):
    """Per-token terms are averaged over the accumulated batch, as the student's own loss is."""
    teacher, student = teachers["language-generation"]

    def one_step(batch, accumulate):
        # SGD: the step is the gradient itself (Adam's first step is about lr * sign(gradient))
        training = {"max_steps": 1, "per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulate,
                    "learning_rate": 1.0, "optim": "sgd", "max_grad_norm": 0}
        spec = spec_for(models, "language-generation", student, rows=TEXTS[:64], teacher=teacher,
                        distillation=(2.0, 1.0), merge=None, training=training)
        return weights(fine_tune(start(spec, CPU)))

    whole, accumulated = one_step(16, 1), one_step(8, 2)
    for key in whole:
        torch.testing.assert_close(accumulated[key], whole[key])


@pytest.mark.parametrize("way", ["lora", "qlora"])
def test_lora_and_qlora_students_distill(models, teachers, way):
    teacher, student = teachers["text-classification"]
    extra = {"lora": True} if way == "lora" else {"lora": True, "quantize": True, "quantize_on_cpu": True}
    spec = spec_for(models, "text-classification", models["bert"], teacher=teacher, validation=sentiment(48, 1),
                    training={"learning_rate": 1e-2, "eval_on_start": True}, **extra)
    run = fine_tune(start(spec, CPU))
    losses = eval_losses(run)
    assert losses[-1] < 0.95 * losses[0], losses
    assert run.teacher is not None and not run.teacher.training
    assert not any(p.requires_grad for p in run.teacher.parameters())
    four_bit = any(type(m).__name__ == "Linear4bit" for m in run.teacher.modules())
    assert four_bit == (way == "qlora") and run.plan.distillation["loaded"] == ("4-bit" if four_bit else "auto")


def test_a_lora_run_folder_is_a_teacher(models, tmp_path):
    folder = tmp_path / "lora-teacher"
    fine_tune(start(spec_for(models, "text-classification", models["bert"], lora=True,
                             training={"output_dir": str(folder), "max_steps": 2}), CPU))
    spec = spec_for(models, "text-classification", models["bert"], teacher=str(folder), training={"max_steps": 2})
    run = fine_tune(start(spec, CPU))
    assert type(run.teacher).__name__ == "BertForSequenceClassification"  # merged: no peft wrapper left


def test_teachers_that_cannot_teach_are_refused_before_training(models, teachers, tmp_path):
    classifier, _ = teachers["text-classification"]
    cases = {
        # another tokenizer: the teacher would read the student's ids as other words
        "vocabulary": (spec_for(models, "language-modeling", models["bert"], teacher=models["llama"]),
                       "its vocabulary differs from the student's"),
        "labels": (spec_for(models, "text-classification", models["bert"], teacher=classifier,
                            rows=[{"text": t, "label": i % 3} for i, t in enumerate(sentences(12))]),
                   "it has 2 labels and the data 3"),
        "untrained head": (spec_for(models, "text-classification", models["bert"], teacher=models["bert"]),
                           "has no trained weights for"),
        "no such folder": (spec_for(models, "text-classification", models["bert"], teacher=str(tmp_path / "nope")),
                           "teacher: no such model folder"),
    }
    for name, (spec, message) in cases.items():
        with pytest.raises(SpecError, match=message):
            fine_tune(start(spec, CPU))


@pytest.mark.parametrize("value, message", [
    ((0, 0.5), "temperature must be > 0"),
    ((2.0, 1.5), r"alpha must be in \[0, 1\]"),
    ((2.0,), r"expected \(temperature, alpha\)"),
    (("hot", 0.5), "temperature must be a number"),
])
def test_distillation_values_are_checked(models, value, message):
    with pytest.raises(SpecError, match=message):
        Spec(base=models["bert"], train=sentiment(4), teacher=models["bert"], distillation=value)


def test_the_plan_shows_distillation_with_its_origin(models):
    spec = Spec(base=models["bert"], train=sentiment(4), teacher="some/teacher")
    planned = plan(spec, CPU)
    assert planned.distillation["temperature"] == 1.0 and planned.distillation["alpha"] == 0.5  # txtai's default
    assert planned.provenance["distillation.alpha"].reason == "txtai's default"
    assert "KL of softmax(logits/T) per example" in str(planned)
    alone = plan(Spec(base=models["bert"], train=sentiment(4), distillation=(2, 0.5)), CPU)
    assert alone.distillation is None
    assert any("distillation: ignored, there is no teacher" in note for note in alone.notes)
