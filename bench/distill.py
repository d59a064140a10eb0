"""Distillation on the real MiniLM: does a small student learn more from a teacher than from labels alone?

    python -m bench.distill                      # about 3 minutes here
    python -m bench.distill --rows 100 --layers 2 --seeds 42,1,2

The teacher is all-MiniLM-L6-v2 fine-tuned (the main job's LoRA settings) on the shipped
training reviews after the first ``--rows`` (``--teacher-sees all``: on all 400). The
student is MiniLM cut to its first ``--layers`` layers (`pipeline.testing.truncated`),
fully fine-tuned on the first ``--rows`` reviews, once with labels alone and once
distilling from the teacher (``--temperature``, ``--alpha``), per seed. Accuracy is on
the 100 held-out reviews, whose wording never occurs in training.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
EXAMPLES = Path(__file__).parent.parent / "examples"


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seeds", default="42,1,2")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--teacher", help="a teacher run folder to reuse (default: train one, then delete it)")
    parser.add_argument("--teacher-sees", choices=["rest", "all"], default="rest",
                        help="the teacher trains on the reviews the student does not see (default), or on all")
    args = parser.parse_args()

    import transformers

    from pipeline import Spec, fine_tune
    from pipeline.testing import truncated

    transformers.logging.set_verbosity_error()
    train, test = str(EXAMPLES / "data" / "sentiment-train.jsonl"), str(EXAMPLES / "data" / "sentiment-test.jsonl")
    everything = [json.loads(line) for line in Path(train).read_text().splitlines()]
    rows = everything[: args.rows]
    teacher_rows = everything if args.teacher_sees == "all" else everything[args.rows :]
    minilm = str(EXAMPLES / "models" / "minilm")
    quiet = {"disable_tqdm": True, "logging_strategy": "no", "report_to": "none"}
    with tempfile.TemporaryDirectory() as folder:
        teacher = args.teacher or f"{folder}/teacher"
        taught = fine_tune(Spec(
            base=minilm, train=teacher_rows, validation=test, maxlength=64, lora=True, metrics=accuracy,
            training={"learning_rate": 3e-3, "num_train_epochs": 3, "per_device_train_batch_size": 16, "seed": 42,
                      "output_dir": teacher, **quiet},
        )) if not args.teacher else None
        student = truncated(minilm, f"{folder}/student", layers=args.layers)
        results = {"labels only": [], "distilled": []}
        for seed in (int(s) for s in args.seeds.split(",")):
            for way in results:
                extra = {"teacher": teacher, "distillation": (args.temperature, args.alpha)} if way == "distilled" else {}
                run = fine_tune(Spec(
                    base=student, train=rows, validation=test, maxlength=64, metrics=accuracy, **extra,
                    training={"learning_rate": args.learning_rate, "num_train_epochs": args.epochs, "per_device_train_batch_size": 16,
                              "seed": seed, **quiet},
                ))
                results[way].append(run.metrics["eval_accuracy"])
                print(f"seed {seed} {way}: {run.metrics['eval_accuracy']:.2f}", flush=True)
    if taught:
        print(f"\nteacher (6 layers, LoRA, {len(teacher_rows)} rows): accuracy {taught.metrics['eval_accuracy']:.2f}")
    print(f"student: MiniLM's first {args.layers} layers, full fine-tune, {args.rows} rows, {args.epochs} epochs at "
          f"{args.learning_rate:g}, T={args.temperature:g}, alpha={args.alpha:g}\n")
    print("| student | accuracy per seed | mean |\n|---|---|---|")
    for way, values in results.items():
        print(f"| {way} | {', '.join(f'{v:.2f}' for v in values)} | {statistics.mean(values):.3f} |")


if __name__ == "__main__":
    main()
