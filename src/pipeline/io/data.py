"""User data in, tokenized `datasets.Dataset` out, per task.

Everything stays in memory: files are parsed here (json, pandas), not through the
datasets cache, so a run without ``output_dir`` writes nothing. Texts are not padded
here; the collators pad each batch to its own longest example.
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.core.frozen import thaw
from pipeline.errors import DataError
from pipeline.core.spec import Spec, source_kind
from pipeline.tasks import TASKS, Labels

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
        if isinstance(source, str):
            rows = _read_beir(Path(source), field)
            rows = _read_file(Path(source), field) if rows is None else rows
        else:
            rows = thaw(source)
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


def _read_beir(path: Path, field: str) -> list[dict[str, Any]] | None:
    """Retrieval data as BEIR gives it: a folder of ``corpus.jsonl`` (``_id``, ``title``, ``text``),
    ``queries.jsonl`` (``_id``, ``text``) and ``qrels/*.tsv`` (query-id, corpus-id, score), read with its
    ``test.tsv`` or its only one, or a qrels file inside it. Rows for the embeddings task: an ``anchor`` (the
    query) and a ``positive`` (a passage judged above 0) for each judged pair, then each passage no query of
    that file asks for with no anchor (searched among, as BEIR does; not for ``train``). ``None`` where ``path``
    is neither."""
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        folder, tables = path, sorted(p.name for p in (path / "qrels").glob("*.tsv"))
        chosen = "test.tsv" if "test.tsv" in tables else tables[0] if len(tables) == 1 else None
        if chosen is None:
            raise DataError(f"{field}: {str(path / 'qrels')!r} holds {', '.join(tables) or 'no .tsv file'} and no "
                            f"test.tsv; give the one to score as {field}, e.g. {field}: "
                            f"{path / 'qrels' / (tables or ['test.tsv'])[0]}")
        qrels = path / "qrels" / chosen
    elif path.suffix == ".tsv" and path.parent.name == "qrels" and (path.parents[1] / "corpus.jsonl").is_file():
        folder, qrels = path.parents[1], path
    else:
        return None
    corpus = {str(row["_id"]): " ".join(t for t in (row.get("title"), row.get("text")) if t)
              for row in _read_file(folder / "corpus.jsonl", field)}
    asked = {str(row["_id"]): row.get("text") for row in _read_file(folder / "queries.jsonl", field)}
    rows, judged = [], set()
    for number, line in enumerate(qrels.read_text().splitlines(), 1):
        values = line.split("\t")
        if number == 1 and values[0] == "query-id" or not line.strip():
            continue
        unknown = ("a line of 3 tab-separated values" if len(values) != 3 else
                   f"query {values[0]!r} in queries.jsonl" if values[0] not in asked else
                   f"passage {values[1]!r} in corpus.jsonl" if values[1] not in corpus else
                   f"a number as its score, not {values[2]!r}" if not _number(values[2]) else None)
        if unknown:
            raise DataError(f"{field}: {str(qrels)!r} line {number} ({line!r}): expected {unknown}; fix the line")
        if float(values[2]) > 0:
            rows.append({"anchor": asked[values[0]], "positive": corpus[values[1]]})
            judged.add(values[1])
    if field == "train":  # pairs to learn from; the passages no query asks for only matter to a search
        return rows
    return rows + [{"anchor": None, "positive": text} for key, text in corpus.items() if key not in judged]


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    return TASKS[spec.task].columns_of(spec.columns)


def problems(dataset: Any, spec: Spec, field: str) -> list[str]:
    """Everything wrong with ``dataset`` for ``spec.task`` that shows without a tokenizer.

    Empty data, missing columns (naming those found), then the task's own checks (rows without
    text, QA answers that are not in their context, ...); each problem names the rows.
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
        fitting = _fitting(dataset, spec, {c: m[0] for c, m in close.items() if m})
        chosen = "{" + ", ".join(f"{role}: {column}" for role, column in fitting.items()) + "}"
        return [
            f"{field}: missing column{'s' if len(missing) > 1 else ''} {missing} for {spec.task} "
            f"(found {dataset.column_names}); {fix}rename the data's columns or set columns: {chosen}"
        ]
    return TASKS[spec.task].check(dataset, columns(spec), field)[:20]


def _fitting(dataset: Any, spec: Spec, close: dict[str, str]) -> dict[str, str]:
    """For each of the task's roles the data's column that fits it: the one named so, a close name, else by
    content (a label: the column with the fewest distinct values; a text: the longest texts), unused ones first."""
    task = TASKS[spec.task]
    found, taken = {}, set()
    sample = dataset.select(range(min(len(dataset), 200)))
    for position, (role, column) in enumerate(zip(task.role_names, columns(spec))):
        if column is None:
            continue
        pick = column if column in dataset.column_names else close.get(column)
        if pick is None:
            free = [c for c in dataset.column_names if c not in taken and c not in columns(spec)]
            if task.read_labels is not None and position == len(task.columns) - 1:
                pick = min(free, key=lambda c: len({repr(v) for v in sample[c]}), default=None)
            else:
                texts = [c for c in free if all(isinstance(v, str) for v in sample[c])]
                pick = max(texts, key=lambda c: sum(len(v) for v in sample[c]), default=None)
        found[role] = pick or column
        taken.add(found[role])
    return found


def labels(read: dict[str, Any], spec: Spec) -> Labels | None:
    """The labels of the task's label column over every split in ``read`` (``None`` where the task has
    none); `DataError` naming the split and row of a label that cannot be read."""
    task = TASKS[spec.task]
    if task.read_labels is None:
        return None
    column = columns(spec)[-1]
    values = [v for dataset in read.values() for v in dataset[column]]
    splits = [(name, len(dataset)) for name, dataset in read.items()]

    def where(i: int) -> str:
        for name, size in splits:
            if i < size:
                return f"{name} row {i + 1}"
            i -= size
        return f"row {i + 1}"

    return task.read_labels(values, f"column {column!r}", where)


def encode(dataset: Any, spec: Spec, tokenizer: Any, maxlength: int, labels: Labels | None = None,
           windows: bool = False) -> Any:
    """Tokenize ``dataset`` for ``spec.task`` (batched ``datasets.map``), unpadded; with ``windows``
    the columns the task's scoring needs too (`Task.scored_columns`)."""
    from datasets.utils import logging as datasets_logging

    task, cols = TASKS[spec.task], columns(spec)
    bars = datasets_logging.is_progress_bar_enabled()
    if not sys.stderr.isatty():  # a log file or a pipe would get every redraw of the bar
        datasets_logging.disable_progress_bar()
    try:
        return dataset.map(
            lambda batch, at: task.encode(batch, cols, tokenizer, maxlength, spec, labels, at if windows else None),
            batched=True,
            with_indices=True,
            num_proc=spec.tokenizers,
            remove_columns=dataset.column_names,
            desc=f"tokenizing for {spec.task}",
        )
    finally:
        if bars:
            datasets_logging.enable_progress_bar()
