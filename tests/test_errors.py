"""The error catalogue: bad input gets our error, naming what is wrong and the fix, and loses nothing."""


import os

import pytest
from datasets import Dataset, DatasetDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import TASKS, DataError, Hardware, HardwareError, PipelineError, Spec, SpecError, fine_tune, plan, start
from pipeline.core.fields import LORA_CONFIG, TRAINING_ARGUMENTS, TRAINING_CHOICES, TRAINING_TYPES
from pipeline.core.spec import TRAINING_RANGES
from pipeline.io.preflight import preflight
from pipeline.testing import questions, sentiment

CPU = Hardware()
ROWS = sentiment(8)
TEXTS = [{"text": "the car is red"}] * 4


def files(tmp):
    """Bad data files, by name."""
    (tmp / "broken.jsonl").write_text('{"text": "a", "label": 0}\n{not json\n')
    (tmp / "object.json").write_text('{"rows": 3}')
    (tmp / "notes.txt").write_text("text")
    (tmp / "no-model").mkdir()
    (tmp / "gap.csv").write_text("text,label\n,0\nb,1\n")
    (tmp / "nolabel.csv").write_text("text,label\na,0\nb,\nc,1\n")
    return tmp


# name -> (spec fields, error type, words the message must hold). "{bert}", "{tmp}" are filled in.
CATALOGUE = {
    # spec fields
    "unknown training argument": ({"training": {"learning_rte": 1e-3}}, SpecError, ["training.learning_rte", "did you mean 'learning_rate'"]),
    "unknown task": ({"task": "text-clasification"}, SpecError, ["task", "did you mean 'text-classification'"]),
    "maxlength zero": ({"maxlength": 0}, SpecError, ["maxlength", "greater than or equal to 1", "got 0"]),
    "lora rank zero": ({"lora": {"r": 0}}, SpecError, ["lora.r", ">= 1", "got 0", "lora: {r: 16}"]),
    "lora rank not a number": ({"lora": {"r": "big"}}, SpecError, ["lora.r", "got 'big'"]),
    "lora dropout above one": ({"lora": {"lora_dropout": 1.5}}, SpecError, ["lora.lora_dropout", "[0, 1)", "1.5"]),
    "lora alpha negative": ({"lora": {"lora_alpha": -1}}, SpecError, ["lora.lora_alpha", "> 0", "-1"]),
    "lora key typo": ({"lora": {"lora_alfa": 16}}, SpecError, ["lora.lora_alfa", "did you mean 'lora_alpha'"]),
    "lora bias": ({"lora": {"bias": "some"}}, SpecError, ["lora.bias", "'none', 'all' or 'lora_only'", "'some'"]),
    "lora task type": ({"lora": {"task_type": "SEQ_CLASS"}}, SpecError, ["lora.task_type", "did you mean 'SEQ_CLS'"]),
    "quantize without bits": ({"quantize": {"bnb_4bit_quant_type": "nf4"}}, SpecError, ["quantize", "exactly one of load_in_4bit or load_in_8bit"]),
    "quantize both bits": ({"quantize": {"load_in_4bit": True, "load_in_8bit": True}}, SpecError, ["load_in_4bit=True, load_in_8bit=True"]),
    "quantize type": ({"quantize": {"load_in_4bit": True, "bnb_4bit_quant_type": "int4"}}, SpecError, ["quantize.bnb_4bit_quant_type", "'int4'"]),
    "quantize dtype": ({"quantize": {"load_in_4bit": True, "bnb_4bit_compute_dtype": "float8"}}, SpecError, ["bnb_4bit_compute_dtype", "'float8'"]),
    "quantize key typo": ({"quantize": {"load_in_4bits": True}}, SpecError, ["quantize.load_in_4bits", "did you mean 'load_in_4bit'"]),
    "quantize not a mapping": ({"quantize": "4bit"}, SpecError, ["quantize", "'4bit'"]),
    "negative stride": ({"stride": -1}, SpecError, ["stride", "greater than or equal to 0"]),
    "zero tokenizers": ({"tokenizers": 0}, SpecError, ["tokenizers", "greater than or equal to 1"]),
    "unknown merge": ({"task": "language-modeling", "train": TEXTS, "merge": "glue"}, SpecError, ["merge", "'glue'"]),
    "columns for another task": ({"task": "sequence-sequence", "columns": ["source"]}, SpecError, ["columns: sequence-sequence takes 2 columns", "['source', 'target']"]),
    "base of the wrong type": ({"base": 3}, SpecError, ["base: expected a path, a hub id or a (model, tokenizer) pair", "int"]),
    "train of the wrong type": ({"train": 5}, SpecError, ["train: expected a file path", "got int"]),
    "rows that are not dicts": ({"validation": [1, 2]}, SpecError, ["validation: rows must be dicts", "row 0 is int"]),
    "a DatasetDict": ({"train": DatasetDict(train=Dataset.from_list(ROWS))}, SpecError, ["train: got a DatasetDict with splits ['train']", "data['train']"]),
    "unknown spec field": ({"learning_rate": 1e-3}, SpecError, ["learning_rate: unknown field", "did you mean training.learning_rate"]),
    "misspelled spec field": ({"validaton": ROWS}, SpecError, ["validaton: unknown field", "did you mean 'validation'"]),
    "misspelled maxlength": ({"maxlenght": 64}, SpecError, ["maxlenght: unknown field", "did you mean 'maxlength'"]),
    "LoRA field at the top": ({"r": 8}, SpecError, ["r: unknown field", "lora.r"]),
    "question stride too big": ({"task": "question-answering", "train": questions(4), "maxlength": 64, "stride": 128}, SpecError, ["stride", "stride=128, maxlength=64", "stride: 16"]),
    "no training data": ({"train": None}, SpecError, ["train: no training data (got None)"]),
    "maxlength true": ({"maxlength": True}, SpecError, ["maxlength", "got True"]),
    "a column without a name": ({"columns": ["text", None]}, SpecError, ["columns: position 1 has no name"]),
    "a pair that is no model": ({"base": (1, 2)}, SpecError, ["base: a loaded pair is (model, tokenizer)", "(int, int)"]),
    "lora targets of the wrong type": ({"lora": {"target_modules": 5}}, SpecError, ["lora.target_modules", "got 5"]),
    "lora flag as text": ({"lora": {"use_dora": "no"}}, SpecError, ["lora.use_dora: must be true or false"]),
    "quantize flag as text": ({"quantize": {"load_in_4bit": "false"}}, SpecError, ["quantize.load_in_4bit: must be true or false", "'false'"]),
    "skip modules as text": ({"quantize": {"load_in_4bit": True, "llm_int8_skip_modules": "classifier"}}, SpecError, ["quantize.llm_int8_skip_modules", "list of module names"]),
    "compute dtype uint8": ({"quantize": {"load_in_4bit": True, "bnb_4bit_compute_dtype": "uint8"}}, SpecError, ["bnb_4bit_compute_dtype", "'uint8'"]),
    # training values (each numeric field's range is also checked below, generated from the field list)
    "batch size zero": ({"training": {"per_device_train_batch_size": 0}}, SpecError, ["training.per_device_train_batch_size: must be >= 1 (got 0)", "per_device_train_batch_size: 8"]),
    "negative learning rate": ({"training": {"learning_rate": -1}}, SpecError, ["training.learning_rate: must be >= 0 (got -1)"]),
    "learning rate as text": ({"training": {"learning_rate": "abc"}}, SpecError, ["training.learning_rate: must be a number (got 'abc')"]),
    "no accumulation": ({"training": {"gradient_accumulation_steps": 0}}, SpecError, ["training.gradient_accumulation_steps: must be >= 1"]),
    "negative epochs": ({"training": {"num_train_epochs": -2}}, SpecError, ["training.num_train_epochs: must be > 0 (got -2)"]),
    "zero steps": ({"training": {"max_steps": 0}}, SpecError, ["training.max_steps: must be -1", "or >= 1"]),
    "fractional step count": ({"training": {"logging_steps": 2.5}}, SpecError, ["training.logging_steps", "whole number"]),
    "misspelled strategy": ({"training": {"eval_strategy": "epochs"}}, SpecError, ["training.eval_strategy: must be one of", "did you mean 'epoch'"]),
    "unknown optimizer": ({"training": {"optim": "adamw_torc"}}, SpecError, ["training.optim: must be one of", "did you mean 'adamw_torch'"]),
    "flag as text": ({"training": {"bf16": "yes"}}, SpecError, ["training.bf16: must be true or false (got 'yes')"]),
    "two mixed precisions": ({"training": {"bf16": True, "fp16": True}}, SpecError, ["bf16 and fp16 are both set"]),
    "output_dir null": ({"training": {"output_dir": None}}, SpecError, ["training.output_dir: null", "use ''"]),
    "evaluation without validation data": ({"training": {"eval_strategy": "steps"}}, SpecError, ["training.eval_strategy: evaluation needs validation data", "add validation"]),
    "best model without checkpoints": ({"validation": ROWS, "training": {"load_best_model_at_end": True}}, SpecError, ["training.load_best_model_at_end", "save_strategy: epoch"]),
    "output_dir that is a file": ({"training": {"output_dir": "{tmp}/notes.txt"}}, SpecError, ["training.output_dir", "is a file, not a folder"]),
    "missing base": ({"base": None}, SpecError, ["base"]),
    # what the hardware or the plan cannot do
    "bf16 on a CPU": ({"training": {"bf16": True}}, HardwareError, ["training.bf16", "cannot train in bfloat16", "--hardware cuda-bf16"]),
    "fp16 on a CPU": ({"training": {"fp16": True}}, HardwareError, ["training.fp16", "no accelerator", "--hardware cuda"]),
    "checkpoints without output_dir": ({"training": {"save_strategy": "steps", "output_dir": ""}}, SpecError, ["training.save_strategy", "set training.output_dir"]),
    "resume without output_dir": ({"checkpoint": True, "training": {"output_dir": ""}}, SpecError, ["checkpoint: true", "training.output_dir"]),
    "4-bit without LoRA": ({"quantize": True, "quantize_on_cpu": True}, SpecError, ["quantize", "add lora: true"]),
    # data
    "missing data file": ({"train": "{tmp}/nope.jsonl"}, DataError, ["train: no such file", "nope.jsonl"]),
    "unknown data format": ({"train": "{tmp}/notes.txt"}, DataError, ["notes.txt", "is not a data file", ".jsonl"]),
    "broken jsonl": ({"train": "{tmp}/broken.jsonl"}, DataError, ["train: cannot parse", "broken.jsonl"]),
    "json that is not rows": ({"train": "{tmp}/object.json"}, DataError, ["expected a list of rows"]),
    "empty data": ({"train": []}, DataError, ["train: the dataset is empty"]),
    "missing label column": ({"train": [{"text": "a", "gold": 1}]}, DataError, ["missing column ['label']", "found ['text', 'gold']"]),
    "missing validation column": ({"validation": [{"sentence": "a", "label": 1}]}, DataError, ["validation: missing column ['text']"]),
    "None text": ({"train": [{"text": None, "label": 0}, {"text": "a", "label": 1}]}, DataError, ["column 'text': row 1 without text", "None"]),
    "empty text": ({"train": [{"text": "a", "label": 0}, {"text": " ", "label": 1}]}, DataError, ["row 2 without text"]),
    "labels of two kinds": ({"train": [{"text": "a", "label": 0}], "validation": [{"text": "a", "label": "pos"}]}, DataError, ["labels mix int and string"]),
    "multi-label vectors of two lengths": ({"train": [{"text": "a", "label": [1, 0]}, {"text": "b", "label": [1]}]}, DataError, ["multi-label vectors differ in length ([1, 2])"]),
    "a None label": ({"train": [{"text": "a", "label": 1}, {"text": "b", "label": None}]}, DataError, ["label None in train row 2"]),
    "a NaN label": ({"train": [{"text": "a", "label": 1.0}, {"text": "b", "label": float("nan")}]}, DataError, ["label nan in train row 2"]),
    "one class only": ({"train": [{"text": "a", "label": "pos"}] * 3}, DataError, ["every row has the label 'pos'", "at least two classes"]),
    "empty multi-label vectors": ({"train": [{"text": "a", "label": []}] * 2}, DataError, ["multi-label vectors are empty"]),
    "labels of two kinds in one split": ({"train": [{"text": "a", "label": 1}, {"text": "b", "label": "pos"}]}, DataError, ["column 'label' mixes int (row 1) and str (row 2: 'pos')"]),
    "a column of mixed types": ({"train": [{"text": "a", "label": 1}, {"text": ["b"], "label": 0}]}, DataError, ["train: column 'text' mixes str (row 1) and list (row 2"]),
    "a csv with an empty text cell": ({"train": "{tmp}/gap.csv"}, DataError, ["column 'text': row 1 without text"]),
    "a csv with an empty label cell": ({"train": "{tmp}/nolabel.csv"}, DataError, ["label None in train row 2"]),
    "a misspelled column": ({"train": [{"sentence": "a", "label": 1}], "columns": ["sentance", "label"]}, DataError, ["did you mean 'sentence' for 'sentance'", "columns: {text: sentence, label: label}"]),
    "answer not in context": ({"task": "question-answering", "maxlength": 64, "stride": 16, "train": [{"question": "q", "context": "the car is red", "answers": "green"}]}, DataError, ["row 1: answer 'green' is not in its context"]),
    "answer of the wrong shape": ({"task": "question-answering", "maxlength": 64, "stride": 16, "train": [{"question": "q", "context": "red", "answers": {"text": ["red"], "answer_start": []}}]}, DataError, ["row 1 is", "expected a string,"]),
    "seq2seq row without target": ({"task": "sequence-sequence", "train": [{"source": "a", "target": "b"}, {"source": "c", "target": None}]}, DataError, ["column 'target': row 2 without target"]),
    # models and files
    "no such model folder": ({"base": "./models/nope"}, SpecError, ["base: no such model folder './models/nope'"]),
    "a folder that is no model": ({"base": "{tmp}/no-model"}, SpecError, ["has no config.json", "save_pretrained"]),
    "a hub id while offline": ({"base": "someone/missing-model"}, SpecError, ["'someone/missing-model' is a hub id", "HF_HUB_OFFLINE"]),
    "maxlength beyond positions": ({"maxlength": 4096}, SpecError, ["maxlength: 4096 is beyond the model's 128 positions", "maxlength: 128"]),
    "metrics that do not import": ({"metrics": "nowhere:accuracy"}, SpecError, ["metrics: cannot import 'nowhere:accuracy'", "'module:function'"]),
    "no such generator": ({"task": "token-detection", "train": TEXTS, "generator": "./gen/nope"}, SpecError, ["generator: no such model folder"]),
    "no such checkpoint": ({"checkpoint": "{tmp}/checkpoint-9"}, SpecError, ["checkpoint: no such checkpoint folder", "checkpoint: true"]),
}


