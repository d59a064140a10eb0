"""The `pipeline` command through its real entry point."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


def pipeline(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True)


def test_plan_as_text_shows_values_with_origins_and_fallbacks():
    out = pipeline("plan", str(EXAMPLES / "classification.yaml"), "--hardware", "cpu")
    assert out.returncode == 0, out.stderr
    assert "training_args.use_cpu" in out.stdout and "hardware: no CUDA" in out.stdout
    assert "quantize: dropped, no CUDA" in out.stdout


def test_plan_as_json_for_another_machine():
    out = pipeline("plan", str(EXAMPLES / "classification.yaml"), "--hardware", "cuda-bf16", "--format", "json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["quantization"]["bnb_4bit_quant_type"] == "nf4"
    assert plan["training_args"]["use_cpu"] is False
    assert plan["provenance"]["lora.r"] == {"source": "seed", "reason": "seed default"}


def test_a_bad_spec_file_lists_every_problem_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: m\ntrain: 3\ntraining: {learning_rte: 1}\n")
    out = pipeline("plan", str(bad), "--hardware", "cpu")
    assert out.returncode == 2
    assert f"{bad}: training.learning_rte: unknown TrainingArguments field; did you mean 'learning_rate'?" in out.stderr
    assert f"{bad}: train: expected a file path" in out.stderr
    assert "Traceback" not in out.stderr


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- not a mapping\n")
    out = pipeline("plan", str(bad), "--hardware", "cpu", "--debug")
    assert out.returncode != 0 and "Traceback" in out.stderr and "holds a mapping of fields" in out.stderr


def test_spec_file_data_paths_are_relative_to_the_file(tmp_path):
    from pipeline.files import load_spec

    (tmp_path / "s.yaml").write_text("base: hub/model\ntrain: data/train.jsonl\n")
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.train == str(tmp_path / "data/train.jsonl")
    assert spec.base == "hub/model"  # no such folder: a hub id stays as it is
