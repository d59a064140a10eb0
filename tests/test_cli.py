"""The `pipeline` command through its entry point: in this process (`pipeline.testing.invoke`), and as a
subprocess where the process itself is the point (exit codes with --debug, a terminal's progress bar)."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.testing import invoke, sentiment

EXAMPLES = Path(__file__).parents[1] / "examples"


def pipeline(*args, cwd=None):
    return invoke(*args, cwd=cwd)


def subprocess_pipeline(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


@pytest.fixture
def spec_file(models, tmp_path):
    """A spec file for a short LoRA classification run on the tiny BERT, data beside it."""
    for name, rows in (("train.jsonl", sentiment(64)), ("test.jsonl", sentiment(16, 1))):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"base": models["bert"], "train": "train.jsonl", "validation": "test.jsonl", "lora": True, "maxlength": 32,
            "training": {"learning_rate": 1e-2, "num_train_epochs": 2}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_plan_as_text_shows_values_with_origins_and_fallbacks():
    out = pipeline("plan", EXAMPLES / "classification.yaml", "--hardware", "cpu")
    assert out.returncode == 0, out.stderr
    assert "training_args.use_cpu" in out.stdout and "hardware: no CUDA" in out.stdout
    assert "quantize: dropped, no CUDA" in out.stdout


def test_plan_as_json_for_another_machine_with_settings():
    out = pipeline("plan", EXAMPLES / "classification.yaml", "--hardware", "cuda-bf16", "--format", "json",
                   "--set", "lora.r=8", "--set", "training.learning_rate=1e-3")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["quantization"]["bnb_4bit_quant_type"] == "nf4"
    assert plan["training_args"]["use_cpu"] is False
    assert plan["training_args"]["learning_rate"] == 1e-3
    assert plan["lora"]["r"] == 8 and plan["lora"]["target_modules"] == "all-linear"  # the rest stay seed defaults


def test_a_bad_spec_file_lists_every_problem_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: m\ntrain: 3\ntraining: {learning_rte: 1}\n")
    out = pipeline("plan", bad, "--hardware", "cpu")
    assert out.returncode == 2
    assert f"{bad}: training.learning_rte: unknown TrainingArguments field; did you mean 'learning_rate'?" in out.stderr
    assert f"{bad}: train: expected a file path" in out.stderr
    assert "Traceback" not in out.stderr


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- not a mapping\n")
    out = subprocess_pipeline("plan", bad, "--hardware", "cpu", "--debug")  # the traceback leaves the process
    assert out.returncode != 0 and "Traceback" in out.stderr and "holds a mapping of fields" in out.stderr


def test_schema_describes_spec_files():
    out = pipeline("schema")
    schema = json.loads(out.stdout)
    assert {"base", "task", "train", "lora", "quantize", "training"} <= set(schema["properties"])


def test_train_writes_a_run_folder_and_merge_serves_it(spec_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    out = subprocess_pipeline("train", spec_file, cwd=tmp_path)  # its stderr a file: no bars, set up at start
    assert out.returncode == 0, out.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    assert {"run.json", "spec.yaml", "plan.json", "metrics.json", "log_history.json", "loss.png",
            "adapter_config.json", "base_config.json", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "run.json").read_text())["id"] == folder.name
    assert "eval_loss" in json.loads((folder / "metrics.json").read_text())
    assert "eval_loss" in out.stdout and folder.name in out.stdout
    assert (folder / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "{'loss'" not in out.stderr and "/s]" not in out.stderr  # a log file: no dicts, no bars (text mode reads
    # a bar's \r as a newline, so its rate is what shows)
    card = (folder / "README.md").read_text()  # a model card, not peft's empty template
    assert card.startswith("---\nlibrary_name: peft\n") and "pipeline_tag: text-classification" in card
    base = yaml.safe_load((folder / "spec.yaml").read_text())["base"]
    assert "[More Information Needed]" not in card and f"base_model: {base}\n" in card
    metrics = json.loads((folder / "metrics.json").read_text())
    assert f"| eval_loss | {metrics['eval_loss']:.4g} |" in card and "| train | train.jsonl | 64 |" in card
    assert "negative, positive" in card and "pipeline predict" in card and "PeftModel.from_pretrained" in card
    assert "trainable params: " in out.stderr
    for noise in ("LOAD REPORT", "gemm_4bit_forward", "FutureWarning"):  # library notices a user cannot act on
        assert noise not in out.stderr, noise

    merged = tmp_path / "merged"
    assert pipeline("merge", folder, merged).returncode == 0
    config = AutoConfig.from_pretrained(folder / "base_config.json")  # the labels, beside the adapter
    base_path = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForSequenceClassification.from_pretrained(base_path, config=config)
    adapted = PeftModel.from_pretrained(base, folder).eval()
    plain = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    direct = AutoModelForSequenceClassification.from_pretrained(folder).eval()  # transformers loads base + adapter
    batch = AutoTokenizer.from_pretrained(merged)(["the car was great", "the hat was awful"], padding=True,
                                                  return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, adapted(**batch).logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(direct(**batch).logits, adapted(**batch).logits, rtol=1e-4, atol=1e-5)
    assert plain.config.id2label == adapted.config.id2label == {0: "negative", 1: "positive"}

    again = pipeline("train", spec_file, "--set", "lora.r=4", "--output", folder, cwd=tmp_path)
    assert again.returncode == 2 and "from a different spec" in again.stderr and "--force" in again.stderr


def test_a_run_folder_teaches_a_student_from_the_command_line(spec_file, tmp_path):
    teacher = tmp_path / "teacher"
    taught = pipeline("train", spec_file, "-o", teacher, "--set", "lora.r=8", "-v", cwd=tmp_path)
    assert taught.returncode == 0 and "'learning_rate': " in taught.stderr  # -v: the Trainer's log lines
    settings = ["--set", f"teacher={teacher}", "--set", "distillation=[2, 0.7]"]
    shown = pipeline("plan", spec_file, *settings)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"distillation\.alpha\s+0\.7\s+user: distillation", shown.stdout)
    assert re.search(r"distillation\.teacher\s+'.*teacher'", shown.stdout) and "teacher  " in shown.stdout  # memory part
    student = pipeline("train", spec_file, *settings, "--set", "quantize=true", "-o", tmp_path / "student", cwd=tmp_path)
    assert student.returncode == 0, student.stderr
    assert "note: quantize: dropped, no CUDA" in student.stderr  # the plan's notes are said when training
    assert json.loads((tmp_path / "student" / "plan.json").read_text())["distillation"]["alpha"] == 0.7
    wrong = pipeline("train", spec_file, "--set", "distillation=[0, 0.5]", "--set", f"teacher={teacher}")
    assert wrong.returncode == 2 and "temperature must be > 0" in wrong.stderr


def test_runs_lists_past_runs_with_what_differs_sorted_by_a_metric(spec_file, tmp_path):
    for rate in ("1e-2", "1e-3"):
        done = pipeline("train", spec_file, "--set", f"training.learning_rate={rate}", "--set",
                        "training.num_train_epochs=1", "--quiet", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "trainable params" not in done.stderr and "run " not in done.stderr  # -q: results only
    listed = pipeline("runs", tmp_path / "runs", "--sort", "eval_loss", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 2 and {r["training.learning_rate"] for r in rows} == {0.01, 0.001}
    assert "training.num_train_epochs" not in rows[0]  # the same in both: not a column
    assert rows[0]["eval_loss"] <= rows[1]["eval_loss"] and rows[0]["task"] == "text-classification"
    table = pipeline("runs", tmp_path / "runs").stdout
    assert table.splitlines()[0].split()[:5] == ["run", "task", "base", "when", "training.learning_rate"]
    assert "run,task,base,when" in pipeline("runs", tmp_path / "runs", "--format", "csv").stdout
    missing = pipeline("runs", tmp_path / "runs", "--sort", "eval_bleu")
    assert missing.returncode == 2 and "no run reported 'eval_bleu'; metrics found: eval_accuracy" in missing.stderr
    assert "no runs under" in pipeline("runs", tmp_path / "nothing").stderr


def test_merge_refuses_a_folder_without_an_adapter(tmp_path):
    out = pipeline("merge", tmp_path, tmp_path / "out")
    assert out.returncode == 2 and "holds no LoRA adapter" in out.stderr


def test_sweep_trains_the_grid_and_names_the_best(spec_file, tmp_path):
    out = pipeline("sweep", spec_file, "--grid", "lora.r=4,8", "--grid", "training.learning_rate=1e-2,5e-3",
                   "--output", tmp_path / "sweep", "--set", "training.num_train_epochs=1")
    assert out.returncode == 0, out.stderr
    table = (tmp_path / "sweep" / "results.csv").read_text().splitlines()
    assert table[0].startswith("run,lora.r,training.learning_rate,train_loss,eval_loss")
    assert len(table) == 5
    assert (tmp_path / "sweep" / "results.md").read_text().startswith("| run | lora.r |")
    assert "best run by eval_loss" in out.stdout
    assert len([p for p in (tmp_path / "sweep").iterdir() if p.is_dir()]) == 4


def test_a_random_sweep_draws_trials_from_ranges_and_plots_them(spec_file, tmp_path):
    out = pipeline("sweep", spec_file, "--search", "random", "--trials", "3", "--seed", "1",
                   "--range", "training.learning_rate=1e-3:1e-1:log", "--grid", "lora.r=2,4",
                   "--output", tmp_path / "sweep", "--set", "training.num_train_epochs=1", "--metric", "eval_accuracy",
                   "--maximize")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "sweep" / "results.csv").open()))
    assert len(rows) == 3 and all(1e-3 <= float(r["training.learning_rate"]) <= 1e-1 for r in rows)
    assert {r["lora.r"] for r in rows} <= {"2", "4"} and all("eval_accuracy" in r for r in rows)
    assert (tmp_path / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "best run by eval_accuracy" in out.stdout


def test_an_optuna_sweep_prunes_trials_worse_than_the_median(spec_file, tmp_path):
    out = pipeline("sweep", spec_file, "--search", "optuna", "--trials", "4", "--range",
                   "training.learning_rate=1e-6:1e-1:log", "--output", tmp_path / "sweep",
                   "--set", "training.eval_strategy=steps", "--set", "training.eval_steps=1", "--set",
                   "training.max_steps=4")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "sweep" / "results.csv").open()))
    assert len(rows) == 4 and {r["pruned"] for r in rows} <= {"True", "False"}
    assert rows[0]["pruned"] == rows[1]["pruned"] == "False"  # the pruner waits for two trials
    assert (tmp_path / "sweep" / "sweep.png").exists() and "best run by eval_loss" in out.stdout


def test_a_metrics_module_beside_the_spec_file_is_found_from_anywhere(spec_file, tmp_path):
    (tmp_path / "mymetrics.py").write_text("def share(prediction):\n    return {'share': 0.25}\n")
    spec_file.write_text(spec_file.read_text() + "metrics: mymetrics:share\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = pipeline("train", spec_file, "-o", tmp_path / "run", "--set", "training.max_steps=1", cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["eval_share"] == 0.25
    saved = yaml.safe_load((tmp_path / "run" / "spec.yaml").read_text())["metrics"]
    assert saved == f"{tmp_path / 'mymetrics.py'}:share"  # the run folder's spec finds it too


def test_a_sweep_checks_its_metric_before_training(spec_file, tmp_path):
    out = pipeline("sweep", spec_file, "--grid", "lora.r=2,4", "--metric", "eval_bleu", "--output", tmp_path / "s")
    assert out.returncode == 2 and "--metric 'eval_bleu': runs of text-classification report" in out.stderr
    assert "eval_accuracy" in out.stderr and not (tmp_path / "s").exists()
    no_validation = tmp_path / "train-only.yaml"
    no_validation.write_text(spec_file.read_text().replace("validation: test.jsonl\n", ""))
    out = pipeline("sweep", no_validation, "--grid", "lora.r=2,4", "--metric", "eval_accuracy")
    assert out.returncode == 2 and "eval_* metrics need validation data" in out.stderr
    out = pipeline("sweep", spec_file, "--range", "lora.r=2:4")
    assert out.returncode == 2 and "add --search random" in out.stderr


def test_a_sweep_frees_each_trial_before_the_next_loads(spec_file, tmp_path, monkeypatch):
    import gc

    import torch

    from pipeline.training import stages

    alive = []

    def counted(*args, **kwargs):
        gc.collect()
        alive.append(sum(isinstance(o, torch.nn.Module) and hasattr(o, "config") for o in gc.get_objects()))
        return start(*args, **kwargs)

    start = stages.start
    monkeypatch.setattr(stages, "start", counted)
    result = pipeline("sweep", spec_file, "--grid", "lora.r=2,4,8", "-q", "--set", "training.max_steps=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert alive[1] == alive[2] == alive[0], alive  # no model of an earlier trial alive when the next one starts


def test_diff_shows_spec_and_plan_changes_across_hardware(spec_file, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(spec_file.read_text().replace("lora: true", "lora: true\nquantize: true"))
    out = pipeline("diff", spec_file, other, "--hardware", "cpu", "--hardware-b", "cuda-bf16")
    assert out.returncode == 0, out.stderr
    assert "quantize" in out.stdout and "quantization.load_in_4bit" in out.stdout
    assert re.search(r"training_args.use_cpu +true +false", out.stdout)
    assert "notes" in out.stdout and max(len(line) for line in out.stdout.splitlines()) < 200  # long notes wrap


def test_spec_file_data_paths_are_relative_to_the_file(tmp_path):
    from pipeline.io.files import load_spec

    (tmp_path / "s.yaml").write_text("base: hub/model\ntrain: data/train.jsonl\ntraining: {learning_rate: 1e-3}\n")
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.train == str(tmp_path / "data/train.jsonl")
    assert spec.base == "hub/model"  # no such folder: a hub id stays as it is
    assert spec.training["learning_rate"] == 1e-3  # a number, not PyYAML's string


def test_a_run_folder_works_from_any_working_directory(models, tmp_path):
    """Paths in a spec file are stored absolute: merge and the run's own spec work from elsewhere."""
    import shutil

    from pipeline.io.files import load_spec

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    shutil.copytree(models["bert"], work / "model")
    elsewhere.mkdir()
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment(16)))
    (work / "spec.yaml").write_text(yaml.safe_dump({"base": "model", "train": "train.jsonl", "lora": True,
                                                    "maxlength": 16, "training": {"max_steps": 1}}))
    assert pipeline("train", "spec.yaml", "-o", "run", cwd=work).returncode == 0
    merged = pipeline("merge", "../work/run", "merged", cwd=elsewhere)
    assert merged.returncode == 0, merged.stderr[-2000:]
    assert (elsewhere / "merged" / "config.json").is_file()
    assert Path(load_spec(work / "run" / "spec.yaml").train).is_file()