def fill(value, names):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict) and type(value) is dict:
        return {k: fill(v, names) for k, v in value.items()}
    return value


def _out_of_range(name):
    """A value just outside our range for a numeric training field."""
    low_bracket, low, high, high_bracket, _ = TRAINING_RANGES[name]
    return low - 1 if low_bracket == "[" else low


for _name, kind in TRAINING_TYPES.items():  # every numeric field: one value out of range, generated
    if kind.rstrip("?") in ("int", "float"):
        CATALOGUE[f"training.{_name} out of range"] = (
            {"training": {_name: _out_of_range(_name)}}, SpecError, [f"training.{_name}: must be"]
        )


def test_the_catalogue_is_large():
    assert len(CATALOGUE) >= 90


def test_every_numeric_training_field_has_a_range():
    numeric = {n for n, k in TRAINING_TYPES.items() if k.rstrip("?") in ("int", "float")}
    assert numeric == set(TRAINING_RANGES)


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_bad_input_gets_our_error_and_writes_nothing(name, models, tmp_path, monkeypatch):
    fields, error, words = CATALOGUE[name]
    monkeypatch.chdir(files(tmp_path))
    output = tmp_path / "out"
    fields = fill(fields, {"tmp": tmp_path, "bert": models["bert"]})
    given = {"base": models["bert"], "train": ROWS, **fields}
    given["training"] = {"output_dir": str(output), **given.get("training", {})}
    if given["base"] is None:
        del given["base"]
    with pytest.raises(error) as caught:
        fine_tune(start(Spec(**given), CPU))
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert not output.exists()


