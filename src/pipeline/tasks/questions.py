"""Question answering: extractive spans in long contexts, read in overlapping windows (``stride``).

Scored with SQuAD's exact match and F1 (v2 when some questions have no answer), written out here:
the reference script is a few lines, and ``evaluate``'s copy of it is fetched from the Hub, which
these runs cannot reach.
"""

from __future__ import annotations

import collections
import copy
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import DataError
from pipeline.tasks.task import Kit, Task, text_problems, texts

__all__ = ["TASK", "Windows", "best_answers", "best_span"]

LONGEST_ANSWER = 30
"""Tokens in the longest answer span considered (SQuAD's reference scripts use 30)."""


@dataclass(frozen=True)
class Windows:
    """What scoring question answering needs besides the logits: per window (in evaluation order)
    its example, its CLS position and each token's character span in the context (``None`` off
    the context); per example its context and its answers (``("",)`` for none)."""

    example: Sequence[int]
    cls: Sequence[int]
    offsets: Sequence[Sequence[Sequence[int] | None]]
    contexts: Sequence[str]
    answers: Sequence[Sequence[str]]


def best_span(start: Any, end: Any, context: Any, cls: int) -> tuple[int, int, float, float]:
    """The likeliest answer in one window: ``(first, last, score, null)``, token positions of the
    best span inside the context (``last - first < LONGEST_ANSWER``), its score (start + end logit)
    and the no-answer score (both at CLS). ``first`` is -1 when the window holds no context."""
    import numpy as np

    start, end, context = np.asarray(start, dtype=float), np.asarray(end, dtype=float), np.asarray(context, dtype=bool)
    null = float(start[cls] + end[cls])
    scores = start[:, None] + end[None, :]
    n = len(start)
    inside = np.triu(np.ones((n, n), dtype=bool)) & ~np.triu(np.ones((n, n), dtype=bool), LONGEST_ANSWER)
    inside &= context[:, None] & context[None, :]
    if not inside.any():
        return -1, -1, -math.inf, null
    scores = np.where(inside, scores, -np.inf)
    first, last = divmod(int(scores.argmax()), n)
    return first, last, float(scores[first, last]), null


def best_answers(starts: Any, ends: Any, windows: Windows) -> list[tuple[str, int, float]]:
    """Per example: its answer (``""`` for none), the window it comes from and its score (start + end
    logit): the best span over its windows, or no answer where CLS scores higher than every span (the
    least no-answer score of its windows, as SQuAD's reference post-processing does)."""
    best: dict[int, tuple[float, int, str]] = {}
    null: dict[int, tuple[float, int]] = {}
    for i, example in enumerate(windows.example):
        offsets = windows.offsets[i]
        n = len(offsets)
        context = [o is not None for o in offsets]
        first, last, score, none = best_span(starts[i][:n], ends[i][:n], context, windows.cls[i])
        if none < null.get(example, (math.inf, -1))[0]:
            null[example] = (none, i)
        if first >= 0 and score > best.get(example, (-math.inf, -1, ""))[0]:
            best[example] = (score, i, windows.contexts[example][offsets[first][0] : offsets[last][1]])
    found = []
    for example in range(len(windows.contexts)):
        score, window, text = best.get(example, (-math.inf, -1, ""))
        none, none_window = null.get(example, (math.inf, -1))
        found.append((text, window, score) if score > none else ("", none_window, none))
    return found


