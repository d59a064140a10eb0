"""stages.py: every task trains end to end on real tiny models, saves and reloads."""

from pathlib import Path

import pytest
import torch
from toolz import compose_left

from pipeline import Hardware, Spec, adapt, detect, evolve, fine_tune, load, predict, quantize, start
from pipeline.testing import questions, sentences, sentiment

CPU = Hardware()
TEXTS = [{"text": t} for t in sentences(160)]
PAIRS = [{"source": t, "target": t} for t in sentences(160)]

# task -> (fixture model, rows, extra spec fields, plain transformers class that reloads the result)
JOBS = {
    "text-classification": ("bert", sentiment(160), {}, "AutoModelForSequenceClassification"),
    "language-generation": ("llama", TEXTS, {}, "AutoModelForCausalLM"),
    "language-modeling": ("bert", TEXTS, {}, "AutoModelForMaskedLM"),
    "question-answering": ("bert", questions(160), {"stride": 8}, "AutoModelForQuestionAnswering"),
    "sequence-sequence": ("bart", PAIRS, {"prefix": "copy: "}, "AutoModelForSeq2SeqLM"),
    "token-detection": ("electra", TEXTS, {}, "AutoModelForPreTraining"),
}


def run_job(models, task, lora, output_dir="", **training):
    name, rows, extra, _ = JOBS[task]
    if task == "token-detection":
        extra = {**extra, "generator": f"{models['electra']}/generator"}
    spec = Spec(
        base=models[name], task=task, train=rows, validation=rows[:48], maxlength=32, lora=lora, **extra,
        training={"learning_rate": 1e-2 if lora else 2e-3, "num_train_epochs": 4, "per_device_train_batch_size": 16,
                  "eval_on_start": True, "logging_strategy": "no", "disable_tqdm": True,
                  "output_dir": str(output_dir), **training},
    )
    return fine_tune(start(spec, CPU))


def eval_losses(run):
    return [entry["eval_loss"] for entry in run.log_history if "eval_loss" in entry]


def sample_inputs(run):
    """A padded batch for the task's model, as the tokenizer gives it."""
    task = run.spec.task
    if task == "question-answering":
        return run.tokenizer(["what color is the car ?"], ["the car is red ."], return_tensors="pt")
    batch = run.tokenizer(["the car is red and the hat is blue"], return_tensors="pt")
    if task == "sequence-sequence":
        batch["decoder_input_ids"] = batch["input_ids"][:, :4]
    return batch


def outputs(model, batch):
    with torch.no_grad():
        out = model(**batch)
    return out.logits if "logits" in out else out.start_logits


@pytest.mark.parametrize("lora", [None, True], ids=["full", "lora"])
@pytest.mark.parametrize("task", list(JOBS))
def test_each_task_learns_saves_and_reloads_with_plain_libraries(models, task, lora, tmp_path):
    import transformers
    from peft import PeftModel

    run = run_job(models, task, lora, output_dir=tmp_path)
    losses = eval_losses(run)
    # Adapters on a randomly initialised tiny base learn slowly; the runs are seeded, so exact.
    assert losses[-1] < (0.95 if lora else 0.9) * losses[0], f"{task} eval loss {losses}"
    assert run.metrics["train_loss"] > 0 and "eval_loss" in run.metrics
    assert not run.model.training

    model_class = getattr(transformers, JOBS[task][3])
    trained = run.model.discriminator if task == "token-detection" else run.model
    if lora:
        base = model_class.from_pretrained(models[JOBS[task][0]], **({"num_labels": 2} if task == "text-classification" else {}))
        reloaded = PeftModel.from_pretrained(base, tmp_path)
    else:
        reloaded = model_class.from_pretrained(tmp_path)
    reloaded.eval()
    batch = sample_inputs(run)
    torch.testing.assert_close(outputs(reloaded, batch), outputs(trained, batch))
    assert transformers.AutoTokenizer.from_pretrained(tmp_path).vocab == run.tokenizer.vocab
    if task == "token-detection":  # the generator loads on its own too, tokenizer and all
        assert (tmp_path / "generator" / "config.json").exists() or (tmp_path / "generator" / "adapter_config.json").exists()
        assert transformers.AutoTokenizer.from_pretrained(tmp_path / "generator").vocab == run.tokenizer.vocab


