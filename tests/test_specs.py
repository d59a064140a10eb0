"""specs.py: immutable, hashable specs that reject bad input with every problem named."""

import copy

import pandas as pd
import pytest
from pydantic import ValidationError
from datasets import Dataset, DatasetDict

from pipeline import Spec, SpecError, evolve
from pipeline.core.hardware import Hardware, profile

ROWS = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]


def errors(**kw):
    with pytest.raises(SpecError) as e:
        Spec(**{"base": "model", "train": ROWS, **kw})
    return list(e.value.problems)


def test_specs_from_plain_values_hash_and_compare_by_value():
    a = Spec(base="m", train=ROWS, lora={"r": 4, "target_modules": ["q", "v"]}, training={"seed": 1})
    b = Spec(base="m", train=copy.deepcopy(ROWS), lora={"r": 4, "target_modules": ["q", "v"]}, training={"seed": 1})
    assert a == b and hash(a) == hash(b)
    assert a != evolve(a, training={"seed": 2})
    assert len({a, b}) == 1


def test_specs_are_immutable_inside_out():
    s = Spec(base="m", train=ROWS, training={"seed": 1})
    with pytest.raises(ValidationError, match="frozen"):
        s.base = "other"
    with pytest.raises(TypeError):
        s.training["seed"] = 2
    with pytest.raises(TypeError):
        s.train[0]["text"] = "changed"


def test_nothing_the_user_passes_in_is_mutated_or_aliased():
    rows, lora, training = copy.deepcopy(ROWS), {"r": 4, "target_modules": ["q"]}, {"seed": 1}
    s = Spec(base="m", train=rows, lora=lora, training=training)
    assert (rows, lora, training) == (ROWS, {"r": 4, "target_modules": ["q"]}, {"seed": 1})
    lora["r"] = 99
    rows[0]["text"] = "changed"
    assert s.lora["r"] == 4 and s.train[0]["text"] == "good"


def test_evolve_validates_again():
    s = Spec(base="m", train=ROWS)
    assert evolve(s, maxlength=64).maxlength == 64
    with pytest.raises(SpecError, match="maxlength"):
        evolve(s, maxlength=0)


def test_live_data_objects_are_accepted_as_they_are():
    frame, dataset = pd.DataFrame(ROWS), Dataset.from_list(ROWS)
    assert Spec(base="m", train=frame).train is frame
    assert Spec(base="m", train=dataset).train is dataset
    assert Spec(base="m", train="data/train.jsonl").train == "data/train.jsonl"


def test_a_dataset_dict_is_refused_naming_its_splits():
    splits = DatasetDict(train=Dataset.from_list(ROWS), test=Dataset.from_list(ROWS))
    (problem,) = errors(train=splits)
    assert "train: got a DatasetDict with splits ['test', 'train']" in problem
    assert "data['test']" in problem


def test_unknown_training_argument_gets_a_did_you_mean():
    assert errors(training={"learning_rte": 1e-4}) == [
        "training.learning_rte: unknown TrainingArguments field; did you mean 'learning_rate'?"
    ]


def test_every_problem_is_reported_at_once():
    problems = errors(
        task="text-clasification",
        maxlength=0,
        lora={"r": 0, "lora_dropout": 1.5},
        quantize={"load_in_4bit": True, "bnb_4bit_quant_type": "int4"},
        training={"learning_rte": 1},
        unknown_field=1,
    )
    assert len(problems) == 7
    assert problems[0].startswith("task: unknown task 'text-clasification'; did you mean 'text-classification'?")
    assert "maxlength: should be greater than or equal to 1 (got 0)" in problems
    assert "lora.r: must be an integer >= 1 (got 0); use e.g. lora: {r: 16}" in problems
    assert any(p.startswith("lora.lora_dropout: must be in [0, 1) (got 1.5)") for p in problems)
    assert any(p.startswith("quantize.bnb_4bit_quant_type: must be 'nf4' or 'fp4' (got 'int4')") for p in problems)
    assert any(p.startswith("unknown_field: unknown field; the fields are base, task") for p in problems)


@pytest.mark.parametrize(
    ("quantize", "words"),
    [
        ({"bnb_4bit_quant_type": "nf4"}, "set exactly one of load_in_4bit or load_in_8bit"),
        ({"load_in_4bit": True, "load_in_8bit": True}, "set exactly one of load_in_4bit or load_in_8bit"),
        ({"load_in_4bit": True, "bnb_4bit_compute_dtype": "float8"}, "bnb_4bit_compute_dtype: must be one of"),
        ({"load_in_4bit": True, "load_in_4bits": True}, "did you mean 'load_in_4bit'"),
    ],
)
def test_quantize_dict_must_be_a_valid_bits_and_bytes_config(quantize, words):
    assert any(words in p for p in errors(quantize=quantize))


