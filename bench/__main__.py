"""Run the benchmark: python -m bench [--rounds 3] [--jobs a,b] [--train 600] [--eval 150].

Each round runs every job three ways, A B C, each in its own process (interleaved, so
the machine's drift hits all ways alike); results are medians over rounds and ratios.
Writes bench/RESULTS.md and bench/raw.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.jobs import JOBS, write_data

HERE = Path(__file__).parent
WAYS = ("pipeline", "hand", "txtai")


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def plan_timing(env: dict[str, str], repeats: int = 5) -> dict[str, float]:
    spec = str(HERE.parent / "examples" / "classification.yaml")
    commands = {
        "pipeline plan": [sys.executable, "-m", "pipeline.cli", "plan", spec, "--hardware", "cpu"],
        "import transformers": [sys.executable, "-c", "import transformers"],
    }
    return {name: statistics.median(timed(c, env)[0] for _ in range(repeats)) for name, c in commands.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--eval", type=int, default=150)
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    write_data(work / "data", options.train, options.eval)
    from pipeline.testing import tiny_models

    tiny_models(work / "models")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(HERE.parent)}
    rows = []
    for round_ in range(1, options.rounds + 1):
        for name in options.jobs.split(","):
            for way in WAYS:
                out = work / f"{name}-{way}-{round_}.json"
                command = [sys.executable, "-m", "bench.worker", name, way, str(work / "data"), str(work / "models"),
                           str(out)]
                wall, rss = timed(command, env)
                row = {"round": round_, **json.loads(out.read_text()), "wall_seconds": wall, "peak_rss_mb": rss}
                rows.append(row)
                print(json.dumps(row), flush=True)
    plans = plan_timing(env)
    write(rows, plans, options)


def write(rows: list[dict], plans: dict[str, float], options: argparse.Namespace) -> None:
    with open(HERE / "raw.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def median(job: str, way: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["job"] == job and r["way"] == way)

    lines = [
        "# Benchmark results",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, no GPU.",
        f"Command: `python -m bench --rounds {options.rounds} --jobs {options.jobs} --train {options.train} "
        f"--eval {options.eval}` (raw numbers per round: `bench/raw.csv`).",
        "",
        "Medians over rounds; each run is its own process, ways interleaved A B C per round.",
        "samples/s = training examples / seconds of the training call (model load, tokenizing, training).",
        "",
        "| job | way | samples/s | wall s | peak RSS MB | eval |",
        "|---|---|---|---|---|---|",
    ]
    jobs = list(dict.fromkeys(r["job"] for r in rows))
    for job in jobs:
        metric = next(r["eval_metric"] for r in rows if r["job"] == job)
        for way in WAYS:
            lines.append(
                f"| {job} | {way} | {median(job, way, 'samples_per_second'):.1f} | "
                f"{median(job, way, 'wall_seconds'):.1f} | {median(job, way, 'peak_rss_mb'):.0f} | "
                f"{metric} {median(job, way, 'eval'):.3f} |"
            )
    lines += ["", "Ratios (pipeline / other, from the medians):", "",
              "| job | samples/s vs hand | samples/s vs txtai | wall vs hand | peak RSS vs hand |", "|---|---|---|---|---|"]
    for job in jobs:
        speed = median(job, "pipeline", "samples_per_second")
        lines.append(
            f"| {job} | {speed / median(job, 'hand', 'samples_per_second'):.2f} | "
            f"{speed / median(job, 'txtai', 'samples_per_second'):.2f} | "
            f"{median(job, 'pipeline', 'wall_seconds') / median(job, 'hand', 'wall_seconds'):.2f} | "
            f"{median(job, 'pipeline', 'peak_rss_mb') / median(job, 'hand', 'peak_rss_mb'):.2f} |"
        )
    if "minilm-lora" in jobs and "minilm-full" in jobs:
        ratio = median("minilm-lora", "pipeline", "peak_rss_mb") / median("minilm-full", "pipeline", "peak_rss_mb")
        lines += ["", f"LoRA / full fine-tune peak RSS (pipeline, MiniLM): {ratio:.2f}"]
    lines += ["", "Start-up (median of 5, whole process):", ""]
    lines += [f"- `{name}`: {seconds:.2f} s" for name, seconds in plans.items()]
    lines += [f"- ratio: {plans['pipeline plan'] / plans['import transformers']:.2f}"]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
