"""The memory estimate: arithmetic on hand-worked configs, monotonic properties, fit and advice."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import Hardware, Spec, estimate, evolve, plan, profile
from pipeline.core.memory import shape
from pipeline.core.memory import GiB, MiB, OVERHEAD, Setup, memory
from pipeline.testing import questions, sentences, sentiment, tagged_rows

TINY = {  # a Llama-style model small enough to work out on paper
    "model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 4096, "tie_word_embeddings": False,
}
BERT = {
    "model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
    "intermediate_size": 1536, "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
}
ROWS = [{"text": "a"}]


def lm(**fields):
    return Spec(base="m", task="language-generation", train=ROWS, **fields)


def test_shape_reads_llama_and_bert_configs():
    llama, bert = shape(TINY), shape(BERT)
    assert (llama.gated, llama.kv_heads, llama.head_dim, llama.tied, llama.dropout) == (True, 2, 16, False, False)
    # q, o: 64x64; k, v: 64x32; gate, up, down: 64x128; two layers
    assert llama.block_parameters() == 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128)
    assert (bert.gated, bert.dropout, bert.extra_embeddings) == (False, True, 512 + 2)
    assert bert.embedding_parameters() == (30522 + 514) * 384


def test_parts_worked_out_by_hand_for_a_full_fine_tune():
    """batch 2 x 16 tokens on the tiny Llama, float32, AdamW, on a CPU."""
    m = shape(TINY)
    parts = memory(m, Setup(task="language-generation", batch=2, tokens=16, language_model=True)).parts
    blocks = 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128)
    parameters = blocks + 2 * 6 * 64 + 1000 * 64 + 1000 * 64  # norms, embeddings, untied head
    assert parts["weights"] == parameters * 4
    assert parts["gradients"] == parameters * 4
    assert parts["optimizer"] == 2 * parameters * 4
    per_token = 6 * 64 + 2 * 32 + 4 * 128  # gated: norms, q/k/v, attention output, MLP inner values
    assert parts["activations"] == 2 * 32 * per_token * 4
    assert parts["logits"] == 32 * 1000 * (2 * 4 + 4)
    assert parts["overhead"] == OVERHEAD["cpu"]


def test_a_teacher_adds_its_weights_and_logits_to_the_peak():
    """Distillation: the frozen teacher's weights, and its logits with the float32 copies of the term."""
    m = shape(TINY)
    alone = memory(m, Setup(task="language-generation", batch=2, tokens=16, language_model=True))
    taught = memory(m, Setup(task="language-generation", batch=2, tokens=16, language_model=True, teacher=m))
    parameters = 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128) + 2 * 6 * 64 + 2 * 1000 * 64
    assert taught.parts["teacher"] == parameters * 4 + 32 * 1000 * (4 + 3 * 4)
    assert taught.total == alone.total + taught.parts["teacher"]
    assert "teacher" not in alone.parts
    # the plan reads the teacher's config beside the base's
    spec = lm(maxlength=16, teacher="t", training={"per_device_train_batch_size": 2})
    assert plan(spec, Hardware(), TINY, TINY).memory.parts["teacher"] == taught.parts["teacher"]
    assert any("teacher is not counted" in n for n in plan(spec, Hardware(), TINY).notes)


