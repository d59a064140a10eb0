"""The task table: per task, the model class, collator, LoRA task type and data columns.

Names only (strings): the stages resolve them, so reading the table imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["DEFAULT_METRICS", "DISTILLATION", "METRIC_NAMES", "TASKS", "TaskRule", "reported_metrics", "saved_class"]

DEFAULT_METRICS = {
    "text-classification": "accuracy, macro_f1 (multi-label: micro_f1; regression: mse, pearson), with scikit-learn",
    "language-generation": "perplexity",
    "language-modeling": "perplexity (of the masked tokens)",
    "question-answering": "exact_match, f1 (SQuAD's, per question over its windows; no answer counts)",
    "sequence-sequence": "token_accuracy (target tokens predicted right, teacher-forced)",
}
"""What evaluation reports besides the loss when the spec names no ``metrics`` function."""

METRIC_NAMES = {
    "text-classification": ("accuracy", "macro_f1", "micro_f1", "mse", "pearson"),
    "language-generation": ("perplexity",),
    "language-modeling": ("perplexity",),
    "question-answering": ("exact_match", "f1"),
    "sequence-sequence": ("token_accuracy",),
    "token-detection": (),
}
"""The names `DEFAULT_METRICS` reports (classification: which of them depends on the labels)."""


def reported_metrics(task: str, validation: bool, own_metrics: bool) -> frozenset[str] | None:
    """The final metrics a run can report, known before it trains: ``train_loss``, and with validation
    data ``eval_loss`` and the task's ``eval_*`` metrics. ``None`` when a ``metrics`` function of the
    user's names its own."""
    if own_metrics and validation:
        return None
    found = {"train_loss"}
    if validation:
        found |= {"eval_loss", *(f"eval_{name}" for name in METRIC_NAMES[task])}
    return frozenset(found)

DISTILLATION = {
    "text-classification": "KL of softmax(logits/T) per example (multi-label: KL of sigmoid(logits/T) per label; "
    "regression: squared error to the teacher's output)",
    "language-generation": "KL of softmax(logits/T) over the vocabulary per predicted token",
    "language-modeling": "KL of softmax(logits/T) over the vocabulary per masked token",
    "question-answering": "KL of softmax(logits/T) over positions, start and end averaged, per window",
    "sequence-sequence": "KL of softmax(logits/T) over the vocabulary per target token",
    "token-detection": "KL of sigmoid(logits/T) per token (replaced or original), the generator's loss kept",
}
"""What the teacher's term compares, per task; mixed as (1 - alpha) * loss + alpha * T^2 * term."""


@dataclass(frozen=True)
class TaskRule:
    """How one task is trained."""

    name: str
    model_class: str
    """transformers auto class (token-detection: our generator + discriminator pair)."""
    lora_task: str
    """peft ``TaskType`` member name."""
    collator: str
    columns: tuple[str | None, ...]
    """Default data columns (txtai's names); ``columns`` in a spec overrides them."""
    column_counts: tuple[int, ...]
    """How many columns a spec may name for this task."""
    language_model: bool = False
    """Texts are merged into blocks (``merge``) and the model learns the text itself."""
    heads: tuple[str, ...] = ()
    """New output heads; kept out of 4-bit quantization, which cannot initialise them."""
    lora_exclude: tuple[str, ...] = ()
    """Heads peft trains in full for this task type, so "all-linear" LoRA must skip them."""


TASKS: MappingProxyType[str, TaskRule] = MappingProxyType(
    {
        rule.name: rule
        for rule in (
            TaskRule(
                "text-classification",
                "AutoModelForSequenceClassification",
                "SEQ_CLS",
                "DataCollatorWithPadding",
                ("text", None, "label"),
                (2, 3),
                heads=("classifier", "score", "pre_classifier", "pooler.dense", "classification_head", "logits_proj"),
            ),
            TaskRule(
                "language-generation",
                "AutoModelForCausalLM",
                "CAUSAL_LM",
                "DataCollatorForLanguageModeling(mlm=False)",
                ("text",),
                (1,),
                language_model=True,
            ),
            TaskRule(
                "language-modeling",
                "AutoModelForMaskedLM",
                "FEATURE_EXTRACTION",
                "DataCollatorForLanguageModeling(mlm=True)",
                ("text",),
                (1,),
                language_model=True,
            ),
            TaskRule(
                "question-answering",
                "AutoModelForQuestionAnswering",
                "QUESTION_ANS",
                "DataCollatorWithPadding",
                ("question", "context", "answers"),
                (3,),
                heads=("qa_outputs",),
                lora_exclude=("qa_outputs",),
            ),
            TaskRule(
                "sequence-sequence",
                "AutoModelForSeq2SeqLM",
                "SEQ_2_SEQ_LM",
                "DataCollatorForSeq2Seq",
                ("source", "target"),
                (2,),
            ),
            TaskRule(
                "token-detection",
                "TokenDetection(AutoModelForMaskedLM, AutoModelForPreTraining)",
                "FEATURE_EXTRACTION",
                "DataCollatorForLanguageModeling(mlm=True)",
                ("text",),
                (1,),
                language_model=True,
                heads=("discriminator_predictions", "generator_predictions"),
            ),
        )
    }
)


def saved_class(task: str) -> str:
    """The transformers auto class that loads one saved model of ``task`` (token detection: its discriminator)."""
    return "AutoModelForPreTraining" if task == "token-detection" else TASKS[task].model_class
