"""Token classification (named entities): a tag per word, entities scored with seqeval.

Data comes in either of two forms, row by row:

- words and tags, CoNLL style: ``{"tokens": ["Ada", "lives", "in", "Paris"], "tags": ["B-PER", "O", "O", "B-LOC"]}``
  (tags are IOB2 names, or any names: they are the model's labels);
- a text and its entities as character spans: ``{"text": "Ada lives in Paris", "entities": [{"start": 0,
  "end": 3, "label": "PER"}, ...]}`` (or ``[start, end, label]`` lists), with ``columns: [text, entities]``.
  The text is split into words (runs of letters and digits, and each other character); a word that
  starts inside a span is tagged ``B-`` (the span's first word) or ``I-``.

Each word's first sub-word token carries its tag, the others -100 (not in the loss), as the
transformers token-classification examples do. ``predict`` returns the entities of a text with
their character offsets, as txtai's Entity pipeline does.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.errors import DataError
from pipeline.tasks.task import Kit, Labels, Task, argmax_ids, rows

WORD = re.compile(r"\w+|[^\w\s]")
"""A word of a text given whole: a run of letters and digits, or one other visible character."""


def words(text: str) -> list[tuple[str, int, int]]:
    """The words of ``text`` with their character offsets."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def _span(value: Any) -> tuple[int, int, str]:
    """(start, end, label) of one entity given as a dict or a ``[start, end, label]`` list."""
    if isinstance(value, dict):
        return int(value["start"]), int(value["end"]), str(value["label"])
    start, end, label = value
    return int(start), int(end), str(label)


def tagged(text: Any, tags: Any) -> tuple[list[str], list[Any], list[tuple[int, int]]]:
    """One row as words, a tag per word and each word's character offsets (words given: no offsets)."""
    if not isinstance(text, str):
        return list(text), list(tags), []
    found = words(text)
    spans = sorted(_span(s) for s in tags or ())
    labels = []
    for _, start, _ in found:
        inside = next((s for s in spans if s[0] <= start < s[1]), None)
        labels.append("O" if inside is None else f"{'B' if start <= inside[0] else 'I'}-{inside[2]}")
    # a word that starts before its span still begins it: the first word overlapping each span is B-
    for s in spans:
        first = next((i for i, (_, a, b) in enumerate(found) if a < s[1] and b > s[0]), None)
        if first is not None:
            labels[first] = f"B-{s[2]}"
    return [w for w, _, _ in found], labels, [(a, b) for _, a, b in found]


def read_labels(values: list[Any], field: str, where: Any = None) -> Labels:
    """The tag set: the names in the tag lists, or ``B-``/``I-`` of each span label and ``O``."""
    where = where or (lambda i: f"row {i + 1}")
    tags: set[str] = set()
    for i, value in enumerate(values):
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{field}: {where(i)} holds {value!r}; expected a list of tags, or of entity spans")
        for item in value:
            if isinstance(item, str):
                tags.add(item)
            else:
                try:
                    label = _span(item)[2]
                except (KeyError, TypeError, ValueError):
                    raise DataError(
                        f"{field}: {where(i)} holds {item!r}; expected a tag name, or an entity span "
                        "{'start': int, 'end': int, 'label': str}"
                    ) from None
                tags |= {"O", f"B-{label}", f"I-{label}"}
    if len(tags) < 2:
        raise DataError(f"{field}: the data has the tags {sorted(tags)}; give at least two (e.g. O and B-PER)")
    return Labels(len(tags), classes=tuple(sorted(tags)))


def _check(dataset: Any, columns: tuple[str | None, ...], field: str) -> list[str]:
    text, tags = columns
    bad, found = [], []
    for i, (value, labels) in enumerate(zip(dataset[text], dataset[tags])):
        if isinstance(value, str) and value.strip():
            try:
                spans = [_span(s) for s in labels or ()]
            except (KeyError, TypeError, ValueError):
                found.append(f"{field}: column {tags!r}: row {i + 1} is {labels!r}; expected entity spans "
                             "{'start': int, 'end': int, 'label': str} for its text")
                continue
            outside = [s for s in spans if not 0 <= s[0] < s[1] <= len(value)]
            if outside:
                found.append(f"{field}: column {tags!r}: row {i + 1}: span {list(outside[0])} is not within its "
                             f"text of {len(value)} characters; fix its start and end")
        elif not isinstance(value, (list, tuple)) or not value or not all(isinstance(w, str) for w in value):
            bad.append(i)
        elif not isinstance(labels, (list, tuple)) or len(labels) != len(value):
            found.append(f"{field}: column {tags!r}: row {i + 1} has {len(labels or ())} tags for {len(value)} "
                         "words; give one tag per word")
    if bad:
        found.insert(0, f"{field}: column {text!r}: {rows(bad)} without a text or a list of words "
                        f"(got {dataset[text][bad[0]]!r}); fill or drop them")
    return found