def test_lora_and_qlora_parts_worked_out_by_hand():
    m = shape(TINY)
    lora = memory(m, Setup(task="language-generation", batch=2, tokens=16, lora_r=4, language_model=True)).parts
    adapted = 2 * 4 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 2 + (128 + 64))  # r x (in + out), 7 linears
    assert lora["adapters"] == adapted * 4
    assert lora["gradients"] == adapted * 4 and lora["optimizer"] == 2 * adapted * 4
    nf4 = memory(m, Setup(task="language-generation", batch=2, tokens=16, lora_r=4, quantized_bits=4,
                          double_quant=False, language_model=True)).parts
    blocks, others = m.block_parameters(), 2 * 6 * 64 + 2 * 1000 * 64
    assert nf4["weights"] == int(blocks * (0.5 + 4 / 64) + others * 4)  # a float32 constant per 64 weights
    double = memory(m, Setup(task="language-generation", batch=2, tokens=16, lora_r=4, quantized_bits=4,
                             double_quant=True, language_model=True)).parts
    assert double["weights"] < nf4["weights"]
    dropped = memory(m, Setup(task="language-generation", batch=2, tokens=16, lora_r=4, lora_dropout=0.05,
                              language_model=True)).parts
    inputs = 2 * (64 * 4 + 64 * 2 + 128)  # the in-features of q, k, v, o, gate, up (64) and down (128), 2 layers
    assert dropped["activations"] - lora["activations"] == 32 * inputs  # one byte a value, 32 tokens


def test_checkpointing_keeps_one_input_per_layer_and_one_layer():
    m = shape(TINY)
    setup = Setup(task="language-generation", batch=2, tokens=16, language_model=True, checkpointing=True)
    per_token = 6 * 64 + 2 * 32 + 4 * 128
    assert memory(m, setup).parts["activations"] == 2 * 32 * 64 * 4 + 32 * per_token * 4


def test_attention_matrix_counted_only_where_it_is_kept():
    bert = shape(BERT)
    cpu = memory(bert, Setup(task="text-classification", batch=8, tokens=512)).parts["activations"]
    gpu = memory(bert, Setup(task="text-classification", batch=8, tokens=512, device="cuda")).parts["activations"]
    assert cpu - gpu == 6 * 8 * 12 * 512**2 * 13  # CPU SDPA with attention dropout: scores, softmax, mask, output


def test_optimizers():
    m = shape(TINY)
    base = Setup(task="language-generation", batch=1, tokens=8, language_model=True)
    adam = memory(m, base).parts["optimizer"]
    assert memory(m, Setup(**{**base.__dict__, "optimizer": "adamw_bnb_8bit"})).parts["optimizer"] == adam // 4
    assert memory(m, Setup(**{**base.__dict__, "optimizer": "sgd"})).parts["optimizer"] == 0
    assert 0 < memory(m, Setup(**{**base.__dict__, "optimizer": "adafactor"})).parts["optimizer"] < adam // 10


def test_plan_shows_the_estimate_and_whether_it_fits():
    spec = lm(maxlength=64, lora=True)
    big = plan(spec, profile("h100-80gb"), TINY)
    assert big.memory.fits and big.memory.margin > 78 * GiB
    assert "fits" in str(big) and "activations" in str(big)
    assert plan(spec, Hardware(), TINY).memory.fits is None  # the bare CPU profile has no memory size
    assert plan(spec, Hardware()).memory is None and "no estimate" in str(plan(spec, Hardware()))
    assert big.model_dump(mode="json")["memory"]["fits"] is True


def test_suggestions_each_fit_and_use_settings_that_apply():
    """A job 1.5x too big: every suggestion is one --set change whose own estimate fits."""
    spec = lm(maxlength=512, training={"per_device_train_batch_size": 16})
    total = estimate(spec, Hardware(), TINY).total
    tight = Hardware(memory=int(total / 1.5))
    result = plan(spec, tight, TINY).memory
    assert result.fits is False and result.suggestions
    assert "does not fit" in result.summary()
    for suggestion in result.suggestions:
        assert suggestion.total <= tight.memory
        training = dict(spec.training)
        changes = {}
        for key, value in suggestion.settings.items():
            if key.startswith("training."):
                training[key.removeprefix("training.")] = value
            else:
                changes[key] = value
        applied = evolve(spec, training=training, **changes)
        assert estimate(applied, tight, TINY).total == suggestion.total


