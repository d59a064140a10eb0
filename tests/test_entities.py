"""Token classification (NER): the task added as one file, `pipeline/tasks/entities.py`."""

from __future__ import annotations

import pytest

from pipeline import DataError, Hardware, Spec, evaluate, fine_tune, plan, predict
from pipeline.tasks import TASKS, Labels
from pipeline.tasks.entities import _entities, read_labels, tagged, words
from pipeline.testing import spanned_rows, tagged_rows

CPU = Hardware()


# -- pure: no model ---------------------------------------------------------------------------


def test_a_text_and_its_spans_become_words_and_iob_tags():
    text = "Ada Lovelace lives in Paris."
    found, tags, offsets = tagged(text, [{"start": 0, "end": 12, "label": "PER"}, [22, 27, "LOC"]])
    assert found == ["Ada", "Lovelace", "lives", "in", "Paris", "."]
    assert tags == ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    assert [text[a:b] for a, b in offsets] == found
    assert tagged(["Ada", "sings"], ["B-PER", "O"]) == (["Ada", "sings"], ["B-PER", "O"], [])


def test_the_tag_set_comes_from_the_tags_or_the_span_labels():
    assert read_labels([["O", "B-PER"], ["B-LOC", "O"]], "tags") == Labels(3, classes=("B-LOC", "B-PER", "O"))
    spans = read_labels([[{"start": 0, "end": 3, "label": "PER"}], []], "entities")
    assert spans.classes == ("B-PER", "I-PER", "O")
    with pytest.raises(DataError, match="row 2 holds 'B-PER'; expected a list of tags"):
        read_labels([["O", "B-PER"], "B-PER"], "tags")
    with pytest.raises(DataError, match="at least two"):
        read_labels([["O"], ["O"]], "tags")


def test_bad_rows_are_named_before_anything_loads():
    check = TASKS["token-classification"].check
    data = {"tokens": [["a", "b"], "", ["c"]], "tags": [["O"], ["O"], ["O"]]}
    problems = check(data, ("tokens", "tags"), "train")
    assert problems[0].startswith("train: column 'tokens': row 2 without a text or a list of words")
    assert "row 1 has 1 tags for 2 words; give one tag per word" in problems[1]
    spans = {"text": ["short"], "entities": [[{"start": 2, "end": 9, "label": "X"}]]}
    assert "span [2, 9, 'X'] is not within its text of 5 characters" in check(spans, ("text", "entities"), "train")[0]


def test_predicted_tags_group_into_entities_with_character_offsets():
    text = "the red car is big"
    tags = {0: ("O", 0.9), 1: ("B-ITEM", 0.8), 2: ("I-ITEM", 0.6), 3: ("O", 0.9), 4: ("I-SIZE", 0.5)}
    found = _entities(text, words(text), tags)
    assert found == [
        {"entity": "red car", "type": "ITEM", "start": 4, "end": 11, "score": pytest.approx(0.7)},
        {"entity": "big", "type": "SIZE", "start": 15, "end": 18, "score": 0.5},  # a stray I- starts one
    ]


def test_the_plan_knows_the_task_from_its_value():
    derived = plan(Spec(base="m", task="token-classification", train=tagged_rows(4), lora=True), CPU)
    assert derived.model_class == "AutoModelForTokenClassification"
    assert derived.task_type == "TOKEN_CLS"
    assert derived.lora["exclude_modules"] == ("classifier", "score")  # peft trains the head in full
    assert "seqeval" in derived.metrics


# -- real runs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagger(models, tmp_path_factory):
    """A tiny BERT trained in full on the tagged rows, saved: (the run, its folder)."""
    folder = tmp_path_factory.mktemp("tagger") / "run"
    spec = Spec(
        base=models["bert"], task="token-classification", train=tagged_rows(128), validation=tagged_rows(16, 1),
        training={"num_train_epochs": 6, "learning_rate": 1e-3, "seed": 0, "output_dir": str(folder)},
    )
    return fine_tune(spec), str(folder)


def test_a_tiny_model_learns_entities_and_predicts_them_with_offsets(tagger):
    run, folder = tagger
    assert run.metrics["eval_f1"] >= 0.9, dict(run.metrics)
    assert {"eval_precision", "eval_recall"} <= set(run.metrics)
    text = "the boat is green and a white hat"
    (found,) = predict(run, [text])
    assert [(e["entity"], e["type"]) for e in found["entities"]] == [
        ("boat", "THING"), ("green", "COLOR"), ("white hat", "ITEM")]
    assert all(text[e["start"] : e["end"]] == e["entity"] and 0 < e["score"] <= 1 for e in found["entities"])
    # the saved folder scores as the run did, and predicts the same
    again = evaluate(folder, tagged_rows(16, 1), task="token-classification")
    assert again["eval_f1"] == pytest.approx(run.metrics["eval_f1"])
    assert predict(folder, [text], task="token-classification")[0]["entities"] == [
        {**e, "score": pytest.approx(e["score"], abs=1e-5)} for e in found["entities"]]


@pytest.mark.parametrize("quantize", [False, True], ids=["lora", "qlora"])
def test_text_with_spans_trains_with_lora_and_qlora(models, quantize):
    rows = spanned_rows(128)
    spec = Spec(
        base=models["bert"], task="token-classification", columns=("text", "entities"), train=rows,
        validation=spanned_rows(16, 1), lora=True, quantize=quantize, quantize_on_cpu=quantize,
        training={"num_train_epochs": 8, "learning_rate": 5e-3, "seed": 0},
    )
    run = fine_tune(spec)
    assert bool(run.plan.quantization) is quantize
    assert run.parameters.trainable < run.parameters.total
    # the plan counts what trains as the run does: the adapters, the head peft trains in full, 7 tags from the data
    assert run.plan.memory.trainable == run.parameters.trainable
    assert run.plan.memory.parts["adapters"] == 4 * run.parameters.trainable
    assert run.metrics["eval_f1"] >= (0.9 if not quantize else 0.5), dict(run.metrics)


def test_distilling_from_a_trained_tagger(models, tagger):
    common = dict(base=models["bert"], task="token-classification", train=tagged_rows(32, 2),
                  validation=tagged_rows(16, 1), training={"num_train_epochs": 1, "learning_rate": 1e-3, "seed": 0})
    plain = fine_tune(Spec(**common))
    taught = fine_tune(Spec(**common, teacher=tagger[1], distillation=(2.0, 0.9)))
    assert taught.plan.distillation["loss"] == "KL of softmax(logits/T) over the tags per tagged word"
    assert taught.metrics["train_loss"] != plain.metrics["train_loss"]  # the teacher's term is in the loss