def _encode(batch, columns, tokenizer, maxlength, spec, labels, indices):
    text, tags = columns
    split = [tagged(value, found)[:2] for value, found in zip(batch[text], batch[tags])]
    encoded = tokenizer([w for w, _ in split], is_split_into_words=True, truncation=True, max_length=maxlength)
    aligned = []
    for i, (_, names) in enumerate(split):
        seen, row = set(), []
        for word in encoded.word_ids(i):
            row.append(-100 if word is None or word in seen else _tag(labels, names[word]))
            seen.add(word)
        aligned.append(row)
    encoded["labels"] = aligned
    return encoded


def _tag(labels: Labels, name: Any) -> int:
    try:
        return labels.encode(name)
    except ValueError:
        raise DataError(f"tag {name!r} is not one of the model's ({', '.join(map(str, labels.classes))})") from None


def _distill(student: Any, teacher: Any, inputs: Any, kl: Any, problem: str | None) -> Any:
    mask = inputs["labels"] != -100
    return kl.softmax(student.logits[mask], teacher.logits[mask])


def _score(labels: Labels | None, rows: Any, encoded: Any, columns: Any) -> tuple[Any, Any]:
    """seqeval's entity-level precision, recall and F1 over the words' tags (their first tokens)."""

    def entity_metrics(prediction: Any) -> dict[str, float]:
        from seqeval.metrics import f1_score, precision_score, recall_score

        truth, predicted = [], []
        for guess, gold in zip(prediction.predictions, prediction.label_ids):
            kept = gold != -100
            truth.append([labels.name(int(t)) for t in gold[kept]])
            predicted.append([labels.name(int(p)) for p in guess[kept]])
        return {"precision": float(precision_score(truth, predicted, zero_division=0)),
                "recall": float(recall_score(truth, predicted, zero_division=0)),
                "f1": float(f1_score(truth, predicted, zero_division=0))}

    return entity_metrics, argmax_ids


def _predict(items: list[Any], kit: Kit) -> list[dict[str, Any]]:
    """Each text's entities: ``entity`` (its text), ``type``, ``start`` and ``end`` characters and ``score``
    (the mean probability of its words' tags)."""
    names = kit.model.config.id2label
    found = []
    for text in items:
        split = words(text)
        batch = kit.tokenize([w for w, _, _ in split], is_split_into_words=True)
        probabilities = kit.model(**batch).logits[0].float().softmax(-1)
        tags: dict[int, tuple[str, float]] = {}
        for position, word in enumerate(batch.word_ids(0)):
            if word is not None and word not in tags:
                score, index = probabilities[position].max(-1)
                tags[word] = (names[int(index)], float(score))
        found.append({"input": text, "entities": _entities(text, split, tags)})
    return found


def _entities(text: str, split: list[tuple[str, int, int]], tags: dict[int, tuple[str, float]]) -> list[dict[str, Any]]:
    """IOB2 tags per word grouped into entities (an ``I-`` that does not continue its type starts one)."""
    found: list[dict[str, Any]] = []
    scores: list[tuple[float, int]] = []
    for i, (_, start, end) in enumerate(split):
        tag, score = tags.get(i, ("O", 1.0))
        kind = tag[2:] if tag[:2] in ("B-", "I-") else (None if tag == "O" else tag)
        continues = bool(found) and found[-1]["open"] and found[-1]["type"] == kind and not tag.startswith("B-")
        if found and found[-1]["open"] and not continues:
            found[-1]["open"] = False
        if kind is None:
            continue
        if continues:
            found[-1]["end"] = end
            scores[-1] = (scores[-1][0] + score, scores[-1][1] + 1)
        else:
            found.append({"type": kind, "start": start, "end": end, "open": True})
            scores.append((score, 1))
    return [{"entity": text[e["start"] : e["end"]], "type": e["type"], "start": e["start"], "end": e["end"],
             "score": total / n} for e, (total, n) in zip(found, scores)]


TASK = Task(
    name="token-classification",
    model_class="AutoModelForTokenClassification",
    lora_task="TOKEN_CLS",
    collator="DataCollatorForTokenClassification",
    columns=("tokens", "tags"),
    column_counts=(2,),
    metrics="precision, recall, f1 of whole entities (seqeval, IOB2)",
    metric_names=("precision", "recall", "f1"),
    distillation="KL of softmax(logits/T) over the tags per tagged word",
    encode=_encode,
    collate=lambda library, tokenizer, model, seed: library.DataCollatorForTokenClassification(tokenizer),
    distill=_distill,
    predict=_predict,
    said=lambda p: f"{p['input']}  ->  " + (", ".join(
        f"{e['entity']} ({e['type']} {e['score']:.2f})" for e in p["entities"]) or "(no entities)"),
    check=_check,
    score=_score,
    read_labels=read_labels,
    token_loss=True,
    head=lambda hidden, labels: (hidden + 1) * labels,  # the classifier's weights and biases
    heads=("classifier", "score"),
    lora_exclude=("classifier", "score"),
    hub_tag="token-classification",
)