def test_quantize_is_suggested_on_cuda_and_applies():
    """A ~1B model in LoRA just too big for a card: QLoRA is among the changes, with its own estimate."""
    big = {**TINY, "vocab_size": 32000, "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 16,
           "num_key_value_heads": 4, "intermediate_size": 5632}
    spec = lm(maxlength=256, lora=True)
    total = estimate(spec, profile("cuda-bf16"), big).total
    card = Hardware(cuda=True, bf16=True, devices=1, memory=int(total * 0.9))
    suggestions = plan(spec, card, big).memory.suggestions
    qlora = next(s for s in suggestions if "quantize" in s.settings)
    assert qlora.total == estimate(evolve(spec, quantize=True), card, big).total <= card.memory


def test_default_maxlength_is_the_context_capped_and_halved_to_fit():
    long = {**TINY, "max_position_embeddings": 131072}
    assert plan(lm(), profile("h100-80gb"), long).maxlength == 2048
    origin = plan(lm(), profile("h100-80gb"), long).provenance["maxlength"]
    assert origin.source == "pipeline" and "capped" in origin.reason
    small = Hardware(memory=OVERHEAD["cpu"] + 40 * MiB)
    fitted = plan(lm(), small, long)
    assert fitted.maxlength < 2048 and fitted.memory.fits and "halved" in fitted.provenance["maxlength"].reason
    assert plan(lm(maxlength=100), small, long).maxlength == 100  # the user's value is never changed
    assert plan(lm(), Hardware(), {**TINY, "max_position_embeddings": 512}).maxlength == 512


def test_cpu_memory_is_shared_by_processes():
    assert Hardware(memory=8 * GiB, processes=4).available == 2 * GiB
    assert Hardware(cuda=True, devices=4, processes=4, memory=8 * GiB).available == 8 * GiB


def test_estimate_reads_the_config_of_a_model_folder(models):
    spec = Spec(base=models["bert"], train=ROWS, maxlength=32)
    assert estimate(spec, Hardware()).parts["weights"] > 0


def test_estimate_without_a_config_says_so():
    with pytest.raises(ValueError, match="no config.json"):
        estimate(Spec(base="/nowhere/model", train=ROWS), Hardware())


