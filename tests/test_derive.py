"""derive.py: the seed's defaults, the task table, hardware rules and provenance."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import (
    TASKS,
    Hardware,
    HardwareError,
    PipelineError,
    Spec,
    SpecError,
    evolve,
    plan,
    profile,
)

ROWS = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]
CPU, GPU = Hardware(), profile("cuda-bf16")


def spec(**kw):
    return Spec(**{"base": "model", "train": ROWS, **kw})


def test_seed_training_defaults_exactly():
    assert dict(plan(spec(), CPU).training_args) == {
        "output_dir": "",
        "save_strategy": "no",
        "report_to": "none",
        "log_level": "warning",
        "use_cpu": True,
        "train_sampling_strategy": "group_by_length",
        "logging_steps": 0.02,
    }


@pytest.mark.parametrize("hardware", [profile("cuda"), profile("cuda-bf16"), profile("mps"), profile("xpu")])
def test_use_cpu_false_on_any_accelerator(hardware):
    assert plan(spec(), hardware).training_args["use_cpu"] is False
    assert plan(spec(), hardware).provenance["training_args.use_cpu"].source == "hardware"


def test_seed_quantize_defaults_on_cuda():
    p = plan(spec(quantize=True, lora=True), GPU)
    assert dict(p.quantization) == {
        "load_in_4bit": True,
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": "bfloat16",
        "llm_int8_skip_modules": ("classifier", "score", "pre_classifier", "pooler.dense", "classification_head", "logits_proj"),
    }
    assert p.provenance["quantization.load_in_4bit"].source == "seed"
    assert p.provenance["quantization.llm_int8_skip_modules"].source == "task"


def test_a_bf16_compute_dtype_on_a_gpu_without_bf16_is_said_and_kept():
    old_gpu = Hardware(cuda=True, bf16=False, devices=1, name="Tesla V100")
    p = plan(spec(quantize=True, lora=True), old_gpu)
    assert p.quantization["bnb_4bit_compute_dtype"] == "bfloat16"  # the seed's default stays
    assert any("on a GPU without bfloat16 (Tesla V100)" in n and "float16" in n for n in p.notes)
    assert not any("without bfloat16" in n for n in plan(spec(quantize=True, lora=True), GPU).notes)
    assert not any("without bfloat16" in n for n in plan(
        spec(quantize={"load_in_4bit": True, "bnb_4bit_compute_dtype": "float16"}, lora=True), old_gpu).notes)


def test_quantize_cleared_without_cuda_and_the_plan_says_so():
    p = plan(spec(quantize=True, lora=True), CPU)
    assert p.quantization is None
    assert any(n.startswith("quantize: dropped, no CUDA") for n in p.notes)


def test_quantize_dict_replaces_defaults_and_user_skip_modules_win():
    p = plan(spec(quantize={"load_in_8bit": True, "llm_int8_skip_modules": ["head"]}, lora=True), GPU)
    assert dict(p.quantization) == {"load_in_8bit": True, "llm_int8_skip_modules": ("head",)}
    assert {p.provenance[f"quantization.{k}"].source for k in p.quantization} == {"user"}


def test_quantize_on_cpu_keeps_quantization_with_a_note():
    p = plan(spec(quantize=True, lora=True, quantize_on_cpu=True), CPU)
    assert p.quantization["load_in_4bit"] is True
    assert any("kept on a CPU" in n for n in p.notes)


def test_quantize_without_lora_is_refused_where_it_really_quantizes():
    with pytest.raises(SpecError, match="add lora: true"):
        plan(spec(quantize=True), GPU)
    assert plan(spec(quantize=True), CPU).quantization is None


def test_seed_lora_defaults_exactly():
    p = plan(spec(lora=True), CPU)
    assert dict(p.lora) == {
        "r": 16,
        "lora_alpha": 8,
        "target_modules": "all-linear",
        "lora_dropout": 0.05,
        "bias": "none",
        "task_type": "SEQ_CLS",
    }
    assert p.task_type == "SEQ_CLS"


def test_lora_dict_replaces_defaults_and_says_what_it_leaves_out():
    p = plan(spec(lora={"r": 4}), CPU)
    assert dict(p.lora) == {"r": 4, "task_type": "SEQ_CLS"}
    assert any("leaves out the seed's lora_alpha, target_modules, lora_dropout, bias" in n for n in p.notes)


def test_a_dotted_lora_setting_keeps_the_seed_defaults_and_their_origin():
    from pipeline.core.spec import LORA_DEFAULTS

    p = plan(spec(lora={**LORA_DEFAULTS, "r": 8}), CPU)  # what `--set lora.r=8` gives inside `lora: true`
    assert p.provenance["lora.r"].source == "user"
    assert {p.provenance[f"lora.{k}"].source for k in LORA_DEFAULTS if k != "r"} == {"seed"}
    assert not any(n.startswith("lora:") for n in p.notes)


def test_user_lora_task_type_wins():
    p = plan(spec(lora={"r": 4, "task_type": "FEATURE_EXTRACTION"}), CPU)
    assert p.lora["task_type"] == "FEATURE_EXTRACTION"
    assert p.provenance["lora.task_type"].source == "user"


@pytest.mark.parametrize(
    ("task", "task_type", "model_class"),
    [
        ("text-classification", "SEQ_CLS", "AutoModelForSequenceClassification"),
        ("language-generation", "CAUSAL_LM", "AutoModelForCausalLM"),
        ("language-modeling", "FEATURE_EXTRACTION", "AutoModelForMaskedLM"),
        ("question-answering", "QUESTION_ANS", "AutoModelForQuestionAnswering"),
        ("sequence-sequence", "SEQ_2_SEQ_LM", "AutoModelForSeq2SeqLM"),
        ("token-detection", "FEATURE_EXTRACTION", "TokenDetection(AutoModelForMaskedLM, AutoModelForPreTraining)"),
    ],
)
def test_task_table(task, task_type, model_class):
    p = plan(spec(task=task, lora=True), CPU)
    assert (p.task_type, p.model_class, p.lora["task_type"]) == (task_type, model_class, task_type)


def test_no_lora_no_task_type():
    assert plan(spec(), CPU).task_type is None


def test_user_training_args_override_every_default():
    training = {"output_dir": "out", "save_strategy": "epoch", "report_to": "all", "log_level": "info",
                "use_cpu": False, "train_sampling_strategy": "random"}
    p = plan(spec(training=training), CPU)
    assert {k: p.training_args[k] for k in training} == training
    assert {p.provenance[f"training_args.{k}"].source for k in training} == {"user"}


def test_language_models_concatenated_into_blocks_are_not_length_grouped():
    assert "train_sampling_strategy" not in plan(spec(task="language-generation", train=[{"text": "a"}]), CPU).training_args
    p = plan(spec(task="language-generation", train=[{"text": "a"}], merge=None), CPU)
    assert p.training_args["train_sampling_strategy"] == "group_by_length"


def test_validation_turns_on_evaluation_each_epoch():
    assert plan(spec(validation=ROWS), CPU).training_args["eval_strategy"] == "epoch"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_a_cpu_is_an_error_that_names_the_fix(precision):
    with pytest.raises(HardwareError, match=f"training.{precision}.*--hardware"):
        plan(spec(training={precision: True}), CPU)


def test_bf16_on_a_pre_ampere_gpu_is_an_error():
    with pytest.raises(HardwareError, match="cuda-bf16"):
        plan(spec(training={"bf16": True}), profile("cuda"))
    assert plan(spec(training={"bf16": True}), GPU).training_args["bf16"] is True


def test_checkpoints_without_output_dir_are_refused():
    with pytest.raises(SpecError, match="set training.output_dir"):
        plan(spec(training={"save_strategy": "steps"}), CPU)


def test_all_problems_of_a_plan_reported_together():
    with pytest.raises(SpecError) as e:
        plan(spec(quantize=True, training={"bf16": True, "save_strategy": "epoch"}), profile("cuda"))
    assert len(e.value.problems) == 3
    assert type(e.value) is SpecError  # not all of them are about hardware


def test_fields_a_task_ignores_are_noted():
    notes = plan(spec(prefix="summarize: ", stride=64), CPU).notes
    assert "prefix: ignored, text-classification does not use it" in notes
    assert "stride: ignored, text-classification does not use it" in notes
    assert not plan(spec(), CPU).notes


def test_plan_renders_every_value_with_its_origin():
    text = str(plan(spec(lora=True, quantize=True), CPU))
    assert "training_args.use_cpu" in text and "hardware: no CUDA" in text
    assert "lora.r" in text and "seed: seed default" in text
    assert "quantize: dropped" in text


# -- properties ---------------------------------------------------------------------------

hardwares = st.sampled_from([Hardware(), *[profile(n) for n in ("cuda", "cuda-bf16", "mps", "xpu")]]) | st.builds(
    Hardware, cuda=st.booleans(), devices=st.integers(0, 8)
)
training = st.fixed_dictionaries(
    {},
    optional={
        "learning_rate": st.floats(1e-6, 1e-2),
        "num_train_epochs": st.integers(1, 5),
        "per_device_train_batch_size": st.integers(1, 64),
        "seed": st.integers(0, 2**31),
        "output_dir": st.sampled_from(["", "out"]),
        "report_to": st.sampled_from(["none", "all"]),
        "use_cpu": st.booleans(),
        "train_sampling_strategy": st.sampled_from(["random", "group_by_length"]),
    },
)
lora = st.none() | st.just(True) | st.fixed_dictionaries(
    {"r": st.integers(1, 64)}, optional={"lora_alpha": st.integers(1, 64), "lora_dropout": st.floats(0, 0.5)}
)
quantize = st.none() | st.booleans() | st.just({"load_in_8bit": True})
specs = st.builds(
    Spec,
    base=st.just("model"),
    task=st.sampled_from(sorted(TASKS)),
    train=st.just(ROWS),
    validation=st.none() | st.just(ROWS),
    maxlength=st.none() | st.integers(32, 4096),
    stride=st.integers(0, 8),
    merge=st.sampled_from(["concat", "pack", None]),
    quantize=quantize,
    quantize_on_cpu=st.booleans(),
    lora=lora,
    training=training,
)


@settings(max_examples=300, deadline=None)
@given(specs, hardwares)
def test_plan_is_total_and_deterministic(s, hw):
    """No precision request and no save strategy: every valid spec plans, the same each time."""
    if s.quantize and not s.lora and (hw.cuda or s.quantize_on_cpu):
        with pytest.raises(SpecError):
            plan(s, hw)
        return
    first = plan(s, hw)
    assert first == plan(s, hw)
    assert hash(first) == hash(plan(s, hw))
    assert set(first.provenance) >= {f"training_args.{k}" for k in first.training_args}


@settings(max_examples=300, deadline=None)
@given(specs, hardwares)
def test_no_quantization_without_cuda_unless_asked(s, hw):
    try:
        p = plan(s, hw)
    except PipelineError:
        return
    if not hw.cuda and not s.quantize_on_cpu:
        assert p.quantization is None
    if not s.quantize:
        assert p.quantization is None


@settings(max_examples=300, deadline=None)
@given(specs, hardwares)
def test_user_values_always_win(s, hw):
    try:
        p = plan(s, hw)
    except PipelineError:
        return
    for key, value in s.training.items():
        assert p.training_args[key] == value
        assert p.provenance[f"training_args.{key}"].source == "user"
    if isinstance(s.lora, dict):
        assert {k: p.lora[k] for k in s.lora} == dict(s.lora)


@settings(max_examples=200, deadline=None)
@given(specs)
def test_spec_round_trips_through_model_dump(s):
    assert Spec.model_validate(s.model_dump()) == s
    assert Spec.model_validate_json(s.model_dump_json()) == s
    assert evolve(s) == s


def test_the_plan_table_keeps_long_values_whole_and_origins_in_one_column():
    lines = str(plan(spec(), CPU)).splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[0] == "metrics")
    assert lines[at].endswith("regression: mse, pearson), with scikit-learn")  # whole, not cut or wrapped
    column = lines[at + 1].index("task: on validation data")
    assert lines[at + 1][:column].strip() == ""
    dtype = next(line for line in lines if line.split()[0] == "dtype")
    assert dtype.index("pipeline:") == column
    output_dir = next(line for line in lines if line.split()[0] == "training_args.output_dir")
    assert "`pipeline train` saves to --output or runs/<run id>" in output_dir


def test_the_plan_you_see_is_the_plan_the_run_uses(models):
    """`plan(spec, hardware)` reads the model's config as `start` does: the same default maxlength, memory
    estimate and lean_memory, not a config-less cousin."""
    from pipeline import start

    spec = Spec(base=models["bert"], train=[{"text": "a b", "label": 0}, {"text": "c", "label": 1}], lora=True)
    shown = plan(spec, Hardware())
    assert shown == start(spec, Hardware()).plan
    assert shown.memory is not None and shown.maxlength == 128  # the tiny BERT's positions


def test_mixed_precision_is_derived_from_the_hardware_with_its_origin():
    """bf16 where the accelerator has it, fp16 (with the Trainer's loss scaler) on a GPU without it, nothing on a
    CPU or MPS; the user's own setting wins, and the memory estimate follows."""
    bf16 = plan(spec(), profile("a100-80gb"))
    assert bf16.training_args["bf16"] is True and "fp16" not in bf16.training_args
    assert bf16.provenance["training_args.bf16"].source == "hardware"
    fp16 = plan(spec(), profile("t4-16gb"))
    assert fp16.training_args["fp16"] is True and "bf16" not in fp16.training_args
    assert "loss scal" in fp16.provenance["training_args.fp16"].reason
    for hardware in (CPU, profile("mps")):
        assert not {"bf16", "fp16"} & set(plan(spec(), hardware).training_args)
    assert "bf16" not in plan(spec(training={"fp16": True}), profile("a100-80gb")).training_args
    assert plan(spec(training={"bf16": False}), profile("a100-80gb")).training_args["bf16"] is False
    # a full fine-tune of float16 weights cannot take fp16's loss scaler (it unscales float32 gradients only)
    assert "fp16" not in plan(spec(dtype="float16"), profile("t4-16gb")).training_args
    big = {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 16,
           "intermediate_size": 5632, "vocab_size": 32000, "max_position_embeddings": 512, "torch_dtype": "float32"}
    derived = plan(spec(), profile("a100-80gb"), big).memory.total
    off = plan(spec(training={"bf16": False}), profile("a100-80gb"), big).memory.total
    assert derived < off


def test_the_plan_says_quantized_training_checkpoints_its_gradients():
    """peft's k-bit preparation turns gradient checkpointing on (the stages pass the plan's setting to it)."""
    quantized = plan(spec(quantize=True, lora=True), GPU)
    assert any(n.startswith("gradient checkpointing: on") for n in quantized.notes)
    off = plan(spec(quantize=True, lora=True, training={"gradient_checkpointing": False}), GPU)
    assert not any(n.startswith("gradient checkpointing") for n in off.notes)
    assert not any(n.startswith("gradient checkpointing") for n in plan(spec(lora=True), GPU).notes)


def test_checkpoints_are_limited_to_the_latest_two_unless_the_user_says():
    """A run that saves every few steps keeps two checkpoints (one complete while the next is written), not one per
    save; with none saved there is nothing to limit, and the user's own limit (None: all) wins."""
    saving = {"output_dir": "out", "save_strategy": "steps", "save_steps": 2}
    limited = plan(spec(training=saving), CPU)
    assert limited.training_args["save_total_limit"] == 2
    assert limited.provenance["training_args.save_total_limit"].source == "pipeline"
    assert "save_total_limit" not in plan(spec(), CPU).training_args
    assert plan(spec(training={**saving, "save_total_limit": None}), CPU).training_args["save_total_limit"] is None
    assert plan(spec(training={**saving, "save_total_limit": 5}), CPU).training_args["save_total_limit"] == 5


def test_qlora_under_fsdp_stores_the_4bit_weights_in_the_compute_dtype():
    """FSDP shards float parameters only: bitsandbytes' default uint8 storage fails ("Integer parameters are
    unsupported"), so under FSDP on CUDA the plan stores them as the compute dtype, and says why."""
    spec = Spec(base="m", train=[{"text": "a", "label": 0}], lora=True, quantize=True,
                training={"fsdp": "full_shard auto_wrap"})
    made = plan(spec, Hardware(cuda=True, bf16=True, devices=2, processes=2))
    assert made.quantization["bnb_4bit_quant_storage"] == made.quantization["bnb_4bit_compute_dtype"] == "bfloat16"
    assert made.provenance["quantization.bnb_4bit_quant_storage"].source == "pipeline"
    assert "bnb_4bit_quant_storage" not in plan(evolve(spec, training={}), Hardware(cuda=True, bf16=True)).quantization
