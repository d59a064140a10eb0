"""Knowledge distillation: the student's own loss mixed with a match to a frozen teacher.

``loss = (1 - alpha) * loss + alpha * term``, where the term compares the student's and the
teacher's outputs on each labelled item (a predicted token, an example, a label, a QA
window): KL divergences of temperature-softened distributions times ``T^2`` (txtai's,
Hinton's), squared error for regression. Items are averaged the way the student's own
loss is (over the whole accumulated batch when the Trainer counts its tokens), so the
mix is right under gradient accumulation. Token detection mixes into the discriminator's
loss and keeps the generator's.

Imports torch: only the stages import this module.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pipeline.tasks import Task
from pipeline.training.trainer import Trainer

__all__ = ["Distilling", "Softened", "sigmoid_kl", "softmax_kl"]

POSITIONS = ("labels", "start_positions", "end_positions")
"""What the student learns from and the teacher must not see."""


def softmax_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` over the last dimension, one value per item."""
    teacher_log = F.log_softmax(teacher.float() / temperature, dim=-1)
    student_log = F.log_softmax(student.float() / temperature, dim=-1)
    return F.kl_div(student_log, teacher_log, log_target=True, reduction="none").sum(-1) * temperature**2


def sigmoid_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(Bernoulli(sigmoid(teacher/T)) || Bernoulli(sigmoid(student/T)))``, per element."""
    t, s = teacher.float() / temperature, student.float() / temperature
    p = torch.sigmoid(t)
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl * temperature**2


def _vocabulary(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both logits cut to the shared vocabulary (models pad their output rows to different multiples)."""
    n = min(student.shape[-1], teacher.shape[-1])
    return student[..., :n], teacher[..., :n]


class Softened:
    """The divergences a task's ``distill`` compares outputs with, at one temperature."""

    def __init__(self, temperature: float):
        self.temperature = temperature

    def softmax(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return softmax_kl(student, teacher, self.temperature)

    def sigmoid(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return sigmoid_kl(student, teacher, self.temperature)

    vocabulary = staticmethod(_vocabulary)


class Distilling(Trainer):
    """Our `Trainer`, its training loss mixed with the frozen ``teacher``'s (evaluation reports the plain loss)."""

    def __init__(self, *args: Any, teacher: Any, temperature: float, alpha: float, task: Task,
                 problem: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher, self.temperature, self.alpha, self.task, self.problem = teacher, temperature, alpha, task, problem
        if getattr(teacher, "hf_device_map", None) is None:  # a 4-bit teacher was placed when loaded
            teacher.to(self.args.device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        detection = self.task.models > 1  # a model pair: the term mixes into the discriminator's loss
        asked = {**inputs, "parts": True} if detection else inputs
        loss, outputs = super().compute_loss(model, asked, True, num_items_in_batch)
        if detection:
            seen = {"input_ids": outputs.replaced, "attention_mask": inputs.get("attention_mask")}
        else:
            seen = {k: v for k, v in inputs.items() if k not in POSITIONS}
        with torch.no_grad():
            taught = self.teacher(**seen)
        values = self.task.distill(outputs, taught, inputs, Softened(self.temperature), self.problem)
        distilled = self._mean(values, num_items_in_batch)
        alpha = self.alpha
        if detection:
            weight = self.accelerator.unwrap_model(model).weight
            loss = outputs.generator_loss + weight * ((1 - alpha) * outputs.discriminator_loss + alpha * distilled)
        else:
            loss = (1 - alpha) * loss + alpha * distilled
        return (loss, outputs) if return_outputs else loss

    def _mean(self, values: torch.Tensor, num_items_in_batch: Any) -> torch.Tensor:
        """The items' mean as the student's loss takes it: over the accumulated batch when the Trainer
        counted its items (it then divides nothing by the accumulation steps), else over this batch."""
        if not (self.model_accepts_loss_kwargs and num_items_in_batch is not None):
            return values.sum() / max(values.numel(), 1)
        mean = values.sum() / num_items_in_batch
        if self.args.average_tokens_across_devices:
            mean = mean * self.accelerator.num_processes  # as the Trainer scales the student's loss
        return mean