setups = st.builds(
    Setup,
    task=st.sampled_from(["language-generation", "text-classification"]),
    batch=st.integers(1, 64),
    tokens=st.integers(1, 4096),
    device=st.sampled_from(["cpu", "cuda"]),
    lora_r=st.one_of(st.none(), st.integers(1, 16)),
    quantized_bits=st.sampled_from([None, 4]),
    checkpointing=st.sampled_from([None, False, True]),
    optimizer=st.sampled_from(["adamw_torch_fused", "adamw_bnb_8bit", "sgd", "adafactor"]),
    mixed_precision=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(setups, st.sampled_from([TINY, BERT]))
def test_more_work_never_lowers_the_estimate(setup, config):
    """More batch, more tokens, no checkpointing, or full instead of LoRA (with AdamW): never less memory.

    (LoRA's adapters are extra weights: with SGD, which keeps no state, a full fine-tune can need less.)
    """
    m = shape(config)
    total = memory(m, setup).total
    assert total > 0
    grow = lambda **c: memory(m, Setup(**{**setup.__dict__, **c})).total  # noqa: E731
    assert grow(batch=setup.batch + 1) >= total
    assert grow(tokens=setup.tokens + 1) >= total
    assert grow(checkpointing=False) >= total
    if setup.lora_r and not setup.quantized_bits and "adam" in setup.optimizer:
        assert grow(lora_r=None) >= total


@pytest.mark.slow
def test_estimate_has_the_order_of_magnitude_of_a_real_run(models):
    """A tiny Llama trained for real: the estimate is within 4x of the tensors it held."""
    import resource

    from pipeline import fine_tune, start
    from pipeline.testing import sentences

    spec = Spec(base=models["llama"], task="language-generation", train=[{"text": t} for t in sentences(64)],
                maxlength=64, training={"max_steps": 2, "per_device_train_batch_size": 8, "logging_strategy": "no"})
    run = start(spec, Hardware())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fine_tune(run)
    estimated = run.plan.memory.total - OVERHEAD["cpu"]
    assert 0 < estimated < 64 * MiB  # a 0.2M-parameter model: weights, states and activations are small
    peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert peak_growth < 4 * run.plan.memory.total


def test_freed_memory_goes_back_to_the_os_only_when_memory_is_tight():
    """Lean host memory costs speed: the plan picks it when the estimate passes half the memory."""
    spec = lm(maxlength=16)
    need = plan(spec, Hardware(), TINY).memory.total
    assert plan(spec, Hardware(memory=need * 3), TINY).lean_memory is False
    tight = plan(spec, Hardware(memory=int(need * 1.5)), TINY)
    assert tight.lean_memory is True and "a lower peak first" in tight.provenance["lean_memory"].reason
    assert plan(spec, Hardware(), None).lean_memory is False  # no estimate: speed first
    assert plan(lm(maxlength=16, lean_memory=True), Hardware(memory=need * 3), TINY).lean_memory is True
    assert plan(lm(maxlength=16, lean_memory=True), profile("cuda"), TINY).lean_memory is False


def _parameters(config):
    model = shape(config)
    head = 0 if model.tied else model.vocab * model.hidden
    return model.block_parameters() + model.other_parameters() + model.embedding_parameters() + head


@pytest.mark.parametrize(("config", "published"), [
    ({"model_type": "gemma", "vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576,
      "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 256}, 8.54e9),
    ({"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072,
      "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
      "tie_word_embeddings": True}, 0.596e9),
    ({"model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
      "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
      "num_experts_per_tok": 2, "tie_word_embeddings": False}, 46.7e9),
], ids=["gemma-7b head_dim", "qwen3-0.6b head_dim", "mixtral-8x7b experts"])
def test_head_dim_and_experts_count_as_the_published_sizes(config, published):
    assert _parameters(config) == pytest.approx(published, rel=0.02)


def test_a_mixture_keeps_activations_of_the_experts_a_token_runs_through():
    dense = {"model_type": "mixtral", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 4}
    moe = {**dense, "num_local_experts": 8, "num_experts_per_tok": 2}
    setup = Setup(task="language-generation", batch=4, tokens=32, lora_r=8, language_model=True)
    one, two = memory(shape(dense), setup), memory(shape(moe), setup)
    assert two.parts["activations"] > one.parts["activations"]  # two experts' MLPs a token, not one
    assert shape(moe).block_parameters() > 5 * shape(dense).block_parameters()  # eight experts' MLPs
    attention = 4 * 2 * 8 * (64 + 64) * 4  # q, k, v, o x 2 layers x r 8 x (in + out) x float32
    assert two.parts["adapters"] == attention < one.parts["adapters"]  # all-linear: the experts are fused


def test_a_regex_target_modules_is_resolved_as_peft_resolves_it(models):
    """peft matches a string target_modules against each module's full name; count what it adapts."""
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pipeline.core.memory import _adapted

    config = json.loads((Path(models["llama"]) / "config.json").read_text())
    for regex in (r".*\.(q_proj|v_proj)", r".*mlp\..*_proj", r".*self_attn\.[qkvo]_proj"):
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(models["llama"]),
                               LoraConfig(r=4, target_modules=regex))
        adapted = sum(1 for name, _ in model.named_modules() if name.endswith(".lora_A"))
        assert sum(n for *_, n in _adapted(shape(config), regex).values()) == adapted, regex


def test_engines_the_estimate_does_not_model_are_named_and_fsdp_on_a_cpu_is_said():
    spec = Spec(base="m", train=[{"text": "a", "label": 0}], training={"fsdp": "full_shard", "torch_compile": True})
    notes = plan(spec, Hardware(processes=2)).notes
    assert any("fsdp" in n and "plain DDP" in n for n in notes), notes


def test_within_the_estimates_error_of_the_limit_is_tight_with_changes_that_leave_room():
    """The estimate lands within about +-20% of measured peaks (bench/MEMORY.md): an estimate that fits with less
    room than that is called tight, and the changes offered leave that room."""
    spec = lm(maxlength=512, lora=True)
    total = estimate(spec, Hardware(), TINY).total
    close = plan(spec, Hardware(memory=int(total * 1.1)), TINY).memory
    assert close.fits and close.tight and "tight" in close.summary() and close.suggestions
    assert all(s.total * 1.2 <= close.available for s in close.suggestions)
    roomy = plan(spec, Hardware(memory=int(total * 1.3)), TINY).memory
    assert roomy.fits and not roomy.tight and "fits" in roomy.summary() and not roomy.suggestions


def test_the_default_length_is_kept_with_a_smaller_batch_and_the_same_effective_batch():
    """Where the model's length does not fit at the default batch but fits at a smaller one, the plan keeps the
    length (the data whole) and accumulates to the same effective batch, and says why; a batch the user set is
    kept, and the length halved instead."""
    long = {**TINY, "max_position_embeddings": 131072}
    one = estimate(lm(maxlength=2048, training={"per_device_train_batch_size": 1}), Hardware(), long).total
    eight = estimate(lm(maxlength=2048), Hardware(), long).total
    card = Hardware(memory=int(one * 1.25))
    assert eight * 1.2 > card.memory  # the default batch of 8 leaves too little room
    kept = plan(lm(), card, long)
    batch, steps = kept.training_args["per_device_train_batch_size"], kept.training_args["gradient_accumulation_steps"]
    assert kept.maxlength == 2048 and batch * steps == 8 and batch < 8
    assert kept.memory.total * 1.2 <= card.memory
    origin = kept.provenance["training_args.per_device_train_batch_size"]
    assert origin.source == "pipeline" and "keeps maxlength 2048" in origin.reason
    assert kept.provenance["training_args.gradient_accumulation_steps"].source == "pipeline"
    theirs = plan(lm(training={"per_device_train_batch_size": 8}), card, long)
    assert theirs.training_args["per_device_train_batch_size"] == 8 and theirs.maxlength < 2048


def test_when_only_cutting_texts_fits_alone_the_other_changes_are_offered_together():
    """LoRA of an 8B Llama at 4 x 4096 tokens on a 24 GB card: alone, only maxlength=64 fits; the changes that keep
    the texts whole are offered together, in turn until they fit."""
    llama8b = {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "num_hidden_layers": 32,
               "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
               "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    spec = lm(lora=True, maxlength=4096, training={"per_device_train_batch_size": 4})
    found = plan(spec, profile("rtx4090-24gb"), llama8b).memory.suggestions
    whole = [s for s in found if "maxlength" not in s.settings]
    assert len(whole) == 1 and whole[0].why == "these together" and whole[0].total * 1.2 <= 24 * GiB
    assert {"training.gradient_checkpointing", "quantize"} <= set(whole[0].settings)


TRAINED = {  # task: (tiny model, rows)
    "text-classification": ("bert", lambda: [{"text": r["text"], "label": r["label"]} for r in sentiment(8)]),
    "language-generation": ("llama", lambda: [{"text": t} for t in sentences(8)]),
    "language-modeling": ("bert", lambda: [{"text": t} for t in sentences(8)]),
    "question-answering": ("bert", lambda: questions(8)),
    "sequence-sequence": ("bart", lambda: [{"source": t, "target": t} for t in sentences(8)]),
    "token-detection": ("electra", lambda: [{"text": t} for t in sentences(8)]),
    "token-classification": ("bert", lambda: tagged_rows(8)),
}


@pytest.mark.parametrize("task", TRAINED)
def test_the_plans_trainable_count_is_the_runs(models, task, tmp_path):
    """The estimate's trainable parameters are the ones the run trains, for every task, with LoRA and without
    (and QLoRA for one): heads peft trains in full, a pooler LoRA adapts, the data's label count, two models.
    The labels are read from a data file, as a user gives them."""
    from pipeline import adapt, load, quantize, start

    name, rows = TRAINED[task]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows()))
    for changes in ({"lora": True}, {"lora": False}) + (({"lora": True, "quantize": True},)
                                                         if task == "text-classification" else ()):
        spec = Spec(base=models[name], task=task, train=str(tmp_path / "train.jsonl"), maxlength=32, **changes)
        run = start(spec, Hardware())
        trained = adapt(quantize(load(run))).parameters.trainable
        assert (task, changes, run.plan.memory.trainable) == (task, changes, trained)
        assert plan(spec, Hardware()).memory.trainable == trained  # the public plan counts the same way


LLAMA_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
            "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


@pytest.mark.parametrize(("stage", "per_parameter"), [(1, 4 + 12 / 64), (2, 2 + 14 / 64), (3, 16 / 64)])
def test_zero_shards_model_states_as_the_zero_paper_counts_them(stage, per_parameter):
    """Mixed-precision Adam under ZeRO on 64 processes: 2 + 2 + 12 bytes a parameter, the optimizer's 12 sharded
    at stage 1, the gradients' 2 too at stage 2, the weights' 2 too at stage 3 (the ZeRO paper, Rajbhandari et al.
    2020, Figure 1: a 7.5B model takes 31.4, 16.6 and 1.9 GB a GPU; 120 GB unsharded)."""
    spec = Spec(base="m", task="language-generation", train=ROWS, maxlength=512, zero=stage)
    made = plan(spec, Hardware(cuda=True, bf16=True, devices=64, processes=64), LLAMA_8B)
    parts, parameters = made.memory.parts, made.memory.trainable
    states = parts["weights"] + parts["gradients"] + parts["optimizer"]
    assert states / parameters == pytest.approx(per_parameter, rel=1e-6)
    assert round(per_parameter * 7.5, 1) == {1: 31.4, 2: 16.6, 3: 1.9}[stage]
    assert made.training_args["deepspeed"]["zero_optimization"]["stage"] == stage
    assert made.provenance["training_args.deepspeed"].reason == f"zero: {stage}"


def test_several_processes_hold_what_ddp_and_deepspeed_keep_beside_the_model_states():
    """Measured on 2 CPU processes (bench/MEMORY.md, bert-110m): DDP holds its gradient buckets, a copy of every
    gradient, beside the gradients (+421 MB over one process); DeepSpeed keeps a float32 copy of each process's
    shard for the optimizer whatever the module's dtype; ZeRO-3 gathers the whole module while a step runs
    (for its first 1e9 parameters, DeepSpeed's stage3_max_live_parameters), in the module's dtype."""
    m = shape(TINY)
    blocks = 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128)
    parameters = blocks + 2 * 6 * 64 + 1000 * 64 + 1000 * 64
    setup = Setup(task="language-generation", batch=2, tokens=16, language_model=True)
    one = memory(m, setup)
    ddp = memory(m, replace(setup, shards=2))
    assert ddp.parts["buckets"] == parameters * 4 and ddp.total == one.total + parameters * 4
    assert "buckets" not in one.parts
    zero2 = memory(m, replace(setup, shards=2, zero=2))
    assert zero2.parts["optimizer"] == (2 + 1) * parameters * 4 // 2  # two Adam states and the master copy
    assert "buckets" not in zero2.parts and "gathered" not in zero2.parts
    zero3 = memory(m, replace(setup, shards=2, zero=3))
    assert zero3.parts["gathered"] == parameters * 4
    # ZeRO-3's optimizer holds the gradient shards in one buffer from the start, through the whole step
    assert zero3.parts["gradients"] == 0 and zero3.parts["optimizer"] == (2 + 1 + 1) * parameters * 4 // 2
    transient = zero3.parts["activations"] + zero3.parts["logits"] + zero3.parts["gathered"]
    assert zero3.total == sum(zero3.parts[k] for k in ("weights", "optimizer", "overhead")) + transient
    big = memory(shape(LLAMA_8B), Setup(task="language-generation", batch=1, tokens=512, language_model=True,
                                        device="cuda", mixed_precision=True, zero=3, shards=8))
    assert big.parts["gathered"] == 10**9 * 2  # 16-bit module, the live-parameter limit


