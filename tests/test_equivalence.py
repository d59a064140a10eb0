"""Equivalences a trainer must keep, each compared in numbers on real tiny models (STYLE.md: "an
equivalence is a test"): accumulation = one large batch, resume = the uninterrupted run, ..."""

from pathlib import Path

import pytest
import torch
import transformers

from pipeline import Hardware, Spec, evolve, fine_tune, start
from pipeline.testing import questions, sentences, sentiment, tagged_rows

CPU = Hardware()
TEXTS = [{"text": t} for t in sentences(64)]
PAIRS = [{"source": t, "target": t} for t in sentences(64)]
# task -> (fixture model, rows, extra spec fields)
JOBS = {
    "text-classification": ("bert", sentiment(64), {}),
    "language-generation": ("llama", TEXTS, {}),
    "language-modeling": ("bert", TEXTS, {}),
    "question-answering": ("bert", questions(64), {"stride": 8}),
    "sequence-sequence": ("bart", PAIRS, {"prefix": "copy: "}),
    "token-detection": ("electra", TEXTS, {}),
    "token-classification": ("bert", tagged_rows(64), {}),
}


def _without_dropout(source: Path, target: Path) -> None:
    config = transformers.AutoConfig.from_pretrained(source)
    off = {k: 0.0 for k, v in config.to_dict().items() if "dropout" in k and isinstance(v, float)}
    model_class = getattr(transformers, config.architectures[0])
    model_class.from_pretrained(source, **off).save_pretrained(target)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(target)
    if (source / "generator" / "config.json").is_file():
        _without_dropout(source / "generator", target / "generator")


@pytest.fixture(scope="module")
def still(models, tmp_path_factory):
    """The tiny models without dropout: a step then depends only on the data and the weights."""
    root = tmp_path_factory.mktemp("still")
    for name in ("bert", "llama", "bart", "electra"):
        _without_dropout(Path(models[name]), root / name)
    return {name: str(root / name) for name in ("bert", "llama", "bart", "electra")}


def spec_for(models, task, lora=False, **training):
    name, rows, extra = JOBS[task]
    if task == "token-detection":
        extra = {**extra, "generator": f"{models['electra']}/generator"}
    lora = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": "all-linear"} if lora else False
    training = {"learning_rate": 1e-2, "per_device_train_batch_size": 16, "logging_strategy": "no",
                "disable_tqdm": True, "save_strategy": "no", **training}
    return Spec(base=models[name], task=task, train=rows, maxlength=32, lora=lora, training=training, **extra)


def trainable(run):
    return {k: v.detach().clone() for k, v in run.model.named_parameters() if v.requires_grad}


# -- accumulation ---------------------------------------------------------------------------


def one_sgd_step(models, task, batch, accumulate, lora=False, **fields):
    """One optimizer step of plain SGD (the step is the gradient itself) over the first 16 rows, in order."""
    training = {"max_steps": 1, "per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulate,
                "learning_rate": 1.0, "optim": "sgd", "max_grad_norm": 0, "lr_scheduler_type": "constant",
                "train_sampling_strategy": "sequential"}
    spec = evolve(spec_for(models, task, lora, **training), **fields)
    before = start(spec, CPU)
    run = fine_tune(before)
    return trainable(run), run.metrics["train_loss"]