def test_an_unanswerable_question_predicts_no_answer_after_training(models):
    """Rows with no answer (None or "", as txtai takes them) teach the model to point at CLS."""
    import random

    from pipeline.testing import BAD, GOOD

    def rows(n, seed):
        rnd, found = random.Random(seed), []
        for i, row in enumerate(questions(n, seed)):
            color = row["answers"]["text"][0]
            found.append({**row, "answers": color})
            unanswerable = row["context"].replace(f"is {color}", f"was {rnd.choice(GOOD + BAD)}")
            found.append({"question": row["question"], "context": unanswerable, "answers": [None, ""][i % 2]})
        return found

    held_out = rows(20, 1)
    spec = Spec(base=models["bert"], task="question-answering", train=rows(120, 0), validation=held_out, maxlength=32,
                stride=8, training={"learning_rate": 3e-3, "num_train_epochs": 6, "per_device_train_batch_size": 16,
                                    "logging_strategy": "no", "disable_tqdm": True})
    run = fine_tune(start(spec, CPU))
    answered = unanswered = 0
    for row in held_out:
        batch = run.tokenizer(row["question"], row["context"], return_tensors="pt")
        with torch.no_grad():
            out = run.model(**batch)
        start_at, end_at = out.start_logits.argmax(-1).item(), out.end_logits.argmax(-1).item()
        if row["answers"]:
            answered += run.tokenizer.decode(batch["input_ids"][0][start_at : end_at + 1]) == row["answers"]
        else:
            unanswered += (start_at, end_at) == (0, 0)  # CLS: no answer
    assert unanswered >= 18 and answered >= 18, f"of 20 each: {unanswered} no-answer, {answered} spans right"
    # SQuAD v2 scoring over the windows (32 tokens, so several per context) agrees
    assert run.metrics["eval_exact_match"] >= 0.9 and run.metrics["eval_f1"] >= run.metrics["eval_exact_match"]
    said = predict(run, [(row["question"], row["context"]) for row in held_out])
    assert sum(p["answer"] == (row["answers"] or "") for p, row in zip(said, held_out)) >= 36