def test_a_full_8b_fine_tune_does_not_fit_one_a100_and_fits_eight_under_zero_3():
    """One A100 80 GB: does not fit, and ZeRO-3 over the fewest GPUs that fit is offered; planned for a node of
    eight (--processes 8), each holds an eighth of the weights, gradients and optimizer state."""
    from pipeline.core.plan import deepspeed_config

    spec = Spec(base="m", task="language-generation", train=ROWS, maxlength=2048,
                training={"per_device_train_batch_size": 1, "gradient_checkpointing": True})
    one = plan(spec, profile("a100-80gb"), LLAMA_8B).memory
    assert one.fits is False
    offered = next(s for s in one.suggestions if dict(s.settings) == {"zero": 3})
    assert "ZeRO-3 over 2 GPUs" in offered.why and offered.total < 80 * GiB / 1.2
    node = profile("a100-80gb").model_copy(update={"processes": 8, "devices": 8})
    sharded = plan(evolve(spec, zero=3), node, LLAMA_8B).memory
    assert sharded.fits and not sharded.tight and "/ 8 processes (ZeRO-3)" in sharded.inputs["weights"]
    # (8 Adam + 4 master) / 8 processes, and the 2-byte gradient shards ZeRO-3's optimizer keeps
    assert sharded.parts["optimizer"] == one.parts["optimizer"] * 12 // 8 // 8 + one.trainable * 2 // 8
    offloaded = plan(evolve(spec, zero=3, offload="parameters"), node, LLAMA_8B)
    assert offloaded.memory.parts["optimizer"] == offloaded.memory.parts["weights"] == 0
    assert offloaded.training_args["deepspeed"] == deepspeed_config(3, "parameters")
    assert offloaded.training_args["deepspeed"]["zero_optimization"]["offload_param"]["device"] == "cpu"