def test_unknown_lora_task_type_and_bias():
    problems = errors(lora={"task_type": "SEQ_CLASS", "bias": "some"})
    assert any("did you mean 'SEQ_CLS'" in p for p in problems)
    assert any(p.startswith("lora.bias: must be") for p in problems)


def test_columns_must_fit_the_task():
    (problem,) = errors(task="sequence-sequence", columns=("source",))
    assert problem == "columns: sequence-sequence takes 2 columns (got 1: ['source']); the default is ['source', 'target']"
    assert Spec(base="m", train=ROWS, columns=("sentence", "label")).columns == ("sentence", "label")


def test_bad_data_and_base_types_are_named():
    problems = errors(base=3, train=5, validation=[1, 2])
    assert problems[0].startswith("base: expected a path, a hub id or a (model, tokenizer) pair (got int)")
    assert problems[1].startswith("train: expected a file path")
    assert problems[2] == "validation: rows must be dicts of column -> value (row 0 is int)"


def test_hardware_bf16_needs_an_accelerator():
    with pytest.raises(SpecError, match="bf16 describes an accelerator"):
        Hardware(bf16=True)
    with pytest.raises(SpecError, match="use one of cpu, cuda, cuda-bf16"):
        profile("tpu")


def test_question_stride_must_leave_windows_room_to_advance():
    """A stride the user gives must fit; the default adapts (txtai's 128 where it fits, else a quarter)."""
    spec = Spec(base="m", train=[{"question": "q", "context": "c", "answers": "c"}], task="question-answering",
                maxlength=64)
    assert (spec.stride_for(64), spec.stride_for(384)) == (16, 128)
    (problem,) = errors(task="question-answering", maxlength=64, stride=128)
    assert problem == (
        "stride: question windows must advance, so stride must be under half of maxlength "
        "(got stride=128, maxlength=64); set e.g. stride: 16"
    )


def test_settings_and_spec_files_read_yaml_1_2_booleans(tmp_path):
    """``eval_strategy: no`` is the string the field takes (YAML 1.1 made it False); true/false stay booleans."""
    from pipeline.io.files import load_spec, parse_settings

    assert parse_settings(["training.eval_strategy=no", "lora=true", "training.learning_rate=1e-3"]) == {
        "training.eval_strategy": "no", "lora": True, "training.learning_rate": 1e-3}
    (tmp_path / "spec.yaml").write_text("base: m\ntrain: [{text: a, label: 0}]\ntraining: {eval_strategy: no}\n")
    assert load_spec(tmp_path / "spec.yaml").training["eval_strategy"] == "no"


def test_columns_by_role_name_the_data_columns_for_each_role():
    """``columns: {text: message, label: queue}``: the positional list, built from the task's roles."""
    rows = [{"message": "hi", "queue": "a"}] * 2
    assert Spec(base="m", train=rows, columns={"text": "message", "label": "queue"}).columns == ("message", None, "queue")
    both = Spec(base="m", train=rows, columns={"text": "q", "text_pair": "a", "label": "y"})
    assert both.columns == ("q", "a", "y")
    qa = Spec(base="m", task="question-answering", train=rows, columns={"context": "passage"})
    assert qa.columns == ("question", "passage", "answers")  # the roles left out keep their default columns
    with pytest.raises(SpecError, match="columns: 'body' is not a role of text-classification \\(roles: text, text_pair, label\\)"):
        Spec(base="m", train=rows, columns={"body": "message"})


def test_every_spec_field_is_described_in_the_json_schema():
    properties = Spec.model_json_schema()["properties"]
    assert not [name for name, field in properties.items() if not field.get("description")]


def test_false_strategies_read_as_no_and_the_plan_says_so():
    """``save_strategy: false`` (YAML 1.1's ``no``, as Hugging Face configs are written) is accepted for the
    strategies that have a "no"; the plan derives "no" and its origin says why. ``true`` is still refused."""
    from pipeline.core.plan import plan
    from pipeline.io.files import parse_settings

    settings = parse_settings(["training.eval_strategy=false"])
    spec = Spec(base="m", train=[{"text": "a", "label": 0}] * 2,
                training={"save_strategy": False, "logging_strategy": False, "eval_strategy": False})
    assert settings == {"training.eval_strategy": False}
    made = plan(spec, Hardware())
    assert made.training_args["save_strategy"] == made.training_args["eval_strategy"] == "no"
    assert made.training_args["logging_strategy"] == "no"
    assert "false read as 'no'" in made.provenance["training_args.save_strategy"].reason
    assert "false read as 'no'" in str(made)
    with pytest.raises(SpecError, match=r"training\.save_strategy: must be one of 'no'.*\(got True\)"):
        Spec(base="m", train=[{"text": "a", "label": 0}] * 2, training={"save_strategy": True})
