"""The public API: exactly the curated names, and no heavy import behind them."""

import subprocess
import sys

import pipeline

PUBLIC = {  # what a user composes with; helpers that mean nothing alone stay in their modules
    "DataError", "Hardware", "HardwareError", "LORA_DEFAULTS", "Origin", "PROFILES", "PipelineError", "Plan",
    "QUANTIZE_DEFAULTS", "Spec", "SpecError", "TASKS", "TRAINING_DEFAULTS", "detect", "evolve", "plan", "profile",
    "Parameters", "Run", "adapt", "fine_tune", "load", "load_spec", "quantize", "start", "train", "merge",
    "merge_dir", "Memory", "estimate", "model_config", "Interrupted", "predict", "evaluate", "sweep",
}


def test_all_is_exactly_the_public_api_and_sorted():
    assert set(pipeline.__all__) == PUBLIC
    assert pipeline.__all__ == sorted(pipeline.__all__, key=lambda n: (not n.isupper(), n[0].islower(), n))
    for name in pipeline.__all__:
        if callable(getattr(pipeline, name)):
            assert getattr(pipeline, name).__doc__, f"{name} has no docstring"


def test_errors_form_one_tree():
    assert issubclass(pipeline.SpecError, (pipeline.PipelineError, ValueError))
    assert issubclass(pipeline.HardwareError, pipeline.SpecError)
    assert issubclass(pipeline.DataError, (pipeline.PipelineError, ValueError))


def test_import_and_plan_import_no_torch():
    code = (
        "import sys, pipeline as p\n"
        "s = p.Spec(base='m', train=[{'text': 'a', 'label': 0}], quantize=True, lora=True)\n"
        "p.plan(s, p.profile('cuda-bf16')); p.plan(s, p.Hardware())\n"
        "c = {'model_type': 'llama', 'vocab_size': 100, 'hidden_size': 64, 'num_hidden_layers': 2,\n"
        "     'num_attention_heads': 4, 'intermediate_size': 128, 'max_position_embeddings': 512}\n"
        "assert p.plan(s, p.profile('h100-80gb'), c).memory.fits\n"
        "import pipeline.core.search as q; q.random_trials({'a': [1]}, dict([q.parse_range('b=1e-5:1e-3:log')]), 2)\n"
        "import pipeline.tasks as t; t.TASKS['question-answering'].reported(True, False)\n"
        "heavy = {'torch', 'transformers', 'peft', 'bitsandbytes', 'datasets'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