class EveryThirdMasked:
    """Masked-LM batches whose masks do not depend on which rows share a batch (the library's draw a
    random mask per batch, so 16 rows masked at once differ from 8 + 8): every third real token."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pad = transformers.DataCollatorWithPadding(tokenizer)

    def __call__(self, features):
        batch = self.pad(features)
        ids = batch["input_ids"]
        special = torch.tensor([self.tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True)
                                for row in ids.tolist()], dtype=torch.bool)
        masked = (torch.arange(ids.shape[1]) % 3 == 1) & ~special & batch["attention_mask"].bool()
        batch["labels"] = torch.where(masked, ids, -100)
        batch["input_ids"] = ids.masked_fill(masked, self.tokenizer.mask_token_id)
        return batch


@pytest.mark.parametrize("task", list(JOBS))
def test_two_accumulated_batches_of_8_step_as_one_batch_of_16(still, task, monkeypatch):
    """The update and train_loss of 8 x 2 with accumulation equal those of one batch of 16 (transformers
    issue 47688: heads that average their own loss were scaled by the accumulation steps)."""
    if task in ("language-modeling", "token-detection"):
        import pipeline.training.stages

        monkeypatch.setattr(pipeline.training.stages, "collator", lambda task, tokenizer, *_: EveryThirdMasked(tokenizer))
    whole, whole_loss = one_sgd_step(still, task, 16, 1)
    accumulated, accumulated_loss = one_sgd_step(still, task, 8, 2)
    for key in whole:
        torch.testing.assert_close(accumulated[key], whole[key], rtol=1e-4, atol=1e-6, msg=f"{task}: {key}")
    assert accumulated_loss == pytest.approx(whole_loss, rel=1e-5)


def test_accumulation_equals_one_batch_for_lora_and_multi_label(still):
    for lora, rows in ((True, sentiment(64)),
                       (False, [{"text": r["text"], "label": [1, 0] if r["label"] == "positive" else [0, 1]}
                                for r in sentiment(64)])):
        whole, _ = one_sgd_step(still, "text-classification", 16, 1, lora=lora, train=rows)
        accumulated, _ = one_sgd_step(still, "text-classification", 8, 2, lora=lora, train=rows)
        for key in whole:
            torch.testing.assert_close(accumulated[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)


def test_distillation_on_a_self_averaging_head_accumulates_as_one_batch(still, tmp_path):
    """The mixed loss (student's own + teacher's term) steps the same at 8 x 2 as at 16 x 1."""
    teacher = tmp_path / "teacher"
    fine_tune(start(spec_for(still, "text-classification", max_steps=2, output_dir=str(teacher)), CPU))
    fields = {"teacher": str(teacher), "distillation": (2.0, 0.5)}
    whole, whole_loss = one_sgd_step(still, "text-classification", 16, 1, **fields)
    accumulated, accumulated_loss = one_sgd_step(still, "text-classification", 8, 2, **fields)
    for key in whole:
        torch.testing.assert_close(accumulated[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)
    assert accumulated_loss == pytest.approx(whole_loss, rel=1e-5)


@pytest.mark.parametrize("name, model_class, counts", [
    ("bert", "BertForSequenceClassification", False), ("bert", "BertForMaskedLM", False),
    ("bart", "BartForConditionalGeneration", False), ("llama", "LlamaForCausalLM", True)])
def test_which_heads_count_the_accumulated_items_as_the_library_does_today(still, name, model_class, counts):
    """`counts_items` reads a head's source; this checks it against what the head does with
    ``num_items_in_batch``. When transformers fixes issue 47688 (its heads divide by the items, or say
    ``accepts_loss_kwargs = False``), this fails: then the workaround in `_trainer` can go."""
    from pipeline.training.trainer import counts_items

    model = getattr(transformers, model_class).from_pretrained(still[name]).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(still[name])
    batch = tokenizer(["the car is red and the hat is blue"], return_tensors="pt")
    batch.pop("token_type_ids", None)
    batch["labels"] = torch.tensor([1]) if "Classification" in model_class else batch["input_ids"].clone()
    with torch.no_grad():
        plain = model(**batch).loss
        divided = model(**batch, num_items_in_batch=1000).loss
    assert counts_items(model) is counts
    assert (not torch.allclose(plain, divided)) is counts


# -- order and resume -----------------------------------------------------------------------


def test_resuming_from_any_checkpoint_gives_the_uninterrupted_run(models, tmp_path):
    """Mid-epoch 1, an epoch boundary, mid-epoch 3: torch.equal weights and the same train_loss. The
    batch order belongs to (seed, epoch), not to the global generator the run had advanced."""
    rows = [{"text": r["text"] + " and" * (i % 70), "label": r["label"]} for i, r in enumerate(sentiment(24))]
    spec = spec_for(models, "text-classification", lora=True, num_train_epochs=3, per_device_train_batch_size=8,
                    save_strategy="steps", save_steps=1, save_total_limit=None, output_dir=str(tmp_path / "whole"))
    spec = evolve(spec, train=rows, maxlength=96, lora=True)  # the seed's LoRA, dropout and all
    whole = fine_tune(start(spec, CPU))
    for step in (2, 3, 8):  # 3 steps an epoch
        folder = tmp_path / f"from-{step}"
        folder.mkdir()
        import shutil

        shutil.copytree(tmp_path / "whole" / f"checkpoint-{step}", folder / f"checkpoint-{step}")
        resumed = fine_tune(start(evolve(spec, checkpoint=True, training={**spec.training,
                                                                           "output_dir": str(folder)}), CPU))
        for (name, a), (_, b) in zip(resumed.model.state_dict().items(), whole.model.state_dict().items()):
            assert torch.equal(a, b), f"resumed from step {step}: {name}"
        assert resumed.metrics["train_loss"] == pytest.approx(whole.metrics["train_loss"], rel=1e-6)


SHARDS = """
import json, os, sys
import datasets, torch, transformers
from pipeline.training.trainer import Arguments, Trainer

