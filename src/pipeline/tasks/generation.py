"""Language generation: a causal LM learns raw text (merged into blocks, packed or one text each)."""

from __future__ import annotations

from typing import Any

from pipeline.tasks.task import Kit, Task, check_texts, encode_blocks, masked_vocabulary, shown

GENERATED_TOKENS = 32
"""New tokens generated per input (language generation, sequence to sequence)."""


def generate(items: list[Any], kit: Kit, prefix: str = "", continues: bool = True) -> list[dict[str, Any]]:
    """Greedy text after each input (``continues``: the model's output repeats the input first)."""
    found = []
    for item in items:
        batch = kit.tokenize(f"{prefix}{item}")
        batch.pop("token_type_ids", None)
        out = kit.model.generate(**batch, **({"max_new_tokens": GENERATED_TOKENS, "do_sample": False} | kit.generation),
                                 pad_token_id=kit.tokenizer.pad_token_id)
        new = out[0][batch["input_ids"].shape[1] :] if continues else out[0]
        found.append({"input": item, "text": kit.tokenizer.decode(new, skip_special_tokens=True).strip()})
    return found


def distill(student: Any, teacher: Any, inputs: Any, kl: Any, problem: Any) -> Any:
    """A causal LM's `Task.distill`: the softened-vocabulary KL at each labelled next token."""
    return masked_vocabulary(student, teacher, inputs, kl, shift=True)


def said(prediction: dict[str, Any]) -> str:
    """A generated text as a line: the input, then what the model wrote."""
    return f"{shown(prediction)}  ->  {prediction['text']}"


TASK = Task(
    name="language-generation",
    model_class="AutoModelForCausalLM",
    lora_task="CAUSAL_LM",
    collator="DataCollatorForLanguageModeling(mlm=False)",
    columns=("text",),
    column_counts=(1,),
    metrics="perplexity",
    metric_names=("perplexity",),
    distillation="KL of softmax(logits/T) over the vocabulary per predicted token",
    encode=encode_blocks,
    collate=lambda library, tokenizer, model, seed: library.DataCollatorForLanguageModeling(tokenizer, mlm=False),
    distill=distill,
    predict=generate,
    said=said,
    check=check_texts,
    language_model=True,
    token_loss=True,
    vocabulary=True,
    fields=frozenset({"merge"}),
    perplexity=True,
    hub_tag="text-generation",
)