# -- fuzzing --------------------------------------------------------------------------------

junk = st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=False) | st.text(max_size=8)
cells = st.text(max_size=12) | st.integers(-2, 5) | st.floats(-1, 1) | st.none() | st.lists(st.integers(0, 1), max_size=3)
rows = st.lists(st.dictionaries(st.sampled_from(["text", "label", "question", "context", "answers", "source",
                                                 "target"]), cells, min_size=1), max_size=5)
fields = st.fixed_dictionaries(
    {"train": st.just(ROWS) | rows},
    optional={
        "task": st.sampled_from(sorted(TASKS)) | st.text(max_size=6),
        "validation": st.none() | rows,
        "maxlength": st.none() | st.integers(-2, 300) | junk,
        "stride": st.integers(-1, 200),
        "merge": st.sampled_from(["concat", "pack", None, "x"]),
        "columns": st.none() | st.lists(st.sampled_from(["text", "label", "other", None]), max_size=4),
        "quantize": st.none() | st.booleans() | st.dictionaries(st.sampled_from(["load_in_4bit", "load_in_8bit",
                                                                                  "bnb_4bit_quant_type", "x"]), junk),
        "quantize_on_cpu": st.booleans(),
        "lora": st.none() | st.booleans() | st.dictionaries(st.sampled_from(sorted(LORA_CONFIG) + ["x"]), junk),
        "training": st.dictionaries(st.sampled_from(sorted(TRAINING_ARGUMENTS) + ["x"]), junk, max_size=3).flatmap(
            lambda keys: st.fixed_dictionaries({k: junk | typed(k) for k in keys})
        ),
    },
)


