"""Run the benchmark: python -m bench [--rounds 3] [--jobs a,b] [--ways a,b] [--train 600] [--eval 150].

Each round runs every job each way (pipeline, hand, txtai, limit), each in its own
process (interleaved, so the machine's drift hits all ways alike); results are medians
over rounds and ratios. Writes bench/RESULTS.md and bench/raw.csv (``--out`` another
name, for a second configuration beside the first).
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
WAYS = ("pipeline", "hand", "txtai", "limit")


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
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--out", default="RESULTS", help="bench/OUT.md and bench/OUT.csv (default RESULTS, raw.csv)")
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--eval", type=int, default=150)
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    write_data(work / "data", options.train, options.eval)
    from pipeline.testing import tiny_models

    tiny_models(work / "models")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": f"{HERE.parent / 'src'}:{HERE.parent}"}  # this checkout's code
    rows = []
    for round_ in range(1, options.rounds + 1):
        for name in options.jobs.split(","):
            for way in options.ways.split(","):
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
    """The tables, above whatever the existing results file says under its own headings (the analysis)."""
    raw = HERE / ("raw.csv" if options.out == "RESULTS" else f"{options.out}.csv")
    with open(raw, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def median(job: str, way: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["job"] == job and r["way"] == way)

    ways = [w for w in WAYS if any(r["way"] == w for r in rows)]
    others = [w for w in ("limit", "hand", "txtai") if w in ways]
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, no GPU.",
        f"Command: `python -m bench --rounds {options.rounds} --jobs {options.jobs} --ways {options.ways} "
        f"--train {options.train} --eval {options.eval}"
        + (f" --out {options.out}" if options.out != "RESULTS" else "") + f"` (raw numbers per round: `bench/{raw.name}`).",
        "",
        "Medians over rounds; each run is its own process, ways interleaved per round.",
        "samples/s = training examples / seconds of the training call (model load, tokenizing, training).",
        "",
        "| job | way | samples/s | wall s | peak RSS MB | eval |",
        "|---|---|---|---|---|---|",
    ]
    jobs = list(dict.fromkeys(r["job"] for r in rows))
    for job in jobs:
        metric = next(r["eval_metric"] for r in rows if r["job"] == job)
        for way in ways:
            lines.append(
                f"| {job} | {way} | {median(job, way, 'samples_per_second'):.1f} | "
                f"{median(job, way, 'wall_seconds'):.1f} | {median(job, way, 'peak_rss_mb'):.0f} | "
                f"{metric} {median(job, way, 'eval'):.3f} |"
            )
    if "pipeline" in ways and others:
        lines += ["", "Ratios (pipeline / other, from the medians):", "",
                  "| job | " + " | ".join(f"samples/s vs {w}" for w in others) + " | wall vs hand | peak RSS vs hand |",
                  "|---" * (len(others) + 3) + "|"]
        for job in jobs:
            speed = median(job, "pipeline", "samples_per_second")
            cells = [f"{speed / median(job, w, 'samples_per_second'):.2f}" for w in others]
            if "hand" in ways:
                cells += [f"{median(job, 'pipeline', key) / median(job, 'hand', key):.2f}"
                          for key in ("wall_seconds", "peak_rss_mb")]
            else:
                cells += ["-", "-"]
            lines.append(f"| {job} | " + " | ".join(cells) + " |")
    if {"minilm-lora", "minilm-full"} <= set(jobs) and "pipeline" in ways:
        ratio = median("minilm-lora", "pipeline", "peak_rss_mb") / median("minilm-full", "pipeline", "peak_rss_mb")
        lines += ["", f"LoRA / full fine-tune peak RSS (pipeline, MiniLM): {ratio:.2f}"]
    lines += ["", "Start-up (median of 5, whole process):", ""]
    lines += [f"- `{name}`: {seconds:.2f} s" for name, seconds in plans.items()]
    lines += [f"- ratio: {plans['pipeline plan'] / plans['import transformers']:.2f}"]
    path = HERE / f"{options.out}.md"
    previous = path.read_text() if path.exists() else ""
    analysis = previous[previous.index("\n## ") :] if "\n## " in previous else ""
    path.write_text("\n".join(lines) + "\n" + analysis)
    print("\n".join(lines))

if __name__ == "__main__":
    main()
