"""A sweep written as a plain loop over `evolve`d specs: no framework, just values.

Run: python examples/sweep.py   (tiny models built offline; about ten seconds)
"""

import itertools
import tempfile

from pipeline import Hardware, Spec, evolve, fine_tune, plan, run_id, start
from pipeline.testing import sentiment, tiny_models


def main() -> None:
    models = tiny_models(tempfile.mkdtemp())
    base = Spec(base=models["bert"], train=sentiment(200), validation=sentiment(50, seed=1), maxlength=32,
                lora=True, training={"num_train_epochs": 2, "disable_tqdm": True, "logging_strategy": "no"})
    cpu = Hardware()
    results = []
    for rank, rate in itertools.product((4, 16), (5e-3, 2e-2)):
        spec = evolve(base, lora={"r": rank, "lora_alpha": 2 * rank, "target_modules": "all-linear"},
                      training={**base.training, "learning_rate": rate})
        run = fine_tune(start(spec, cpu))
        results.append((run_id(spec, plan(spec, cpu)), rank, rate, run.metrics["eval_loss"]))

    print(f"{'run':<12}{'r':>4}{'lr':>10}{'eval_loss':>12}")
    for identity, rank, rate, loss in results:
        print(f"{identity:<12}{rank:>4}{rate:>10g}{loss:>12.4f}")
    best = min(results, key=lambda row: row[-1])
    print(f"best: {best[0]} (r={best[1]}, lr={best[2]:g})")


if __name__ == "__main__":
    main()
