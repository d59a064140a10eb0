"""Language modeling: a masked LM learns raw text, a random 15% of its tokens masked per batch."""

from __future__ import annotations

from typing import Any

from pipeline.errors import SpecError
from pipeline.tasks.task import Kit, Task, check_texts, encode_blocks, masked_vocabulary, shown


def _predict(items: list[Any], kit: Kit) -> list[dict[str, Any]]:
    """Per mask token of each input, its five likeliest tokens."""
    found, tokenizer = [], kit.tokenizer
    for item in items:
        batch = kit.tokenize(item)
        masked = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
        if not masked:
            raise SpecError(f"predict: language-modeling fills {tokenizer.mask_token!r} tokens; {item!r} has none")
        logits = kit.model(**batch).logits[0]
        fills = []
        for position in masked:
            top = logits[position].softmax(-1).topk(5)
            fills.append([{"token": tokenizer.decode([i]).strip(), "score": float(p)}
                          for p, i in zip(top.values, top.indices)])
        found.append({"input": item, "fills": fills})
    return found


def collate(library: Any, tokenizer: Any, model: Any, seed: int) -> Any:
    return library.DataCollatorForLanguageModeling(tokenizer, mlm=True, seed=seed)


TASK = Task(
    name="language-modeling",
    model_class="AutoModelForMaskedLM",
    lora_task="FEATURE_EXTRACTION",
    collator="DataCollatorForLanguageModeling(mlm=True)",
    columns=("text",),
    column_counts=(1,),
    metrics="perplexity (of the masked tokens)",
    metric_names=("perplexity",),
    distillation="KL of softmax(logits/T) over the vocabulary per masked token",
    encode=encode_blocks,
    collate=collate,
    distill=lambda student, teacher, inputs, kl, problem: masked_vocabulary(student, teacher, inputs, kl),
    predict=_predict,
    said=lambda p: f"{shown(p)}  ->  " + "; ".join(
        ", ".join(f"{f['token']} {f['score']:.2f}" for f in fills[:3]) for fills in p["fills"]),
    check=check_texts,
    language_model=True,
    token_loss=True,
    vocabulary=True,
    fields=frozenset({"merge"}),
    perplexity=True,
    hub_tag="fill-mask",
)
