"""The search example (`examples/search.yaml`) at three seeds: `pipeline` against the same training written by
hand with sentence-transformers and peft, side by side in one process (interleaved, so both see the same
machine), and the held-out retrieval of the base model and of each.

python -m bench.search [SETTING ...]     e.g. python -m bench.search training.num_train_epochs=2

The hand-written side is what a user of sentence-transformers writes: `SentenceTransformer`, the transformer
inside wrapped with peft's `get_peft_model` (the library's own adapter support wants a newer peft), the
in-batch negatives loss, the no-duplicates batch sampler, `SentenceTransformerTrainer`, with the example's
learning rate, epochs, batch, LoRA config, length and seed, evaluating after each epoch as the example does.
Both are scored by the same evaluator on examples/data/search-test.jsonl (every held-out question against
all 120 passages); the times are the trainers' own ``train_runtime`` (evaluations between epochs included). Prints one line of JSON
per run, then one with the means and the speed ratio.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"
SCORES = ("cosine_ndcg@10", "cosine_recall@10", "cosine_accuracy@1")


def by_hand(spec, evaluator) -> tuple[float, dict[str, float]]:
    """The example's training written with sentence-transformers and peft directly: (train seconds, metrics)."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import set_seed

    from pipeline.core.frozen import thaw
    from pipeline.core.spec import LORA_DEFAULTS

    training = thaw(spec.training)
    set_seed(training["seed"])
    model = SentenceTransformer(spec.base, device="cpu")
    model.max_seq_length = spec.maxlength
    model[0].model = get_peft_model(model[0].auto_model, LoraConfig(task_type="FEATURE_EXTRACTION", **LORA_DEFAULTS))
    data = {}
    for split in ("train", "validation"):
        rows = [json.loads(line) for line in Path(getattr(spec, split)).read_text().splitlines()]
        data[split] = Dataset.from_list([{k: r[k] for k in ("anchor", "positive", "negative")} for r in rows])
    args = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(), report_to="none", save_strategy="no", eval_strategy="epoch", disable_tqdm=True,
        use_cpu=True, batch_sampler="no_duplicates", **{k: v for k, v in training.items() if k != "disable_tqdm"})
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data["train"],
                                         eval_dataset=data["validation"], evaluator=evaluator,
                                         loss=MultipleNegativesRankingLoss(model))
    seconds = trainer.train().metrics["train_runtime"]
    return seconds, {key: float(value) for key, value in evaluator(model).items()}


def main() -> None:
    sys.path.insert(0, str(EXAMPLES))
    from make_models import main as make_models

    from pipeline import fine_tune, load_spec, start
    from pipeline.io.data import read
    from pipeline.io.files import parse_settings
    from pipeline.tasks import TASKS
    from pipeline.training.detect import detect
    from pipeline.training.stages import library

    make_models()
    settings = sys.argv[1:]
    rows = {"pipeline": [], "by hand": []}
    for seed in range(3):
        spec = load_spec(EXAMPLES / "search.yaml", parse_settings([*settings, f"training.seed={seed}",
                                                                   "training.disable_tqdm=true"]))
        held = read(spec.validation, "validation")
        evaluator = TASKS["embeddings"].sentences.evaluator(library(), held, ("anchor", "positive", "negative"))
        run = start(spec, detect())
        began = time.perf_counter()
        run = fine_tune(run)
        metrics = dict(run.metrics)
        seconds = metrics["train_runtime"]
        found = {"side": "pipeline", "seed": seed, "train_seconds": round(seconds, 1), "load_and_train_seconds":
                 round(time.perf_counter() - began, 1)}
        found |= {f"before_{k}": round(metrics[f"before_eval_{k}"], 3) for k in SCORES}
        found |= {k: round(metrics[f"eval_{k}"], 3) for k in SCORES}
        rows["pipeline"].append(found)
        print(json.dumps(found), flush=True)
        seconds, scored = by_hand(spec, evaluator)
        found = {"side": "by hand", "seed": seed, "train_seconds": round(seconds, 1)}
        found |= {k: round(scored[k], 3) for k in SCORES}
        rows["by hand"].append(found)
        print(json.dumps(found), flush=True)

    def mean(side: str, key: str) -> float:
        return round(sum(r[key] for r in rows[side]) / len(rows[side]), 3)

    summary = {"settings": settings, "samples_per_second_ratio (pipeline / by hand)":
               round(mean("by hand", "train_seconds") / mean("pipeline", "train_seconds"), 2)}
    summary |= {f"base {k}": mean("pipeline", f"before_{k}") for k in SCORES}
    summary |= {f"{side} {k}": mean(side, k) for side in rows for k in SCORES}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
