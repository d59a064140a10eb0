"""The benchmark jobs and their data: the same model, data, seed and hyperparameters for every way."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

FILLER = [
    "I ordered it on a Monday and it came on the following Thursday.", "The box was the usual cardboard kind.",
    "My brother had recommended the brand to me last spring.", "I have used similar products for a few years now.",
    "The instructions were printed in four languages.", "We tried it at home and again at the weekend.",
    "The colour is a dark grey, close to the photos online.", "It took about ten minutes to set everything up.",
    "The price was about the same as in the shop down the road.", "I compared three models before choosing this one.",
    "My neighbour has the older version of it.", "The manual mentions a warranty of two years.",
]


@dataclass(frozen=True)
class Job:
    name: str
    task: str
    model: str  # "minilm" or a tiny model name
    lora: bool
    learning_rate: float
    maxlength: int
    epochs: int = 1
    batch: int = 16


JOBS = {
    job.name: job
    for job in (
        Job("minilm-lora", "text-classification", "minilm", True, 3e-3, 256),
        Job("minilm-full", "text-classification", "minilm", False, 1e-4, 256),
        Job("llama-lora", "language-generation", "llama", True, 5e-3, 64),
    )
}


def reviews(n: int, seed: int, long_share: float = 0.2) -> list[dict]:
    """Reviews with labels 0/1; ``long_share`` of them 120-250 words of everyday detail around the verdict."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "examples" / "data"))
    from make_sentiment import ENDINGS, NEGATIVE, POSITIVE, SUBJECTS

    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rnd.randrange(2)
        verdict = f"{rnd.choice(SUBJECTS)} {rnd.choice(POSITIVE if label else NEGATIVE)}{rnd.choice(ENDINGS)}."
        if rnd.random() < long_share:
            words, sentences = rnd.randint(120, 250), []
            while sum(len(s.split()) for s in sentences) < words:
                sentences.append(rnd.choice(FILLER))
            sentences.insert(rnd.randrange(len(sentences) + 1), verdict)
            verdict = " ".join(sentences)
        rows.append({"text": verdict, "label": label})
    return rows


def write_data(folder: Path, train: int, evaluate: int) -> None:
    """The classification set (variable lengths) and the LM texts, as JSON lines."""
    from pipeline.testing import sentences

    folder.mkdir(parents=True, exist_ok=True)
    sets = {
        "reviews-train": reviews(train, seed=1),
        "reviews-eval": reviews(evaluate, seed=2),
        "texts-train": [{"text": t} for t in sentences(train * 2, seed=1)],
        "texts-eval": [{"text": t} for t in sentences(evaluate, seed=2)],
    }
    for name, rows in sets.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def read(folder: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()]
