"""Functional composition: build your own chains from the stages.

1. A chain without `train`: inspect the adapted model and its trainable parameters.
2. A custom stage (freeze the embeddings) slotted between load and adapt.
3. `merge` after `train`: a plain transformers model, adapters folded in.

Run: python examples/compose.py   (tiny models built offline; a few seconds)
"""

import tempfile
from dataclasses import replace

from toolz import compose_left

from pipeline import Hardware, Spec, adapt, evolve, load, merge, quantize, start, train
from pipeline.testing import sentiment, tiny_models


def freeze_embeddings(run):
    """A custom stage: same signature as the others, Run in, new Run out."""
    for parameter in run.model.base_model.embeddings.parameters():
        parameter.requires_grad = False
    return replace(run)


def main() -> None:
    models = tiny_models(tempfile.mkdtemp())
    spec = Spec(base=models["bert"], train=sentiment(200), validation=sentiment(50, seed=1), lora=True, maxlength=32,
                training={"learning_rate": 1e-2, "num_train_epochs": 3, "disable_tqdm": True})
    cpu = Hardware()

    inspect = compose_left(load, quantize, adapt)
    run = inspect(start(spec, cpu))
    print(f"1. adapted, not trained: {type(run.model).__name__}, {run.parameters}")

    frozen = compose_left(load, freeze_embeddings, quantize, adapt)(start(evolve(spec, lora=None), cpu))
    print(f"2. with frozen embeddings, full fine-tune: {frozen.parameters}")

    serve = compose_left(load, quantize, adapt, train, merge)
    served = serve(start(spec, cpu))
    print(f"3. trained and merged: {type(served.model).__name__}, eval_loss {served.metrics['eval_loss']:.4f}")


if __name__ == "__main__":
    main()
