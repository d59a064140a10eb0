"""A sweep from Python: `pipeline.sweep` trains each variant into its own run folder and returns one
record per trial (what `pipeline sweep` prints and writes as results.csv).

Run: python examples/sweep.py   (tiny models built offline; about ten seconds)
"""

import tempfile
from pathlib import Path

from pipeline import Hardware, Spec, sweep
from pipeline.testing import sentiment, tiny_models


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    models = tiny_models(folder / "models")
    base = Spec(base=models["bert"], train=sentiment(200), validation=sentiment(50, seed=1), maxlength=32,
                lora=True, training={"num_train_epochs": 2, "disable_tqdm": True, "logging_strategy": "no"})
    rows = sweep(base, grid={"lora.r": [4, 16], "training.learning_rate": [5e-3, 2e-2]}, output=folder / "sweep",
                 hardware=Hardware())
    print(f"{'run':<12}{'r':>4}{'lr':>10}{'eval_loss':>12}")
    for row in rows:
        print(f"{row['run']:<12}{row['lora.r']:>4}{row['training.learning_rate']:>10g}{row['eval_loss']:>12.4f}")
    best = min(rows, key=lambda row: row["eval_loss"])
    print(f"best: {best['run']} (r={best['lora.r']}, lr={best['training.learning_rate']:g}); "
          f"results.csv and sweep.png in {folder / 'sweep'}")


if __name__ == "__main__":
    main()
