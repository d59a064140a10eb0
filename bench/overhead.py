"""Where `fine_tune`'s time goes: model load, tokenizing, training steps, and the rest (fixed overhead).

    python -m bench.overhead                     # llama-lora and minilm-lora, 600 examples
    python -m bench.overhead --jobs llama-lora --repeats 5

Each job runs in a fresh process with the libraries imported first (as any user's
process has them); the first call is "cold", the repeats after it "warm". The parts are
timed by wrapping the calls that do them (nothing is replaced): model load =
`stages._load_pretrained` (tokenizer and model from disk), tokenizing = `data.encode`,
steps = the Trainer's epochs (`Trainer._run_epoch`: forward, backward, optimizer). The
fixed overhead is the rest of `fine_tune`: detection, planning, preflight (data read
and checked, TrainingArguments built), LoRA injection, the Trainer's set-up and
teardown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def measure(job_name: str, data: Path, models: Path, repeats: int) -> list[dict[str, float]]:
    """In this process: fine_tune ``repeats + 1`` times, each split into its parts (seconds)."""
    import transformers

    import pipeline.io.data
    import pipeline.training.stages
    from bench.jobs import JOBS, read
    from bench.worker import SEED, model_path
    from pipeline import Spec, fine_tune

    job = JOBS[job_name]
    rows = read(data, "reviews-train" if job.task == "text-classification" else "texts-train")
    spent: dict[str, float] = {}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started
        return wrapper

    pipeline.training.stages._load_pretrained = timed("model load", pipeline.training.stages._load_pretrained)
    pipeline.io.data.encode = timed("tokenizing", pipeline.io.data.encode)
    transformers.Trainer._run_epoch = timed("steps", transformers.Trainer._run_epoch)
    spec = Spec(base=model_path(job, models), task=job.task, train=rows, maxlength=job.maxlength,
                lora=job.lora or None,
                training={"learning_rate": job.learning_rate, "num_train_epochs": job.epochs,
                          "per_device_train_batch_size": job.batch, "seed": SEED, "disable_tqdm": True,
                          "logging_strategy": "no"})
    results = []
    for _ in range(repeats + 1):
        spent.clear()
        started = time.perf_counter()
        fine_tune(spec)
        total = time.perf_counter() - started
        results.append({"total": total, **spent, "fixed": total - sum(spent.values())})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="llama-lora,minilm-lora")
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        job, data, models, out = options.worker
        import torch  # noqa: F401 - the libraries a user's process has loaded before calling fine_tune
        import datasets  # noqa: F401
        import peft  # noqa: F401
        import transformers  # noqa: F401

        Path(out).write_text(json.dumps(measure(job, Path(data), Path(models), options.repeats)))
        return

    from bench.jobs import write_data
    from pipeline.testing import tiny_models

    work = Path(tempfile.mkdtemp(prefix="overhead-"))
    write_data(work / "data", options.train, 10)
    tiny_models(work / "models")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": f"{HERE.parent / 'src'}:{HERE.parent}"}  # this checkout's code
    print(f"`python -m bench.overhead --jobs {options.jobs} --train {options.train} --repeats {options.repeats}`\n")
    print("| job | call | total s | model load | tokenizing | steps | fixed overhead |\n|---|---|---|---|---|---|---|")
    for job in options.jobs.split(","):
        out = work / f"{job}.json"
        subprocess.run([sys.executable, "-m", "bench.overhead", "--repeats", str(options.repeats), "--worker", job,
                        str(work / "data"), str(work / "models"), str(out)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = json.loads(out.read_text())
        warm = {key: statistics.median(r[key] for r in results[1:]) for key in results[0]}
        for call, parts in (("cold", results[0]), ("warm (median)", warm)):
            print(f"| {job} | {call} | {parts['total']:.2f} | {parts['model load']:.2f} | {parts['tokenizing']:.2f} | "
                  f"{parts['steps']:.2f} | {parts['fixed']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
