"""The main job: fine-tune the real all-MiniLM-L6-v2 with LoRA on shipped reviews, then use it.

Run: python examples/main.py   (about a minute on 2 CPU cores; offline)
"""

import time
from pathlib import Path

import torch

from make_models import main as make_models
from pipeline import detect, fine_tune, load_spec, plan, start

HERE = Path(__file__).parent


def main() -> None:
    make_models()
    spec = load_spec(HERE / "classification.yaml")
    hardware = detect()
    print(plan(spec, hardware), "\n")

    started = time.perf_counter()
    run = fine_tune(start(spec, hardware))  # evaluation reports accuracy and macro-F1 by default
    seed = run.plan.training_args["seed"]
    print(f"\n{run.parameters}; trained in {time.perf_counter() - started:.0f} s (seed {seed})")
    for name in ("train_loss", "eval_loss", "eval_accuracy", "eval_macro_f1", "train_samples_per_second"):
        print(f"  {name:<26} {run.metrics[name]:.4g}")

    reviews = [
        "The espresso machine makes a perfect cup every morning.",
        "The airline lost my luggage and nobody answered the phone.",
        "This little speaker sounds far bigger than it looks.",
        "The paint started peeling within a week.",
    ]
    batch = run.tokenizer(reviews, padding=True, return_tensors="pt")
    with torch.no_grad():
        probabilities = run.model(**batch).logits.softmax(-1)
    print("\npredictions on new reviews:")
    for review, p in zip(reviews, probabilities):
        label = run.model.config.id2label[int(p.argmax())]
        print(f"  {label:<8} {float(p.max()):.2f}  {review}")


if __name__ == "__main__":
    main()