def typed(key):
    """Values of the field's own type, in range and out of it."""
    kind = TRAINING_TYPES.get(key, "").rstrip("?")
    if key in TRAINING_CHOICES:
        return st.sampled_from([*TRAINING_CHOICES[key], "x"])
    return {"bool": st.booleans(), "int": st.integers(-3, 100), "float": st.floats(-1, 100, allow_nan=False),
            "str": st.text(max_size=6)}.get(kind, junk)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 250)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=fields, hardware=st.sampled_from([Hardware(), Hardware(cuda=True, bf16=True, devices=1)]))
def test_only_documented_errors_escape_spec_plan_and_preflight(models, fields, hardware):
    """Random specs (training values of every field, typed and not) meet only our errors; what passes
    preflight also builds the real TrainingArguments."""
    from pipeline.core.frozen import thaw
    from pipeline.training.trainer import Arguments

    try:
        spec = Spec(base=models["bert"], **fields)
        planned = plan(spec, hardware)
        preflight(spec, planned if not hardware.accelerator else None, Arguments)
    except PipelineError:
        return
    if not hardware.accelerator:
        assert Arguments(**thaw(planned.training_args)).output_dir is not None


def test_a_loaded_model_is_used_as_it_is_so_what_the_plan_changes_must_hold(models):
    """A loaded full-precision model with quantize, or with another label count: refused before training."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(models["bert"], num_labels=3)
    tokenizer = AutoTokenizer.from_pretrained(models["bert"])
    spec = Spec(base=(model, tokenizer), train=ROWS, lora=True, quantize=True, quantize_on_cpu=True)
    with pytest.raises(SpecError) as caught:
        fine_tune(start(spec, CPU))
    message = str(caught.value)
    assert "quantize: the loaded base model is not quantized" in message
    assert "the loaded model has 3 labels and the data 2" in message