def _squad(prediction: Any, windows: Windows) -> dict[str, float]:
    """SQuAD (v2 when some questions have no answer) exact match and F1 per question, of `best_answers`; where
    both kinds are asked, also split into the questions with an answer and those without (SQuAD v2's HasAns and
    NoAns: a model that never answers scores 1 on the second)."""
    starts, ends = prediction.predictions[:2]
    exact, f1, has = [], [], []
    for (answer, _, _), answers in zip(best_answers(starts, ends, windows), windows.answers):
        exact.append(max(float(_normal(answer) == _normal(a)) for a in answers))
        f1.append(max(_f1(answer, a) for a in answers))
        has.append(any(a for a in answers))
    found = {"exact_match": _mean(exact), "f1": _mean(f1)}
    if any(has) and not all(has):
        found |= {"answerable_exact_match": _mean([e for e, h in zip(exact, has) if h]),
                  "answerable_f1": _mean([f for f, h in zip(f1, has) if h]),
                  "unanswerable_exact_match": _mean([e for e, h in zip(exact, has) if not h])}
    return found


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _normal(text: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _f1(predicted: str, truth: str) -> float:
    """SQuAD's token F1 of two answers; both empty (no answer) is 1."""
    p, t = _normal(predicted).split(), _normal(truth).split()
    if not p or not t:
        return float(p == t)
    common = sum((collections.Counter(p) & collections.Counter(t)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


# -- data ----------------------------------------------------------------------------------------


class AnswerMissing(ValueError):
    """An answer that is not in its context where it says it is."""


def answer(value: Any, context: str) -> tuple[int, str] | None:
    """(start character, text) from a SQuAD-style answer dict or a plain answer string; ``None`` when
    the question has no answer (``None``, ``""``, or SQuAD v2's ``{"text": [], "answer_start": []}``).

    Raises `AnswerMissing` when the text is not at that place in ``context``, and
    KeyError / IndexError / TypeError / ValueError for an answer of another shape.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        start, text = context.find(value), value
    elif isinstance(value["text"], str):
        start, text = int(value["answer_start"]), value["text"]
    elif len(value["text"]) == 0 and len(value["answer_start"]) == 0:
        return None
    else:
        start, text = int(value["answer_start"][0]), value["text"][0]
    if not text:
        return None
    if start < 0 or context[start : start + len(text)] != text:
        raise AnswerMissing(f"answer {text!r} is not in its context at character {start}")
    return start, text


def _check(dataset: Any, columns: tuple[str | None, ...], field: str) -> list[str]:
    question, context, answers = columns
    found = text_problems(dataset, question, field) + text_problems(dataset, context, field)
    if found:
        return found
    for i, (value, text) in enumerate(zip(dataset[answers], dataset[context])):
        try:
            answer(value, text)
        except AnswerMissing as e:
            found.append(f"{field}: column {answers!r}: row {i + 1}: {e}; fix answer_start or the answer text")
        except (KeyError, IndexError, TypeError, ValueError):
            found.append(
                f"{field}: column {answers!r}: row {i + 1} is {value!r}; expected a string, "
                "{'text': [...], 'answer_start': [...]}, or None / \"\" for no answer"
            )
    return found


SCORED = ("example", "cls", "offsets")
"""With ``indices``: each window's example, CLS position and the character span of each context token
(``None`` off the context), to score answers as text."""


def _encode(batch, columns, tokenizer, maxlength, spec, labels, indices=None):
    """Long contexts split into overlapping windows; a window without the answer, and a question
    without one, point at CLS. With ``indices`` (the rows' places in the set) `SCORED` too."""
    question, context, answers = columns
    stride = spec.stride_for(maxlength)
    questions = [q.lstrip() for q in texts(batch, question)]
    contexts = texts(batch, context)
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
            found = answer(batch[answers][sample], contexts[sample])
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
    """Where a window's CLS token is (its no-answer position): first, or last for tokenizers that put it
    at the end (XLNet)."""
    return ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0


def gold_answers(rows: Any, columns: tuple[str | None, ...]) -> tuple[list[str], list[tuple[str, ...]]]:
    """The contexts of a question-answering set and each question's answers as text (``("",)``: none)."""
    _, context, answers = columns
    contexts, found = list(rows[context]), []
    for row in rows[answers]:
        if isinstance(row, dict) and isinstance(row.get("text"), list):
            found.append(tuple(row["text"]) or ("",))
        elif isinstance(row, dict):
            found.append((row.get("text") or "",))
        else:
            found.append((row or "",))
    return contexts, found


def _collate(library: Any, tokenizer: Any, model: Any, seed: int) -> Any:
    if tokenizer.padding_side != "right":
        # Answer positions count from each window's first token: padding goes after it, whatever side
        # the tokenizer pads (left padding shifted every label onto other tokens, or onto [PAD]).
        tokenizer = copy.copy(tokenizer)
        tokenizer.padding_side = "right"
    return library.DataCollatorWithPadding(tokenizer)


def _score(labels: Any, rows: Any, encoded: Any, columns: Any) -> tuple[Any, None]:
    contexts, answers = gold_answers(rows, columns)
    windows = Windows(encoded["example"], encoded["cls"], encoded["offsets"], contexts, answers)
    return (lambda prediction: _squad(prediction, windows)), None


def _distill(student: Any, teacher: Any, inputs: Any, kl: Any, problem: str | None) -> Any:
    return (kl.softmax(student.start_logits, teacher.start_logits) + kl.softmax(student.end_logits, teacher.end_logits)) / 2


def _predict(items: list[Any], kit: Kit) -> list[dict[str, Any]]:
    """Each (question, context) cut into windows as training cut them (its order, length and stride), the
    best span over them as evaluation picks it (`best_answers`), or ``""`` where no answer scores higher;
    its probability within its window."""
    rows = [{"question": question, "context": context, "answers": None} for question, context in items]
    encoded = kit.encode(rows)
    windows = Windows(encoded["example"], encoded["cls"], encoded["offsets"], [r["context"] for r in rows],
                      [("",)] * len(rows))
    starts, ends = [], []
    for output in kit.outputs(encoded, drop=(*SCORED, "start_positions", "end_positions")):
        starts += output.start_logits.float().cpu().tolist()
        ends += output.end_logits.float().cpu().tolist()
    found = []
    for item, (text, window, score) in zip(items, best_answers(starts, ends, windows)):
        n = len(windows.offsets[window])  # the window's own tokens, not the batch's padding
        normal = sum(_logsumexp(logits[window][:n]) for logits in (starts, ends))
        found.append({"input": item, "answer": text, "score": math.exp(score - normal)})
    return found


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


TASK = Task(
    name="question-answering",
    model_class="AutoModelForQuestionAnswering",
    lora_task="QUESTION_ANS",
    collator="DataCollatorWithPadding",
    columns=("question", "context", "answers"),
    column_counts=(3,),
    metrics="exact_match, f1 (SQuAD's, per question over its windows; no answer counts; with unanswerable "
    "questions also split: answerable_exact_match, answerable_f1, unanswerable_exact_match)",
    metric_names=("exact_match", "f1", "answerable_exact_match", "answerable_f1", "unanswerable_exact_match"),
    distillation="KL of softmax(logits/T) over positions, start and end averaged, per window",
    encode=_encode,
    collate=_collate,
    distill=_distill,
    predict=_predict,
    said=lambda p: f"{p['answer'] or '(no answer)'} ({p['score']:.2f})  {p['input'][0]}",  # the question alone
    check=_check,
    score=_score,
    scored_columns=SCORED,
    inputs=2,
    heads=("qa_outputs",),
    lora_exclude=("qa_outputs",),
    fields=frozenset({"stride"}),
    hub_tag="question-answering",
)
