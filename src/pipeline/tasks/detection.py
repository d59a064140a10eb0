"""Token detection (ELECTRA): a generator fills masked tokens and a discriminator learns which tokens
were replaced; the discriminator is the result (the model pair is `pipeline.training.detection`)."""

from __future__ import annotations

from typing import Any

from pipeline.tasks import masked
from pipeline.tasks.task import Kit, Task, check_texts, encode_blocks


def _load(pretrained: Any, library: Any, spec: Any, kwargs: dict[str, Any]) -> Any:
    generator = pretrained(library.AutoModelForMaskedLM, spec.generator or spec.base, kwargs)
    return library.TokenDetection(generator, pretrained(library.AutoModelForPreTraining, spec.base, kwargs))


def _distill(student: Any, teacher: Any, inputs: Any, kl: Any, problem: str | None) -> Any:
    mask = inputs.get("attention_mask")
    found = kl.sigmoid(student.logits, teacher.logits)
    return found[mask.bool()] if mask is not None else found.flatten()


def _predict(items: list[Any], kit: Kit) -> list[dict[str, Any]]:
    """Each token with the probability that it was ``replaced``."""
    found = []
    for item in items:
        batch = kit.tokenize(item)
        replaced = kit.model(**batch).logits[0].sigmoid().tolist()
        tokens = kit.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
        found.append({"input": item, "tokens": [{"token": t, "replaced": p} for t, p in zip(tokens, replaced)]})
    return found


TASK = Task(
    name="token-detection",
    model_class="TokenDetection(AutoModelForMaskedLM, AutoModelForPreTraining)",
    lora_task="FEATURE_EXTRACTION",
    collator="DataCollatorForLanguageModeling(mlm=True)",
    columns=("text",),
    column_counts=(1,),
    metrics=None,
    metric_names=(),
    distillation="KL of sigmoid(logits/T) per token (replaced or original), the generator's loss kept",
    encode=encode_blocks,
    collate=masked.collate,
    distill=_distill,
    predict=_predict,
    said=lambda p: " ".join(f"[{t['token']}]" if t["replaced"] > 0.5 else t["token"] for t in p["tokens"]),
    check=check_texts,
    load=_load,
    saved_class="AutoModelForPreTraining",
    language_model=True,
    token_loss=True,
    vocabulary=True,
    heads=("discriminator_predictions", "generator_predictions"),
    fields=frozenset({"merge", "generator"}),
    models=2,
)
