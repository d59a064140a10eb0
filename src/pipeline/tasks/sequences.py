"""Sequence to sequence: an encoder-decoder learns each source's target (``prefix`` before each source)."""

from __future__ import annotations

from typing import Any

from pipeline.tasks.generation import generate, said
from pipeline.tasks.task import Kit, Task, argmax_ids, masked_vocabulary, text_problems, texts


def _encode(batch, columns, tokenizer, maxlength, spec, labels, indices):
    source, target = columns
    inputs = [f"{spec.prefix or ''}{text}" for text in texts(batch, source)]
    encoded = tokenizer(inputs, truncation=True, max_length=maxlength)
    encoded["labels"] = tokenizer(text_target=texts(batch, target), truncation=True, max_length=maxlength)["input_ids"]
    return encoded


def _check(dataset: Any, columns: tuple[str | None, ...], field: str) -> list[str]:
    return text_problems(dataset, columns[0], field) + text_problems(dataset, columns[1], field, "target")


def _score(labels: Any, rows: Any, encoded: Any, columns: Any) -> tuple[Any, Any]:
    """The share of target tokens predicted right, teacher-forced; each position's argmax kept, not a
    vocabulary of logits per target token."""
    return token_accuracy, argmax_ids


def token_accuracy(prediction: Any) -> dict[str, float]:
    predicted, truth = prediction.predictions, prediction.label_ids
    scored = truth != -100
    return {"token_accuracy": float((predicted[scored] == truth[scored]).mean()) if scored.any() else 0.0}


def _predict(items: list[Any], kit: Kit) -> list[dict[str, Any]]:
    return generate(items, kit, prefix=kit.document.get("prefix") or "", continues=False)


TASK = Task(
    name="sequence-sequence",
    model_class="AutoModelForSeq2SeqLM",
    lora_task="SEQ_2_SEQ_LM",
    collator="DataCollatorForSeq2Seq",
    columns=("source", "target"),
    column_counts=(2,),
    metrics="token_accuracy (target tokens predicted right, teacher-forced)",
    metric_names=("token_accuracy",),
    distillation="KL of softmax(logits/T) over the vocabulary per target token",
    encode=_encode,
    collate=lambda library, tokenizer, model, seed: library.DataCollatorForSeq2Seq(tokenizer, model=model),
    distill=lambda student, teacher, inputs, kl, problem: masked_vocabulary(student, teacher, inputs, kl),
    predict=_predict,
    said=said,
    check=_check,
    score=_score,
    token_loss=True,
    vocabulary=True,
    fields=frozenset({"prefix"}),
    hub_tag="text2text-generation",
)