model = transformers.AutoModelForSequenceClassification.from_pretrained(sys.argv[1], num_labels=2)
tokenizer = transformers.AutoTokenizer.from_pretrained(sys.argv[1])
# row i: tokens that name it (i + 10), of a length that spreads the rows over several buckets
rows = [{"input_ids": [i + 10] * (1 + (i * 37) % 300), "labels": i % 2} for i in range(96)]
args = Arguments(output_dir="", per_device_train_batch_size=4, seed=7, use_cpu=True, report_to="none",
                 train_sampling_strategy="group_by_length", ddp_find_unused_parameters=False)
trainer = Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                  data_collator=transformers.DataCollatorWithPadding(tokenizer))
loader = trainer.get_train_dataloader()
seen = []
for epoch in range(3):
    loader.set_epoch(epoch)
    seen.append([int(batch["input_ids"][j, 0]) - 10 for batch in loader for j in range(len(batch["input_ids"]))])
    torch.rand(int(os.environ["RANK"]) + 1)  # as training does: dropout on batches of other shapes per rank
with open(f"rank{os.environ['RANK']}.json", "w") as f:
    json.dump(seen, f)
"""


def test_under_torchrun_each_epochs_shards_are_disjoint_and_cover_the_set(models, tmp_path):
    """Both processes draw the same order for each epoch and take their own share of it (96 rows: 12
    batches of 4, 6 a rank; a set that does not divide evenly gets rows repeated, as accelerate pads it)."""
    import os
    import subprocess
    import sys

    (tmp_path / "shards.py").write_text(SHARDS)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29531", "shards.py", models["bert"]],
                         capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in range(3):
        first, second = ranks[0][epoch], ranks[1][epoch]
        assert not set(first) & set(second), f"epoch {epoch}: the ranks' shares overlap"
        assert sorted(first + second) == list(range(96)), f"epoch {epoch}: not every row once"
    assert ranks[0][0] != ranks[0][1]  # another epoch, another order


# -- runs are values ------------------------------------------------------------------------


def test_a_run_a_stage_changed_in_place_is_refused_by_the_next_with_the_way_to_branch(models):
    """adapt twice on one loaded run would stack adapters on one model; train twice would train on; after
    merge the run's model has no adapters. Each branch loads its own model."""
    from pipeline import SpecError, adapt, load, merge, train

    spec = spec_for(models, "text-classification", lora=True, max_steps=1)
    loaded = load(start(spec, CPU))
    adapted = adapt(loaded)
    adapters = lambda run: sum(1 for name, _ in run.model.named_modules() if name.endswith("lora_A"))
    layers = adapters(adapted)
    with pytest.raises(SpecError, match="already given to adapt.*load again"):
        adapt(loaded)
    trained = train(adapted)
    with pytest.raises(SpecError, match="already given to train"):
        train(adapted)
    merged = merge(trained)
    with pytest.raises(SpecError, match="already given to merge"):
        merge(trained)
    assert not hasattr(merged.model, "peft_config")
    # the way to branch: each branch from its own load, and each result trains on
    branches = [train(adapt(load(start(evolve(spec, training={**spec.training, "learning_rate": lr}), CPU))))
                for lr in (1e-2, 1e-3)]
    assert [adapters(b) for b in branches] == [layers, layers]  # one set of adapters each, none stacked
    assert train(branches[0]).metrics["train_loss"] > 0  # a returned run is fresh: training goes on from it


