"""The names and kwargs we derive construct the installed library objects, so they cannot drift."""

import dataclasses
import inspect
from pathlib import Path

from pipeline import Spec, plan, profile
from pipeline.core.fields import BITS_AND_BYTES_CONFIG, KNOWN, LORA_CONFIG, TRAINING_ARGUMENTS
from pipeline.core.frozen import thaw


def _locked() -> dict[str, str]:
    lines = (Path(__file__).parents[1] / "requirements.lock").read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


def test_field_lists_match_the_installed_libraries():
    """Every field we accept exists in the installed library; at the versions the lists were read from, the
    lists are the library's whole (a newer library may add fields we refuse until the lists are read again)."""
    from importlib.metadata import version

    from peft import LoraConfig
    from transformers import BitsAndBytesConfig, TrainingArguments

    installed = {
        "TrainingArguments": ("transformers", {f.name for f in dataclasses.fields(TrainingArguments) if f.init}),
        "LoraConfig": ("peft", {f.name for f in dataclasses.fields(LoraConfig) if f.init}),
        "BitsAndBytesConfig": ("transformers",
                               set(inspect.signature(BitsAndBytesConfig.__init__).parameters) - {"self", "kwargs"}),
    }
    ours = {"TrainingArguments": TRAINING_ARGUMENTS, "LoraConfig": LORA_CONFIG, "BitsAndBytesConfig": BITS_AND_BYTES_CONFIG}
    for what, (library, theirs) in installed.items():
        assert ours[what] <= theirs, f"{what}: {library} {version(library)} has no {sorted(ours[what] - theirs)}"
        if version(library) == KNOWN[library]:
            assert ours[what] == theirs, f"{what}: read the lists again from {library} {version(library)}"


def test_the_field_lists_come_from_the_locked_versions():
    """The versions the lists name are the ones `make test` installs."""
    locked = _locked()
    assert {library: locked[library] for library in KNOWN} == KNOWN


def test_a_field_of_a_newer_library_is_refused_with_the_version_we_know():
    from pipeline import SpecError

    try:
        Spec(base="m", train=[{"text": "a", "label": 0}], lora={"a_field_of_peft_9": 1})
    except SpecError as e:
        assert f"unknown LoraConfig field; see the LoraConfig documentation of peft {KNOWN['peft']}" in str(e)
    else:
        raise AssertionError("an unknown LoraConfig field was accepted")


def test_derived_kwargs_construct_the_library_configs(tmp_path):
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig, TrainingArguments

    spec = Spec(base="m", train=[{"text": "a", "label": 0}], quantize=True, lora=True,
                training={"output_dir": str(tmp_path), "learning_rate": 1e-4})
    p = plan(spec, profile("cuda-bf16"))
    args = thaw(p.training_args) | {"use_cpu": True}  # this machine has no GPU to hand the Trainer
    assert TrainingArguments(**args).learning_rate == 1e-4
    assert LoraConfig(**thaw(p.lora)).r == 16
    bnb = BitsAndBytesConfig(**thaw(p.quantization))
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant


def test_training_types_and_choices_match_the_installed_transformers():
    """Every scalar field's type as transformers declares it; every named choice as its enums list them."""
    from transformers import TrainingArguments
    from transformers.trainer_utils import HubStrategy, IntervalStrategy, SaveStrategy, SchedulerType
    from transformers.training_args import OptimizerNames, trainer_log_levels

    from pipeline.core.fields import TRAINING_CHOICES, TRAINING_TYPES

    declared = {f.name: str(f.type).replace("<class '", "").replace("'>", "") for f in dataclasses.fields(TrainingArguments)}
    for name, kind in TRAINING_TYPES.items():
        base, optional = kind.rstrip("?"), kind.endswith("?")
        parts = {p.strip() for p in declared[name].split("|")}
        assert base in parts and (("None" in parts) == optional), (name, kind, declared[name])
    numeric = {n for n, t in declared.items() if {p.strip() for p in t.split("|")} & {"int", "float"}}
    assert numeric == {n for n, k in TRAINING_TYPES.items() if k.rstrip("?") in ("int", "float")}
    enums = {"lr_scheduler_type": SchedulerType, "logging_strategy": IntervalStrategy, "eval_strategy": IntervalStrategy,
             "save_strategy": SaveStrategy, "hub_strategy": HubStrategy, "optim": OptimizerNames}
    for name, enum in enums.items():
        assert set(TRAINING_CHOICES[name]) == {e.value for e in enum}, name
    assert set(TRAINING_CHOICES["log_level"]) == set(trainer_log_levels)
    sampling = next(f for f in dataclasses.fields(TrainingArguments) if f.name == "train_sampling_strategy")
    assert set(TRAINING_CHOICES["train_sampling_strategy"]) == set(sampling.metadata["choices"])