def test_the_python_api_says_only_what_is_ours(models, tmp_path):
    """A fresh process (bitsandbytes says its kernel notice on import) with our logger shown: the
    trainable-parameter notice, and none of the library notices a user cannot act on."""
    import subprocess
    import sys

    script = ("import logging; logging.basicConfig()\n"
              "import pipeline.training.trainer  # the Trainer's import (evaluate's first) imports bitsandbytes\n"
              "logging.getLogger('pipeline').addHandler(logging.StreamHandler())\n"
              "logging.getLogger('pipeline').setLevel(logging.INFO)\n"
              f"from pipeline import Hardware, Spec, fine_tune, start; from pipeline.testing import sentiment\n"
              f"fine_tune(start(Spec(base={models['bert']!r}, train=sentiment(16), lora=True, quantize=True, "
              f"quantize_on_cpu=True, training={{'max_steps': 1, 'output_dir': 'out'}}), Hardware()))\n"
              f"fine_tune(start(Spec(base={models['llama']!r}, task='language-generation', train=sentiment(16), "
              f"columns=['text'], training={{'max_steps': 1}}), Hardware()))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=tmp_path)
    stderr = done.stderr.decode()  # as bytes: text mode would turn each bar's \r into a newline
    assert done.returncode == 0, stderr
    assert "trainable params: " in stderr and "{'loss'" not in stderr
    assert "\r" not in stderr and "it/s" not in stderr  # not a terminal (a log file, a pipe): no bars
    for noise in ("LOAD REPORT", "gemm_4bit_forward", "FutureWarning", "Loading weights", "Writing model shards",
                  "new PAD/BOS/EOS tokens"):
        assert noise not in stderr, (noise, stderr)
    assert (tmp_path / "out" / "adapter_config.json").exists()


def test_hushing_nests_without_undoing_the_outer_scope():
    """``merged`` (hushed) runs inside ``load`` (hushed): leaving the inner scope keeps the outer's filter."""
    import logging

    from pipeline.training.hush import _not_a_load_report, hushed

    report = logging.getLogger("transformers.modeling_utils")
    with hushed():
        with hushed():
            pass
        assert _not_a_load_report in report.filters
    assert _not_a_load_report not in report.filters


def test_qlora_on_a_cpu_end_to_end(models):
    """4-bit load ▸ k-bit preparation ▸ LoRA ▸ train, for real with bitsandbytes on the CPU."""
    spec = Spec(base=models["bert"], train=sentiment(160), validation=sentiment(48, 1), maxlength=32,
                quantize=True, quantize_on_cpu=True, lora=True,
                training={"learning_rate": 5e-3, "num_train_epochs": 4, "eval_on_start": True,
                          "logging_strategy": "no", "disable_tqdm": True})
    run = fine_tune(start(spec, CPU))
    assert any(type(m).__name__ == "Linear4bit" for m in run.model.modules())
    assert run.plan.quantization["bnb_4bit_quant_type"] == "nf4"
    losses = eval_losses(run)
    assert losses[-1] < 0.9 * losses[0], losses


def test_a_chain_without_train_returns_the_adapted_model_and_its_parameter_count(models):
    inspect = compose_left(load, quantize, adapt)
    run = inspect(start(Spec(base=models["bert"], train=sentiment(8), lora=True), CPU))
    assert type(run.model).__name__ == "PeftModelForSequenceClassification"
    assert 0 < run.parameters.trainable < run.parameters.total
    assert run.parameters.trainable == sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    assert not run.metrics


def test_a_custom_stage_slots_into_the_chain(models):
    from dataclasses import replace

    def freeze_embeddings(run):
        for p in run.model.bert.embeddings.parameters():
            p.requires_grad = False
        return replace(run, parameters=None)

    chain = compose_left(load, freeze_embeddings, adapt)
    run = chain(start(Spec(base=models["bert"], train=sentiment(8)), CPU))
    assert run.parameters.trainable < run.parameters.total


def test_same_spec_twice_gives_identical_weights(models):
    first = run_job(models, "text-classification", True, num_train_epochs=1)
    second = run_job(models, "text-classification", True, num_train_epochs=1)
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_without_output_dir_nothing_touches_the_disk(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_job(models, "text-classification", True, num_train_epochs=1)
    assert list(tmp_path.iterdir()) == []


def test_fine_tune_takes_a_spec_and_plans_for_this_machine(models):
    run = fine_tune(Spec(base=models["bert"], train=sentiment(16), training={"max_steps": 1, "disable_tqdm": True}))
    assert run.hardware == detect() and run.hardware.memory > 0  # this machine, whichever it is
    assert run.metrics["train_loss"] > 0


def test_string_labels_are_saved_as_label_names(models, tmp_path):
    from transformers import AutoConfig

    run_job(models, "text-classification", None, output_dir=tmp_path, max_steps=1)
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.id2label == {0: "negative", 1: "positive"}
    assert config.label2id == {"negative": 0, "positive": 1}


@pytest.mark.parametrize(
    ("label", "problem_type", "num_labels"),
    [
        (lambda i: [float(i % 2), float(i % 3 == 0)], "multi_label_classification", 2),
        (lambda i: i * 0.1, "regression", 1),
        (lambda i: [3, 7, 11][i % 3], "single_label_classification", 3),
    ],
    ids=["multi-label", "regression", "non-contiguous"],
)
def test_label_kinds_train(models, label, problem_type, num_labels):
    rows = [{"text": t, "label": label(i)} for i, t in enumerate(sentences(32))]
    run = fine_tune(start(Spec(base=models["bert"], train=rows, training={"max_steps": 2, "disable_tqdm": True}), CPU))
    assert run.model.config.num_labels == num_labels
    assert run.model.config.problem_type == problem_type
    assert run.metrics["train_loss"] > 0


def test_text_pairs_train(models):
    rows = [{"premise": t, "hypothesis": t[::-1], "gold": i % 2} for i, t in enumerate(sentences(16))]
    spec = Spec(base=models["bert"], train=rows, columns=("premise", "hypothesis", "gold"),
                training={"max_steps": 2, "disable_tqdm": True})
    run = fine_tune(start(spec, CPU))
    assert run.metrics["train_loss"] > 0


def test_a_loaded_pair_is_used_and_the_callers_tokenizer_is_not_changed(models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    model = AutoModelForCausalLM.from_pretrained(models["llama"])
    assert tokenizer.pad_token is None
    run = fine_tune(start(Spec(base=(model, tokenizer), task="language-generation", train=TEXTS[:16], maxlength=16,
                               training={"max_steps": 2, "disable_tqdm": True}), CPU))
    assert run.model is model
    assert tokenizer.pad_token is None  # txtai sets it on the caller's tokenizer
    assert run.tokenizer.pad_token == run.tokenizer.eos_token


def test_metrics_function_results_are_returned(models):
    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    spec = Spec(base=models["bert"], train=sentiment(32), validation=sentiment(16, 1), metrics=accuracy,
                training={"max_steps": 2, "disable_tqdm": True})
    run = fine_tune(start(spec, CPU))
    assert 0 <= run.metrics["eval_accuracy"] <= 1


def test_resume_from_a_checkpoint(models, tmp_path):
    training = {"output_dir": str(tmp_path), "save_strategy": "steps", "save_steps": 4, "max_steps": 4,
                "disable_tqdm": True}
    spec = Spec(base=models["bert"], train=sentiment(64), lora=True, training=training)
    fine_tune(start(spec, CPU))
    assert (tmp_path / "checkpoint-4").is_dir()
    resumed = fine_tune(start(evolve(spec, checkpoint=True, training={**training, "max_steps": 8}), CPU))
    assert (tmp_path / "checkpoint-8").is_dir()
    assert [e["step"] for e in resumed.log_history][-1] == 8


def test_qlora_keeps_transformers_own_skips_beside_the_task_heads(models):
    """BART's classification_head and ELECTRA's tied generator head stay unquantized, and both train."""
    bart = fine_tune(start(Spec(base=models["bart"], train=sentiment(16), quantize=True, quantize_on_cpu=True,
                                lora=True, training={"max_steps": 2, "disable_tqdm": True}), CPU))
    quantized = {name for name, m in bart.model.named_modules() if type(m).__name__ == "Linear4bit"}
    assert quantized and not any("classification_head" in name for name in quantized)
    assert bart.metrics["train_loss"] > 0
    electra = fine_tune(start(Spec(base=models["electra"], task="token-detection", train=[{"text": t} for t in
                                   sentences(16)], maxlength=16, quantize=True, quantize_on_cpu=True, lora=True,
                                   training={"max_steps": 2, "disable_tqdm": True}), CPU))
    heads = [name for name, m in electra.model.named_modules() if "generator_lm_head" in name]
    assert heads and all(type(m).__name__ != "Linear4bit" for name, m in electra.model.named_modules()
                         if "generator_lm_head" in name)
    assert electra.metrics["train_loss"] > 0


def test_a_bf16_checkpoint_is_fully_fine_tuned_in_float32_and_lora_keeps_it(models, tmp_path):
    """Full fine-tune: float32 master weights (the plan says why); LoRA: the frozen base stays bf16; dtype wins."""
    from transformers import LlamaForCausalLM

    LlamaForCausalLM.from_pretrained(models["llama"]).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "bf16" / name).write_bytes((Path(models["llama"]) / name).read_bytes())
    texts = [{"text": t} for t in sentences(16)]
    spec = Spec(base=str(tmp_path / "bf16"), task="language-generation", train=texts, maxlength=16,
                training={"max_steps": 1, "disable_tqdm": True})
    full = fine_tune(start(spec, CPU))
    assert full.plan.dtype == "float32" and full.plan.provenance["dtype"].source == "pipeline"
    assert {p.dtype for p in full.model.parameters()} == {torch.float32}
    assert full.plan.memory.inputs["weights"].endswith("x 4 bytes (float32)")  # the estimate follows the dtype
    assert full.plan.memory.parts["weights"] == pytest.approx(4 * sum(p.numel() for p in full.model.parameters()),
                                                              rel=0.01)
    lora = fine_tune(start(evolve(spec, lora=True), CPU))
    assert lora.plan.dtype == "auto"
    assert any(p.dtype == torch.bfloat16 for p in lora.model.parameters() if not p.requires_grad)
    pinned = fine_tune(start(evolve(spec, dtype="bfloat16"), CPU))
    assert {p.dtype for p in pinned.model.parameters()} == {torch.bfloat16}


def test_the_trainable_parameter_count_is_a_notice_the_application_decides_on(models):
    """A library's manners: nothing on stderr unless logging is set up; with it the count shows once (as the
    seed prints it), and one line silences it. One process, three adapts, a marker before each."""
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "from pipeline import Hardware, Spec, adapt, load, start\n"
        "from pipeline.testing import sentiment\n"
        f"spec = Spec(base={models['bert']!r}, train=sentiment(8), lora=True)\n"
        "for mode in ('bare', 'logging', 'quiet'):\n"
        "    print(f'=={mode}==', file=sys.stderr, flush=True)\n"
        "    if mode == 'logging': logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "    if mode == 'quiet': logging.getLogger('pipeline.notice').setLevel(logging.WARNING)\n"
        "    adapt(load(start(spec, Hardware())))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    said = dict(zip(("bare", "logging", "quiet"), done.stderr.split("==bare==")[1].split("==logging==")[0:1] +
                    done.stderr.split("==logging==")[1].split("==quiet==")))
    assert "trainable params" not in said["bare"]
    assert said["logging"].count("trainable params: ") == 1
    assert "trainable params" not in said["quiet"]


def test_importing_and_training_leave_other_libraries_loggers_as_they_were(models):
    import logging

    before = {name: list(logging.getLogger(name).filters) for name in ("transformers.trainer_utils",
                                                                       "transformers.modeling_utils")}
    run_job(models, "text-classification", True, max_steps=2)
    assert {name: list(logging.getLogger(name).filters) for name in before} == before
    assert all(isinstance(h, logging.NullHandler) for h in logging.getLogger("pipeline").handlers)
    assert not logging.getLogger("pipeline.notice").handlers
