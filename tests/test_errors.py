"""The error catalogue: bad input gets our error, naming what is wrong and the fix, and loses nothing."""


import pytest
from datasets import Dataset, DatasetDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import TASKS, DataError, Hardware, HardwareError, PipelineError, Spec, SpecError, fine_tune, plan, start
from pipeline._fields import LORA_CONFIG, TRAINING_ARGUMENTS
from pipeline.preflight import preflight
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
    "unknown spec field": ({"learning_rate": 1e-3}, SpecError, ["learning_rate: extra inputs are not permitted"]),
    "question stride too big": ({"task": "question-answering", "train": questions(4), "maxlength": 64}, SpecError, ["stride", "stride=128, maxlength=64", "stride: 16"]),
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
    "None text": ({"train": [{"text": None, "label": 0}, {"text": "a", "label": 1}]}, DataError, ["column 'text': row 0 without text", "None"]),
    "empty text": ({"train": [{"text": "a", "label": 0}, {"text": " ", "label": 1}]}, DataError, ["row 1 without text"]),
    "labels of two kinds": ({"train": [{"text": "a", "label": 0}], "validation": [{"text": "a", "label": "pos"}]}, DataError, ["labels mix int and string"]),
    "multi-label vectors of two lengths": ({"train": [{"text": "a", "label": [1, 0]}, {"text": "b", "label": [1]}]}, DataError, ["multi-label vectors differ in length ([1, 2])"]),
    "a None label": ({"train": [{"text": "a", "label": 1}, {"text": "b", "label": None}]}, DataError, ["label None in row 1"]),
    "a column of mixed types": ({"train": [{"text": "a", "label": 1}, {"text": ["b"], "label": 0}]}, DataError, ["train: the rows do not make a table"]),
    "answer not in context": ({"task": "question-answering", "maxlength": 64, "stride": 16, "train": [{"question": "q", "context": "the car is red", "answers": "green"}]}, DataError, ["row 0: answer 'green' is not in its context"]),
    "answer of the wrong shape": ({"task": "question-answering", "maxlength": 64, "stride": 16, "train": [{"question": "q", "context": "red", "answers": {"text": ["red"], "answer_start": []}}]}, DataError, ["row 0 is", "expected a string or"]),
    "seq2seq row without target": ({"task": "sequence-sequence", "train": [{"source": "a", "target": "b"}, {"source": "c", "target": None}]}, DataError, ["column 'target': row 1 without target"]),
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


def test_the_catalogue_is_large():
    assert len(CATALOGUE) >= 40


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
    {"train": rows},
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
        "lora": st.none() | st.booleans() | st.dictionaries(st.sampled_from(sorted(LORA_CONFIG)[:12] + ["x"]), junk),
        "training": st.dictionaries(st.sampled_from(sorted(TRAINING_ARGUMENTS)[:40] + ["bf16", "fp16", "x"]), junk,
                                    max_size=3),
    },
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=fields, hardware=st.sampled_from([Hardware(), Hardware(cuda=True, bf16=True, devices=1)]))
def test_only_documented_errors_escape_spec_plan_and_preflight(models, fields, hardware):
    try:
        spec = Spec(base=models["bert"], **fields)
        plan(spec, hardware)
        preflight(spec)
    except PipelineError:
        pass