@pytest.mark.parametrize(("fields", "message"), [
    ({"offload": "optimizer"}, "offload: moves what ZeRO shards; set zero: too"),
    ({"zero": 2, "offload": "parameters"}, "offload: parameters needs zero: 3"),
    ({"zero": 3, "training": {"deepspeed": "ds.json"}}, "leave out training.deepspeed"),
    ({"zero": 3, "lora": True, "quantize": True}, "zero: not planned with 4-bit weights"),
])
def test_sharding_that_cannot_be_planned_is_refused(fields, message):
    from pipeline import SpecError

    with pytest.raises(SpecError, match=message):
        Spec(base="m", task="language-generation", train=ROWS, **fields)


def test_a_smaller_batch_offered_keeps_the_effective_batch_when_it_is_not_a_power_of_two():
    """Batch 12 halved to 6, 3, 1: 2, 4 and 12 accumulation steps (doubling the steps would offer 1 x 8)."""
    m = shape(TINY)
    setup = Setup(task="language-generation", batch=12, tokens=2048, language_model=True)
    needed = memory(m, setup).total
    for available in (needed * 2 // 3, needed // 4, needed // 20):
        offered = [s for s in memory(m, setup, available).suggestions
                   if "training.per_device_train_batch_size" in s.settings]
        for suggestion in offered:
            batch = suggestion.settings["training.per_device_train_batch_size"]
            assert batch * suggestion.settings["training.gradient_accumulation_steps"] == 12, suggestion