def test_a_folder_of_other_files_is_not_trained_into_without_force(spec_file, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = pipeline("train", spec_file, "-o", out, "--set", "training.max_steps=1")
    assert refused.returncode == 2 and "is not empty (notes.txt) and holds no run" in refused.stderr
    forced = pipeline("train", spec_file, "-o", out, "--set", "training.max_steps=1", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert (out / "notes.txt").read_text() == "mine" and (out / "run.json").is_file()


def test_on_a_terminal_train_draws_one_bar_with_the_loss_and_no_dicts(spec_file, tmp_path):
    """stderr a real terminal (a pty, 120 columns): redrawn bars, the loss in the training bar's postfix."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    # without the bar switches a CLI command run in this test process (CliRunner, -q) leaves in os.environ
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE" and "PROGRESS_BARS" not in k}
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "train", str(spec_file), "-o", str(tmp_path / "r")],
                               stdout=subprocess.PIPE, stderr=follower, cwd=tmp_path, env=env)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait() == 0, shown.decode(errors="replace")
    os.close(leader)
    text = shown.decode(errors="replace")
    assert "\r" in text and "%|" in text  # bars, redrawn in place
    assert "loss=" in text and "lr=" in text  # the latest loss and learning rate in the bar
    assert "{'loss'" not in text and "{'eval_loss'" not in text
    assert "trainable params: " in text and "LOAD REPORT" not in text


def test_an_adapter_folder_config_is_found_in_either_place(tmp_path):
    from pipeline.io.files import config_file

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text("{}")  # run folders of earlier versions
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "base_config.json").write_text("{}")
    assert config_file(tmp_path / "old") == tmp_path / "old" / "config.json"
    assert config_file(tmp_path / "new") == tmp_path / "new" / "base_config.json"


def test_force_over_another_run_removes_its_checkpoints_and_a_resume_never_takes_another_runs(spec_file, tmp_path):
    """Retrained with --force and another learning rate, then resumed: it must not resume the old run's
    checkpoint-N (which would save the old weights under the new run's id)."""
    out = tmp_path / "run"
    saving = ["--set", "training.save_strategy=steps", "--set", "training.save_steps=2", "--set",
              "training.eval_strategy=no"]
    first = pipeline("train", spec_file, "-o", out, *saving, "--set", "training.max_steps=4")
    assert first.returncode == 0, first.stderr[-2000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    forced = pipeline("train", spec_file, "-o", out, *saving, "--set", "training.learning_rate=1e-3",
                      "--set", "training.max_steps=3", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert "removed checkpoint-2, checkpoint-4" in forced.stderr
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    resumed = pipeline("train", spec_file, "-o", out, *saving, "--set", "training.learning_rate=1e-3",
                       "--set", "training.max_steps=3", "--set", "checkpoint=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and "checkpoint-3" in resumed.stderr


def test_a_checkpoint_of_another_lineage_is_refused(models, tmp_path):
    from pipeline import Hardware, Spec, SpecError, evolve, fine_tune, start

    spec = Spec(base=models["bert"], train=sentiment(32), lora=True, maxlength=16,
                training={"output_dir": str(tmp_path), "save_strategy": "steps", "save_steps": 2, "max_steps": 2,
                          "disable_tqdm": True})
    fine_tune(start(spec, Hardware()))
    other = evolve(spec, checkpoint=True, training={**spec.training, "learning_rate": 1e-3})
    with pytest.raises(SpecError, match="checkpoint-2 belongs to another run"):
        fine_tune(start(other, Hardware()))
    longer = evolve(spec, checkpoint=True, training={**spec.training, "max_steps": 4})  # going on is resuming
    assert [e["step"] for e in fine_tune(start(longer, Hardware())).log_history][-1] == 4


def test_a_failing_trial_is_a_row_with_its_error_and_the_sweep_goes_on(spec_file, tmp_path):
    out = pipeline("sweep", spec_file, "--grid", "maxlength=16,100000", "--output", tmp_path / "sweep",
                   "--set", "training.max_steps=2")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "sweep" / "results.csv").open()))
    assert [r["maxlength"] for r in rows] == ["16", "100000"]
    assert rows[0]["eval_loss"] and not rows[0]["error"]
    assert rows[1]["run"] == "-" and "100000" in rows[1]["error"]
    assert "1 of 2 trials failed" in out.stderr and "best run by eval_loss" in out.stdout


def test_a_field_in_both_grid_and_range_is_refused_up_front(spec_file, tmp_path):
    out = pipeline("sweep", spec_file, "--search", "optuna", "--grid", "lora.r=2,4", "--range", "lora.r=2:8",
                   "--output", tmp_path / "sweep")
    assert out.returncode == 2 and "--grid and --range both vary lora.r" in out.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.fixture
def postgres():
    """A private PostgreSQL server for one test: its data and its socket in a temp folder, no TCP port; the
    test is skipped where no server (initdb, pg_ctl) or no driver (psycopg2) is installed. As root it runs as
    the `postgres` user (the server refuses root)."""
    import importlib.util
    import shutil
    import tempfile

    if not (shutil.which("initdb") and shutil.which("pg_ctl") and importlib.util.find_spec("psycopg2")):
        pytest.skip("no PostgreSQL server (initdb, pg_ctl) or no psycopg2 installed")
    as_user = []
    folder = Path(tempfile.mkdtemp(prefix="pg-"))
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and no `postgres` user to run the server as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    try:
        subprocess.run([*as_user, "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
        subprocess.run([*as_user, "pg_ctl", "-D", data, "-l", folder / "log", "-w", "start", "-o",
                        f"-k {folder} -c listen_addresses= -p 5439"], check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@/postgres?host={folder}&port=5439"
        subprocess.run([*as_user, "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], capture_output=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.scale)])
def test_workers_share_one_optuna_study_and_each_trial_runs_once(database, spec_file, tmp_path, request):
    """Two `pipeline sweep --storage` processes at once on one study: 4 trials in all, none run twice, each
    worker's results table has every trial of the study. On SQLite in `make test`; on a private PostgreSQL
    server in `make test-scale` (skipped, and said, where none is installed)."""
    storage = f"sqlite:///{tmp_path / 'study.db'}" if database == "sqlite" else request.getfixturevalue("postgres")
    command = [sys.executable, "-m", "pipeline.cli", "sweep", str(spec_file), "--search", "optuna", "--trials", "4",
               "--range", "training.learning_rate=1e-4:1e-1:log", "--storage", storage, "--study", "shared",
               "--set", "training.max_steps=2", "--set", "validation=null", "--metric", "train_loss", "-q"]
    workers = [subprocess.Popen([*command, "--output", str(tmp_path / "sweep")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), [err for _, err in outs]
    import optuna

    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    assert len(trials) in (4, 5)  # the two may race for the last one
    rates = [t.params["training.learning_rate"] for t in trials]
    runs = [t.user_attrs["row"]["run"] for t in trials]
    assert len(set(rates)) == len(rates) and len(set(runs)) == len(runs)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    written = list(csv.DictReader((tmp_path / "sweep" / "results.csv").open()))
    assert sorted(r["run"] for r in written) == sorted(runs)


def test_plan_a_node_of_gpus_with_zero_3(tmp_path):
    """`pipeline plan --processes 8 --set zero=3`: the DeepSpeed config with its origin, per-process memory;
    training it without DeepSpeed installed is refused before anything loads."""
    import importlib.util

    (tmp_path / "llama-8b").mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
              "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
              "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": False,
              "torch_dtype": "bfloat16"}
    (tmp_path / "llama-8b" / "config.json").write_text(json.dumps(config))
    (tmp_path / "spec.yaml").write_text("base: ./llama-8b\ntask: language-generation\ntrain: [{text: a}]\n"
                                        "maxlength: 2048\ntraining: {per_device_train_batch_size: 1}\n")
    one = pipeline("plan", tmp_path / "spec.yaml", "--hardware", "a100-80gb")
    assert one.returncode == 0, one.stderr
    assert "does not fit" in one.stdout and "--set zero=3  -> about" in one.stdout
    node = pipeline("plan", tmp_path / "spec.yaml", "--hardware", "a100-80gb", "--processes", "8", "--set", "zero=3")
    assert node.returncode == 0, node.stderr
    assert "training_args.deepspeed" in node.stdout and "user: zero: 3" in node.stdout
    assert ": fits (" in node.stdout and "/ 8 processes (ZeRO-3)" in node.stdout
    if importlib.util.find_spec("deepspeed") is None:
        refused = pipeline("train", tmp_path / "spec.yaml", "--set", "zero=2", "-o", tmp_path / "run")
        assert refused.returncode == 2
        assert "zero: 2 trains with DeepSpeed, which is not installed; pip install -e '.[scale]'" in refused.stderr
