"""data.py: every data form reads the same, labels are detected, tasks tokenize correctly."""

import json

import pandas as pd
import pytest
from datasets import Dataset

from pipeline import DataError, Spec

from pipeline.io import data
from pipeline.tasks import Labels
from pipeline.tasks.classification import read_labels
from pipeline.testing import questions, sentences

ROWS = [{"text": "the car is red", "label": "positive"}, {"text": "the hat is blue", "label": "negative"}]


@pytest.fixture
def files(tmp_path):
    paths = {suffix: tmp_path / f"rows{suffix}" for suffix in data.FORMATS}
    paths[".jsonl"].write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    paths[".json"].write_text(json.dumps(ROWS))
    pd.DataFrame(ROWS).to_csv(paths[".csv"], index=False)
    pd.DataFrame(ROWS).to_parquet(paths[".parquet"])
    return paths


@pytest.mark.parametrize("suffix", data.FORMATS)
def test_files_read_as_the_rows_they_hold(files, suffix, tmp_path):
    assert data.read(str(files[suffix]), "train").to_list() == ROWS
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files.values())  # no cache files


def test_rows_dataframes_and_datasets_read_alike():
    for source in (Spec(base="m", train=ROWS).train, pd.DataFrame(ROWS), Dataset.from_list(ROWS)):
        assert data.read(source, "train").to_list() == ROWS


def test_a_missing_or_unknown_file_is_named(tmp_path):
    with pytest.raises(DataError, match="train: no such file"):
        data.read(str(tmp_path / "nope.jsonl"), "train")
    with pytest.raises(DataError, match=r"is not a data file this reads; use one of \.jsonl"):
        data.read(str(tmp_path / "rows.txt"), "train")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="train: cannot parse"):
        data.read(str(tmp_path / "bad.jsonl"), "train")


def test_missing_columns_name_the_columns_found():
    spec = Spec(base="m", train=ROWS, task="question-answering")
    assert data.problems(Dataset.from_list(ROWS), spec, "train") == [
        "train: missing columns ['question', 'context', 'answers'] for question-answering (found ['text', 'label']); "
        "rename the data's columns or set columns: {question: text, context: label, answers: answers}"
    ]
    assert data.problems(Dataset.from_list([]), spec, "train") == ["train: the dataset is empty; give at least one row"]


def test_rows_without_text_or_target_are_named():
    rows = [{"source": "a", "target": "b"}, {"source": None, "target": ""}, {"source": "c", "target": None}]
    spec = Spec(base="m", train=rows, task="sequence-sequence")
    assert data.problems(data.read(spec.train, "train"), spec, "train") == [
        "train: column 'source': row 2 without text (got None); fill or drop them",
        "train: column 'target': rows 2, 3 without target (got ''); fill or drop them",
    ]


def test_qa_answers_outside_their_context_are_named_by_row():
    rows = questions(3) + [{"question": "q ?", "context": "the car is red", "answers": {"text": ["green"],
                                                                                        "answer_start": [0]}},
                           {"question": "q ?", "context": "the car is red", "answers": {"text": ["red"],
                                                                                        "answer_start": []}}]
    spec = Spec(base="m", train=rows, task="question-answering")
    found = data.problems(data.read(spec.train, "train"), spec, "train")
    assert found[0].startswith("train: column 'answers': row 4: answer 'green' is not in its context at character 0")
    assert found[1].startswith("train: column 'answers': row 5 is {'text': ['red'], 'answer_start': []}; expected")


def test_columns_that_mix_types_are_a_data_error():
    with pytest.raises(DataError, match="train: column 'text' mixes str \\(row 1\\) and dict \\(row 2"):
        data.read(Spec(base="m", train=[{"text": "a"}, {"text": {"b": 1}}]).train, "train")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 1, 2, 1], Labels(3)),
        (["b", "a", "b"], Labels(2, classes=("a", "b"))),
        ([3, 11, 7], Labels(3, classes=(3, 7, 11))),
        ([[1, 0], [0.0, 1.0]], Labels(2, "multi_label_classification")),
        ([0.5, 1.5], Labels(1, "regression")),
    ],
    ids=["ids", "strings", "non-contiguous", "multi-label", "regression"],
)
def test_label_kinds_are_detected(values, expected):
    assert read_labels(values, "label") == expected


