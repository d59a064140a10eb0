"""User data in, tokenized `datasets.Dataset` out, per task.

Everything stays in memory: files are parsed here (json, pandas), not through the
datasets cache, so a run without ``output_dir`` writes nothing. Texts are not padded
here; the collators pad each batch to its own longest example.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.frozen import thaw
from pipeline.core.errors import DataError
from pipeline.core.spec import Spec, source_kind
from pipeline.tasks import TASKS

FORMATS = (".jsonl", ".json", ".csv", ".parquet")


def read(source: Any, field: str) -> Any:
    """A `datasets.Dataset` from a file path, rows, a DataFrame or a Dataset (used as is)."""
    from datasets import Dataset

    if source_kind(source) == "dataset":
        return source
    rows = None
    try:
        if source_kind(source) == "frame":
            return Dataset.from_pandas(source, preserve_index=False)
        rows = _read_file(Path(source), field) if isinstance(source, str) else thaw(source)
        return Dataset.from_list(rows)
    except DataError:
        raise
    except (ValueError, TypeError) as e:  # pyarrow: a column whose values mix types
        raise DataError(f"{field}: {_mixed(rows) or str(e).splitlines()[0]}; give each column one type of value") from None


def _mixed(rows: list[dict[str, Any]] | None) -> str | None:
    """The first column whose values mix types: its name, the first row that differs and both types."""
    for column in dict.fromkeys(key for row in rows or () for key in row):
        first = None
        for i, row in enumerate(rows):
            value = row.get(column)
            if value is None:
                continue
            if first is None:
                first = (i, type(value).__name__)
            elif type(value).__name__ != first[1] and not {type(value).__name__, first[1]} <= {"int", "float"}:
                return (
                    f"column {column!r} mixes {first[1]} (row {first[0] + 1}) and {type(value).__name__} "
                    f"(row {i + 1}: {value!r})"
                )
    return None


def _read_file(path: Path, field: str) -> list[dict[str, Any]]:
    if path.suffix not in FORMATS:
        raise DataError(f"{field}: {str(path)!r} is not a data file this reads; use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataError(f"{field}: no such file {str(path)!r}; check the path (relative paths start at the spec file)")
    try:
        if path.suffix == ".jsonl":
            lines = path.read_text().splitlines()
            return [json.loads(line) for line in lines if line.strip()]
        if path.suffix == ".json":
            rows = json.loads(path.read_text())
            rows = rows.get("data", rows) if isinstance(rows, dict) else rows
            if not isinstance(rows, list):
                raise ValueError("expected a list of rows (or {'data': [rows]})")
            return rows
        import pandas as pd

        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        # An empty cell is missing (None), not a float NaN that turns a text or label column into numbers.
        return frame.astype(object).where(frame.notna(), None).to_dict("records")
    except (ValueError, OSError) as e:
        raise DataError(f"{field}: cannot parse {str(path)!r}: {e}") from None


def columns(spec: Spec) -> tuple[str | None, ...]:
    """The data columns a spec's task reads: its own ``columns`` or the task's defaults."""
    default = TASKS[spec.task].columns
    given = spec.columns or default
    if spec.task == "text-classification" and len(given) == 2:
        given = (given[0], None, given[1])
    return given


def problems(dataset: Any, spec: Spec, field: str) -> list[str]:
    """Everything wrong with ``dataset`` for ``spec.task`` that shows without a tokenizer.

    Empty data, missing columns (naming those found), rows without text, QA answers that
    are not in their context; each problem names the rows (the first few of them).
    """
    if len(dataset) == 0:
        return [f"{field}: the dataset is empty; give at least one row"]
    wanted = [c for c in columns(spec) if c is not None]
    missing = [c for c in wanted if c not in dataset.column_names]
    if missing:
        unused = [c for c in dataset.column_names if c not in wanted]
        close = {c: difflib.get_close_matches(c, unused, n=1, cutoff=0.8) for c in missing}
        hints = [f"{m[0]!r} for {c!r}" for c, m in close.items() if m]
        fix = f"did you mean {', '.join(hints)}? " if hints else ""
        chosen = [close[c][0] if close.get(c) else c for c in (spec.columns or wanted)]
        return [
            f"{field}: missing column{'s' if len(missing) > 1 else ''} {missing} for {spec.task} "
            f"(found {dataset.column_names}); {fix}rename the data's columns or set columns: {chosen}"
        ]
    found = []
    rule = TASKS[spec.task]
    label = columns(spec)[-1] if spec.task in ("text-classification", "question-answering") else None
    for column in (c for c in wanted if c != label):
        bad = [i for i, text in enumerate(dataset[column]) if not isinstance(text, str) or not text.strip()]
        if bad:
            what = "target" if rule.name == "sequence-sequence" and column == wanted[-1] else "text"
            found.append(
                f"{field}: column {column!r}: {_rows(bad)} without {what} (got {dataset[column][bad[0]]!r}); "
                "fill or drop them"
            )
    if spec.task == "question-answering" and not found:
        _, context, answers = columns(spec)
        for i, (answer, text) in enumerate(zip(dataset[answers], dataset[context])):
            try:
                _answer(answer, text)
            except AnswerMissing as e:
                found.append(f"{field}: column {answers!r}: row {i + 1}: {e}; fix answer_start or the answer text")
            except (KeyError, IndexError, TypeError, ValueError):
                found.append(
                    f"{field}: column {answers!r}: row {i + 1} is {answer!r}; expected a string, "
                    "{'text': [...], 'answer_start': [...]}, or None / \"\" for no answer"
                )
    return found[:20]


def _rows(indices: list[int]) -> str:
    """Rows counted from 1, as a person (and a JSON-lines file's line numbers) count them."""
    shown = ", ".join(str(i + 1) for i in indices[:5])
    more = f" and {len(indices) - 5} more" if len(indices) > 5 else ""
    return f"row{'s' if len(indices) > 1 else ''} {shown}{more}"


# -- labels --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Labels:
    """What the label column holds and how it maps to the model's outputs."""

    num_labels: int
    problem_type: str | None = None
    classes: tuple[Any, ...] | None = None
    """Original label values in id order, when they are not already ids 0..n-1."""

    def encode(self, value: Any) -> Any:
        if self.problem_type == "multi_label_classification":
            return [float(v) for v in value]
        if self.problem_type == "regression":
            return float(value)
        return self.classes.index(value) if self.classes else int(value)

    def config(self) -> dict[str, Any]:
        """Model config overrides: label count, problem type and label names."""
        kwargs: dict[str, Any] = {"num_labels": self.num_labels}
        if self.problem_type:
            kwargs["problem_type"] = self.problem_type
        if self.classes:
            kwargs["id2label"] = {i: str(c) for i, c in enumerate(self.classes)}
            kwargs["label2id"] = {str(c): i for i, c in enumerate(self.classes)}
        return kwargs


def labels(values: list[Any], field: str, where: Any = None) -> Labels:
    """Detect single-label classes (ints or strings), multi-label vectors or regression floats.

    ``where(i)`` names row ``i`` of ``values`` (default: "row i+1"). A label column that
    would silently change the task (a missing value, one class, empty vectors) is refused.
    """
    where = where or (lambda i: f"row {i + 1}")
    kinds = [_label_kind(v) for v in values]
    if None in kinds:
        row = kinds.index(None)
        raise DataError(
            f"{field}: label {values[row]!r} in {where(row)} is not a class (int or string), a regression value "
            "(float) or a multi-label vector (list of 0/1); fill or drop the row"
        )
    if len(set(kinds)) > 1:
        raise DataError(
            f"{field}: labels mix {' and '.join(sorted(set(kinds)))} ({where(kinds.index(kinds[0]))}: {values[0]!r}, "
            f"{where(next(i for i, k in enumerate(kinds) if k != kinds[0]))}: "
            f"{next(v for v, k in zip(values, kinds) if k != kinds[0])!r}); use one kind of label for every row"
        )
    kind = kinds[0]
    if kind == "string":  # a CSV reads a column of ints and words as text: the same mix JSON is refused for
        numbers = [i for i, v in enumerate(values) if v.strip().lstrip("-").isdigit()]
        if numbers and len(numbers) < len(values):
            word = next(i for i, v in enumerate(values) if not v.strip().lstrip("-").isdigit())
            raise DataError(
                f"{field}: labels mix numbers and words ({where(numbers[0])}: {values[numbers[0]]!r}, "
                f"{where(word)}: {values[word]!r}); use one kind of label for every row (all names, or all ids)"
            )
    if kind == "float" and set(values) <= {0.0, 1.0}:
        row = next(i for i, v in enumerate(values) if isinstance(v, float))
        raise DataError(
            f"{field}: labels are floats that are all 0.0 or 1.0 ({where(row)}: {values[row]!r}), which would be "
            "read as a regression target; for two classes give ints 0 and 1 (a regression target is read as "
            "one when its values are not all 0 and 1)"
        )
    if kind == "vector":
        sizes = {len(v) for v in values}
        if len(sizes) > 1:
            raise DataError(f"{field}: multi-label vectors differ in length ({sorted(sizes)}); give every row all labels")
        if sizes == {0}:
            raise DataError(f"{field}: the multi-label vectors are empty; give each row one 0/1 value per label")
        return Labels(sizes.pop(), "multi_label_classification")
    if kind == "float":
        return Labels(1, "regression")
    classes = tuple(sorted(set(values)))
    if len(classes) < 2:
        raise DataError(
            f"{field}: every row has the label {classes[0]!r}: one class cannot be learned (and would be read "
            "as regression); give rows of at least two classes"
        )
    if kind == "int" and classes == tuple(range(len(classes))):
        return Labels(len(classes))
    return Labels(len(classes), classes=classes)


def _label_kind(value: Any) -> str | None:
    if isinstance(value, int):  # bool too
        return "int"
    if isinstance(value, float):
        return None if math.isnan(value) else "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and v == v for v in value):
        return "vector"
    return None


# -- encoding ------------------------------------------------------------------------------


WINDOW_COLUMNS = ("example", "cls", "offsets")
"""Question answering with ``windows=True``: each window's example, CLS position and the character
span of each context token (``None`` off the context), to score answers as text."""


def encode(dataset: Any, spec: Spec, tokenizer: Any, maxlength: int, labels: Labels | None = None,
           windows: bool = False) -> Any:
    """Tokenize ``dataset`` for ``spec.task`` (batched ``datasets.map``), unpadded; question answering
    with ``windows`` keeps `WINDOW_COLUMNS` too."""
    cols = columns(spec)
    if TASKS[spec.task].language_model:
        process = lambda b, at: _blocks(b, cols[0], tokenizer, maxlength, spec.merge)
    else:
        stride = spec.stride_for(maxlength)
        process = {
            "text-classification": lambda b, at: _classification(b, cols, tokenizer, maxlength, labels),
            "question-answering": lambda b, at: _questions(b, cols, tokenizer, maxlength, stride, at if windows else None),
            "sequence-sequence": lambda b, at: _sequences(b, cols, tokenizer, maxlength, spec.prefix),
        }[spec.task]
    return dataset.map(
        process,
        batched=True,
        with_indices=True,
        num_proc=spec.tokenizers,
        remove_columns=dataset.column_names,
        desc=f"tokenizing for {spec.task}",
    )


def _texts(batch: dict[str, list[Any]], column: str) -> list[str]:
    texts = batch[column]
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise DataError(f"column {column!r}: expected text, got {bad[0]!r}; drop or fill the rows without text")
    return texts


def _classification(batch, cols, tokenizer, maxlength, labels):
    text, pair, label = cols
    pairs = _texts(batch, pair) if pair else None
    encoded = tokenizer(_texts(batch, text), pairs, truncation=True, max_length=maxlength)
    encoded["labels"] = [labels.encode(v) for v in batch[label]]
    return encoded


def _blocks(batch, column, tokenizer, maxlength, merge):
    """Concatenate into ``maxlength`` blocks, pack whole texts into blocks, or truncate each."""
    ids = tokenizer(_texts(batch, column), truncation=merge is None, max_length=maxlength)["input_ids"]
    if merge == "concat":
        flat = [token for text in ids for token in text]
        blocks = [flat[i : i + maxlength] for i in range(0, len(flat), maxlength)]
    elif merge == "pack":
        blocks = []
        for text in (t[:maxlength] for t in ids):
            if blocks and len(blocks[-1]) + len(text) <= maxlength:
                blocks[-1] = blocks[-1] + text
            else:
                blocks.append(list(text))
    else:
        blocks = ids
    return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]}