# -- padding side ---------------------------------------------------------------------------


def _qa(models, side):
    tokenizer = transformers.AutoTokenizer.from_pretrained(models["bert"])
    tokenizer.padding_side = side
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(models["bert"])
    spec = Spec(base=(model, tokenizer), task="question-answering", train=questions(96), validation=questions(24, 1),
                maxlength=32, stride=8, training={"learning_rate": 3e-3, "num_train_epochs": 6, "logging_strategy": "no",
                                                  "per_device_train_batch_size": 16, "disable_tqdm": True})
    return fine_tune(start(spec, CPU))


def test_question_answering_with_left_padding_labels_scores_and_predicts_as_right_padding(models):
    """A left-padding tokenizer puts the context first (txtai's rule); the labels must still point at the
    answer after the collator pads (they pointed at [PAD]), and evaluation and predict must agree."""
    from pipeline import evaluate, predict
    from pipeline.io.data import encode
    from pipeline.training.stages import collator

    runs = {side: _qa(models, side) for side in ("left", "right")}
    for side, run in runs.items():
        encoded = encode(run.train_data, run.spec, run.tokenizer, 32)
        batch = collator(run.spec.task, run.tokenizer, run.model)([encoded[i] for i in range(16)])
        spans = [run.tokenizer.decode(ids[s : e + 1]).strip()
                 for ids, s, e in zip(batch["input_ids"], batch["start_positions"], batch["end_positions"])]
        colors = {"red", "blue", "green", "black", "white", "yellow", "[CLS]"}
        assert set(spans) <= colors, f"{side}: labelled spans {set(spans) - colors}"
        assert run.metrics["eval_exact_match"] >= 0.9, side
        rows = questions(24, 1)
        said = predict(run, [(r["question"], r["context"]) for r in rows])
        assert sum(p["answer"] == r["answers"]["text"][0] for p, r in zip(said, rows)) >= 22, side
        scored = evaluate(run, rows)
        assert scored["eval_exact_match"] == pytest.approx(run.metrics["eval_exact_match"]), side


# -- inference = training -------------------------------------------------------------------


def trained(models, task, rows, validation, steps=-1, **fields):
    name, _, extra = JOBS[task]
    spec = Spec(base=models[name], task=task, train=rows, validation=validation, **{"maxlength": 32, **extra, **fields},
                training={"learning_rate": 3e-3, "num_train_epochs": 6, "max_steps": steps,
                          "per_device_train_batch_size": 16, "logging_strategy": "no", "disable_tqdm": True})
    return fine_tune(start(spec, CPU))


DETERMINISTIC = {  # the masked-LM tasks draw new masks at each evaluation: their losses differ by draw
    "text-classification": (sentiment(160), sentiment(32, 1)),
    "question-answering": (questions(160), questions(32, 1)),
    "sequence-sequence": ([{"source": t, "target": t} for t in sentences(160)],
                          [{"source": t, "target": t} for t in sentences(32, 1)]),
    "language-generation": ([{"text": t} for t in sentences(160)], [{"text": t} for t in sentences(32, 1)]),
}