def test_label_problems_are_named():
    with pytest.raises(DataError, match="labels mix int and string"):
        read_labels([1, "a"], "column 'label'")
    with pytest.raises(DataError, match=r"multi-label vectors differ in length \(\[1, 2\]\)"):
        read_labels([[1], [1, 0]], "column 'label'")
    with pytest.raises(DataError, match="label None in row 2"):
        read_labels([1, None], "column 'label'")


def test_string_labels_map_to_ids_with_names():
    labels = read_labels(["pos", "neg", "pos"], "label")
    assert [labels.encode(v) for v in ["neg", "pos"]] == [0, 1]
    assert labels.config() == {"num_labels": 2, "id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}}


@pytest.fixture(scope="module")
def bert_tokenizer(models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models["bert"])


def test_classification_is_not_padded_here(bert_tokenizer):
    rows = [{"text": "the car", "label": 0}, {"text": "the car is red and the hat is blue", "label": 1}]
    spec = Spec(base="m", train=rows)
    encoded = data.encode(data.read(spec.train, "train"), spec, bert_tokenizer, 64, read_labels([0, 1], "label"))
    lengths = [len(ids) for ids in encoded["input_ids"]]
    assert lengths[0] < lengths[1]  # the collator pads each batch, not the whole set
    assert encoded["labels"] == [0, 1]


def test_a_non_text_value_is_named(bert_tokenizer):
    spec = Spec(base="m", train=[{"text": None, "label": 0}])
    with pytest.raises(DataError, match="column 'text': expected text, got None"):
        data.encode(data.read(spec.train, "train"), spec, bert_tokenizer, 64, read_labels([0, 1], "label"))


@pytest.mark.parametrize("merge", ["concat", "pack", None])
def test_language_model_blocks(bert_tokenizer, merge):
    texts = [{"text": t} for t in sentences(20)]
    spec = Spec(base="m", train=texts, task="language-modeling", merge=merge)
    encoded = data.encode(data.read(spec.train, "train"), spec, bert_tokenizer, 24)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    assert max(lengths) <= 24
    total = sum(len(bert_tokenizer(t["text"])["input_ids"]) for t in texts)
    if merge == "concat":
        assert sum(lengths) == total and all(n == 24 for n in lengths[:-1])
    elif merge == "pack":
        assert sum(lengths) == total and len(lengths) < len(texts)
    else:
        assert len(lengths) == len(texts)


def test_question_windows_without_the_answer_point_at_cls(bert_tokenizer):
    context = " ".join(["the hat is blue ."] * 12) + " the car is red ."
    rows = [{"question": "what color is the car ?", "context": context, "answers": "red"}]
    spec = Spec(base="m", train=rows, task="question-answering", maxlength=24, stride=4)
    encoded = data.encode(data.read(spec.train, "train"), spec, bert_tokenizer, 24)
    assert len(encoded) > 2  # the long context was split into windows
    found = 0
    for ids, start, end in zip(encoded["input_ids"], encoded["start_positions"], encoded["end_positions"]):
        if start == 0:
            assert end == 0
        else:
            found += 1
            assert bert_tokenizer.decode(ids[start : end + 1]) == "red"
    assert found >= 1


def test_squad_answers_label_the_answer_tokens(bert_tokenizer):
    spec = Spec(base="m", train=questions(10), task="question-answering", maxlength=64, stride=16)
    encoded = data.encode(data.read(spec.train, "train"), spec, bert_tokenizer, 64)
    for row, ids, start, end in zip(questions(10), encoded["input_ids"], encoded["start_positions"], encoded["end_positions"]):
        assert bert_tokenizer.decode(ids[start : end + 1]) == row["answers"]["text"][0]


@pytest.mark.parametrize("answer", [None, "", {"text": [], "answer_start": []}], ids=["None", "empty", "squad-v2"])
def test_questions_without_an_answer_point_at_cls(bert_tokenizer, answer):
    """txtai's forms of "no answer", and SQuAD v2's, accepted by the checks and labelled at CLS."""
    answered = questions(3) if isinstance(answer, dict) else [{**r, "answers": r["answers"]["text"][0]} for r in questions(3)]
    rows = [{"question": "what size is the car ?", "context": "the car is red .", "answers": answer}, *answered]
    spec = Spec(base="m", train=rows, task="question-answering", maxlength=64, stride=16)
    dataset = data.read(spec.train, "train")
    assert data.problems(dataset, spec, "train") == []
    encoded = data.encode(dataset, spec, bert_tokenizer, 64)
    cls = encoded["input_ids"][0].index(bert_tokenizer.cls_token_id)
    assert (encoded["start_positions"][0], encoded["end_positions"][0]) == (cls, cls)
    assert encoded["start_positions"][1] != cls  # answered questions keep their span


def test_an_answer_not_in_its_context_is_named(bert_tokenizer):
    rows = [{"question": "what color ?", "context": "the car is red", "answers": "green"}]
    spec = Spec(base="m", train=rows, task="question-answering", maxlength=64, stride=16)
    with pytest.raises(DataError, match="answer 'green' is not in its context"):
        data.encode(data.read(spec.train, "train"), spec, bert_tokenizer, 64)


def test_seq2seq_prefix_and_targets(models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["bart"])
    spec = Spec(base="m", train=[{"source": "the car", "target": "the hat"}], task="sequence-sequence", prefix="copy: ")
    encoded = data.encode(data.read(spec.train, "train"), spec, tokenizer, 64)
    assert tokenizer.decode(encoded["input_ids"][0], skip_special_tokens=True).strip() == "copy: the car"
    assert tokenizer.decode(encoded["labels"][0], skip_special_tokens=True).strip() == "the hat"


def test_labels_mixing_numbers_and_words_are_refused_from_csv_as_from_json(tmp_path):
    """Same data, same answer: a CSV reads "0", "1", "billing" as text; JSON lines keep 0 and 1 as ints."""
    from pipeline.io.preflight import preflight

    rows = [{"text": f"ticket {i}", "label": [0, 1, "billing", "refund", "login", "other"][i % 6]} for i in range(12)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.csv").write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    for name in ("t.jsonl", "t.csv"):
        spec = Spec(base="m", train=str(tmp_path / name))
        with pytest.raises(DataError, match=r"column 'label' mixes int|labels mix numbers and words \(train row 1: '0', train row 3"):
            preflight(spec)


def test_float_labels_of_only_0_and_1_are_not_silently_regression():
    with pytest.raises(DataError, match="all 0.0 or 1.0.*give ints 0 and 1"):
        read_labels([0.0, 1.0, 1.0], "column 'label'")
    assert read_labels([0.0, 0.5, 1.0], "label") == Labels(1, "regression")


def test_missing_columns_suggest_the_found_columns_that_fit_each_role():
    """A ticket CSV with ``ticket_id``, ``message`` and ``queue``: the text is the long string column, the label the
    one with few values; the fix names them by role."""
    rows = [{"ticket_id": i, "message": f"printer {i} on floor {i % 3} is out of toner again", "queue": ["it", "hr"][i % 2]}
            for i in range(8)]
    spec = Spec(base="m", train=rows)
    (problem,) = data.problems(data.read(rows, "train"), spec, "train")
    assert "missing columns ['text', 'label']" in problem
    assert "set columns: {text: message, label: queue}" in problem