def _sequences(batch, cols, tokenizer, maxlength, prefix):
    source, target = cols
    inputs = [f"{prefix or ''}{text}" for text in _texts(batch, source)]
    encoded = tokenizer(inputs, truncation=True, max_length=maxlength)
    encoded["labels"] = tokenizer(text_target=_texts(batch, target), truncation=True, max_length=maxlength)["input_ids"]
    return encoded


class AnswerMissing(ValueError):
    """An answer that is not in its context where it says it is."""


def _answer(answer: Any, context: str) -> tuple[int, str] | None:
    """(start character, text) from a SQuAD-style answer dict or a plain answer string; ``None`` when
    the question has no answer (``None``, ``""``, or SQuAD v2's ``{"text": [], "answer_start": []}``).

    Raises `AnswerMissing` when the text is not at that place in ``context``, and
    KeyError / IndexError / TypeError / ValueError for an answer of another shape.
    """
    if answer is None or answer == "":
        return None
    if isinstance(answer, str):
        start, text = context.find(answer), answer
    elif isinstance(answer["text"], str):
        start, text = int(answer["answer_start"]), answer["text"]
    elif len(answer["text"]) == 0 and len(answer["answer_start"]) == 0:
        return None
    else:
        start, text = int(answer["answer_start"][0]), answer["text"][0]
    if not text:
        return None
    if start < 0 or context[start : start + len(text)] != text:
        raise AnswerMissing(f"answer {text!r} is not in its context at character {start}")
    return start, text