@pytest.mark.parametrize("task", list(DETERMINISTIC))
def test_evaluate_of_a_trained_run_reports_the_trainers_final_metrics(models, task, tmp_path):
    """The same data prepared the same way (length, windows, prefix) scores the same."""
    from pipeline import evaluate

    rows, validation = DETERMINISTIC[task]
    run = trained(models, task, rows, validation, steps=8, maxlength=None if task == "text-classification" else 32)
    scored = evaluate(run, validation)
    compared = [k for k in run.metrics if k.startswith("eval_") and not k.endswith(("runtime", "per_second"))]
    assert len(compared) >= 2, compared
    for key in compared:
        assert scored[key] == pytest.approx(run.metrics[key], rel=1e-5), key


def test_predict_prepares_inputs_as_training_did(models):
    """Sequence to sequence: the spec's prefix; classification: the run's maxlength; question answering:
    strided windows over a context longer than the model's positions, the answer found in a later one."""
    import random

    from pipeline import predict

    from datasets import Dataset

    from pipeline.io.data import encode

    copy = trained(models, "sequence-sequence", *DETERMINISTIC["sequence-sequence"], steps=1, prefix="copy: ")
    texts = [t + " and the hat is red" * 4 for t in sentences(3, 5)]  # longer than maxlength 32
    seen = []
    hook = copy.model.get_encoder().register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"][0].tolist()), with_kwargs=True)
    try:
        predict(copy, texts)
    finally:
        hook.remove()
    rows = Dataset.from_list([{"source": t, "target": t} for t in texts])
    assert seen == encode(rows, copy.spec, copy.tokenizer, 32)["input_ids"]  # prefixed, cut at 32

    classify = trained(models, "text-classification", *DETERMINISTIC["text-classification"], steps=1, maxlength=12)
    long = "the car was good " + "and the hat was terrible " * 20
    seen.clear()
    hook = classify.model.bert.embeddings.word_embeddings.register_forward_pre_hook(
        lambda module, args: seen.append(args[0][0].tolist()))
    try:
        predict(classify, [long])
    finally:
        hook.remove()
    assert seen == [classify.tokenizer(long, truncation=True, max_length=12)["input_ids"]]

    answer = trained(models, "question-answering", *DETERMINISTIC["question-answering"], stride=8)
    rnd, items, truth = random.Random(3), [], []
    for row in questions(20, 7):
        filler = " ".join(rnd.choice(["car", "house", "door", "ball", "hat", "boat"]) for _ in range(150))
        items.append((row["question"], f"{filler} . {row['context']}"))
        truth.append(row["answers"]["text"][0])
    said = predict(answer, items)  # 150 words of filler: past the model's 128 positions
    assert sum(p["answer"] == t for p, t in zip(said, truth)) >= 16


def test_lean_memory_lasts_only_as_long_as_the_plans_that_ask_for_it(models):
    """A lean run pins glibc's allocation threshold; the next run that is not lean gets it back."""
    from pipeline.training import host as _cpu
    from pipeline.training.stages import load

    spec = spec_for(models, "text-classification", max_steps=1)
    lean = start(evolve(spec, lean_memory=True), CPU)
    assert lean.plan.lean_memory is True
    load(lean)
    assert _cpu._lean is True
    assert start(spec, CPU).plan.lean_memory is False
    load(start(spec, CPU))
    assert _cpu._lean is False
    assert _cpu.host_memory(False) is None  # nothing left to undo


def test_evaluating_between_epochs_does_not_change_training(models):
    """Evaluation each epoch trains the weights training without it does: its data loader drew its seed from the
    global generator, so every dropout mask after it moved (make demo's numbers differed with and without)."""
    spec = spec_for(models, "text-classification", lora=True, num_train_epochs=2, learning_rate=1e-3,
                    per_device_train_batch_size=8)
    spec = evolve(spec, lora=True, validation=sentiment(16, 1))  # the seed's LoRA: dropout 0.05
    quiet = fine_tune(start(evolve(spec, training={**spec.training, "eval_strategy": "no"}), CPU))
    evaluated = fine_tune(start(evolve(spec, training={**spec.training, "eval_strategy": "epoch"}), CPU))
    for (name, a), (_, b) in zip(quiet.model.state_dict().items(), evaluated.model.state_dict().items()):
        assert torch.equal(a, b), name