def _questions(batch, cols, tokenizer, maxlength, stride, indices=None):
    """Long contexts split into overlapping windows; a window without the answer, and a question
    without one, point at CLS. With ``indices`` (the rows' places in the set) `WINDOW_COLUMNS` too."""
    question, context, answers = cols
    questions = [q.lstrip() for q in _texts(batch, question)]
    contexts = _texts(batch, context)
    right = tokenizer.padding_side == "right"
    try:
        encoded = tokenizer(
            questions if right else contexts,
            contexts if right else questions,
            truncation="only_second" if right else "only_first",
            max_length=maxlength,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
    except ValueError as e:  # a question too long to leave room for a context window
        raise DataError(
            f"column {question!r}: a question leaves no room for {stride} tokens of context stride in "
            f"{maxlength} tokens ({e}); raise maxlength or lower stride"
        ) from None
    sample_of = encoded.pop("overflow_to_sample_mapping")
    side = 1 if right else 0
    starts, ends, positions, spans = [], [], [], []
    for i, offsets in enumerate(encoded.pop("offset_mapping")):
        cls = cls_position(encoded["input_ids"][i], tokenizer)
        sample = sample_of[i]
        sequence = encoded.sequence_ids(i)
        if indices is not None:
            positions.append(cls)
            spans.append([o if s == side else None for o, s in zip(offsets, sequence)])
        try:
            found = _answer(batch[answers][sample], contexts[sample])
        except AnswerMissing as e:
            raise DataError(
                f"column {answers!r}: {e} (question {questions[sample]!r}); fix answer_start or the answer text"
            ) from None
        if found is None:  # no answer: the CLS position, as SQuAD v2 models learn it
            starts.append(cls)
            ends.append(cls)
            continue
        start_char, text = found
        end_char = start_char + len(text)
        first = sequence.index(side)
        last = len(sequence) - 1 - sequence[::-1].index(side)
        if offsets[first][0] > start_char or offsets[last][1] < end_char:
            starts.append(cls)
            ends.append(cls)
            continue
        while first <= last and offsets[first][0] <= start_char:
            first += 1
        while last >= first - 1 and offsets[last][1] >= end_char:
            last -= 1
        starts.append(first - 1)
        ends.append(last + 1)
    encoded["start_positions"], encoded["end_positions"] = starts, ends
    if indices is not None:
        encoded["example"], encoded["cls"], encoded["offsets"] = [indices[s] for s in sample_of], positions, spans
    return encoded


def cls_position(ids: list[int], tokenizer: Any) -> int:
    """Where a question-answering window's CLS token is (its no-answer position): first, or last for
    tokenizers that put it at the end (XLNet)."""
    return ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0


def gold_answers(dataset: Any, spec: Spec) -> tuple[list[str], list[tuple[str, ...]]]:
    """The contexts of a question-answering set and each question's answers as text (``("",)``: none)."""
    _, context, answer = columns(spec)
    contexts, found = list(dataset[context]), []
    for row in dataset[answer]:
        if isinstance(row, dict) and isinstance(row.get("text"), list):
            found.append(tuple(row["text"]) or ("",))
        elif isinstance(row, dict):
            found.append((row.get("text") or "",))
        else:
            found.append((row or "",))
    return contexts, found
