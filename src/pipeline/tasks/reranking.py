"""Reranking: a cross-encoder reads a query and a passage together and scores how well the passage answers it
(the second stage of a search: it reorders the candidates an embeddings index found), trained through
sentence-transformers on labelled pairs: 1 for a relevant passage, 0 for one that is not (or a grade between),
with binary cross-entropy on each pair; or, with ``loss: listwise``, on rows of a query, a list of its passages and
a list of their labels, with LambdaLoss over each list (it learns the order within a query's list).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pipeline.errors import DataError, SpecError
from pipeline.tasks.task import Kit, Sentences, Task, rows, text_problems, texts, unit

RELEVANT = 0.5
"""A label at or above this is a relevant passage (what the evaluator ranks for)."""

RANKED = 10


def _listed(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _encode(batch, columns, tokenizer, maxlength, spec, labels, indices):
    """The texts as they are (the library's collator tokenizes each pair together) and the labels as numbers: one
    per row, or a list per row (``loss: listwise``)."""
    query, passage, label = columns
    listwise = spec.loss == "listwise"
    if any(_listed(p) != listwise for p in batch[passage]):
        raise DataError(f"column {passage!r}: {'loss: listwise reads a list of passages per row' if listwise else 'a list of passages per row needs loss: listwise'}"
                        f" (got {batch[passage][0]!r}); {'give lists' if listwise else 'set loss: listwise, or one passage per row'}")
    found = [[float(v) for v in value] for value in batch[label]] if listwise else [float(v) for v in batch[label]]
    return {"query": texts(batch, query), "passage": batch[passage] if listwise else texts(batch, passage), "label": found}


def _check(dataset: Any, columns: tuple[str | None, ...], field: str) -> list[str]:
    query, passage, label = columns
    passages, values = dataset[passage], dataset[label]
    problems = text_problems(dataset, query, field, "query")
    if not any(_listed(p) for p in passages):
        problems += text_problems(dataset, passage, field, "passage")
        bad = [i for i, v in enumerate(values) if not unit(v)]
    else:  # listwise rows: a list of passages and as many labels
        unlisted = [i for i, (p, v) in enumerate(zip(passages, values)) if not _listed(p) or not _listed(v)
                    or len(p) != len(v) or not p or not all(isinstance(t, str) and t.strip() for t in p)]
        if unlisted:
            problems.append(f"{field}: columns {passage!r} and {label!r}: {rows(unlisted)} not a list of passages with as "
                            f"many labels (got {passages[unlisted[0]]!r}, {values[unlisted[0]]!r}); give both as lists")
        skipped = set(unlisted)  # a membership test per row: a list made this quadratic in the rows
        bad = [i for i, v in enumerate(values) if i not in skipped and not all(unit(x) for x in v)]
    if bad:
        problems.append(f"{field}: column {label!r}: {rows(bad)} not a relevance between 0 and 1 (got {values[bad[0]]!r}); "
                        "give 1 for a relevant passage, 0 for one that is not")
    return problems


def _pairs(dataset: Any, columns: tuple[str | None, ...]) -> list[tuple[str, str, float]]:
    """(query, passage, label) of every pair, a listwise row's lists spread out."""
    query, passage, label = columns
    found = []
    for q, p, value in zip(dataset[query], dataset[passage], dataset[label]):
        found += list(zip([q] * len(p), p, value)) if _listed(p) else [(q, p, value)]
    return found


def groups(dataset: Any, columns: tuple[str | None, ...]) -> list[dict[str, Any]]:
    """Each distinct query with its passages (``documents``) and the relevant ones among them (``positive``), in
    first-seen order: what the reranking evaluator scores."""
    found: dict[str, dict[str, Any]] = {}
    for q, p, value in _pairs(dataset, columns):
        group = found.setdefault(q, {"query": q, "positive": [], "documents": []})
        if p not in group["documents"]:
            group["documents"].append(p)
        if value >= RELEVANT and p not in group["positive"]:
            group["positive"].append(p)
    return list(found.values())


def summary(encoded: Any, field: str) -> tuple[list[str], list[str]]:
    """The pairs, queries and relevant share; a query without a relevant passage ranks nothing (said)."""
    pairs = _pairs(encoded, ("query", "passage", "label"))
    labels = [value for _, _, value in pairs]
    found = groups(encoded, ("query", "passage", "label"))
    relevant = sum(1 for v in labels if v >= RELEVANT)
    note = (f"{field}: {len(labels)} pairs over {len(found)} queries, {relevant} relevant ({relevant / max(len(labels), 1):.0%})")
    empty = sum(1 for group in found if not group["positive"])
    if empty:
        note += f"; {empty} queries have no relevant passage (they teach what is not relevant, and score nothing)"
    return [note], []


def _evaluator(library: Any, dataset: Any, columns: tuple[str | None, ...]) -> Any:
    evaluation = library.sentence_transformers.cross_encoder.evaluation
    # Each query's positives and negatives, not its "documents": the evaluator reads documents as a first-stage
    # ranking and adds eval_base_* metrics of their order, which here is only the data file's row order.
    samples = [{"query": g["query"], "positive": g["positive"],
                "negative": [d for d in g["documents"] if d not in g["positive"]]}
               for g in groups(dataset, columns) if g["positive"]]
    return evaluation.CrossEncoderRerankingEvaluator(samples, at_k=10, name="", write_csv=False, show_progress_bar=False)


def _loss(library: Any, model: Any, spec: Any, processes: int, objective: Mapping[str, Any]) -> Any:
    losses = library.sentence_transformers.cross_encoder.losses
    return losses.LambdaLoss(model) if objective["loss"] == "LambdaLoss" else losses.BinaryCrossEntropyLoss(model)


def section(spec: Any, batch: int, accumulation: int, processes: int, columns: tuple[str | None, ...]
            ) -> tuple[dict[str, Any], dict[str, str]]:
    """The plan's ``objective`` section: the loss and what it scores (pure)."""
    listwise = spec.loss == "listwise"
    return ({"loss": "LambdaLoss" if listwise else "BinaryCrossEntropyLoss", "relevant": f"label >= {RELEVANT}"},
            {"loss": "each row's list of passages ordered against its labels (NDCG-weighted, NDCGLoss2++)" if listwise
             else "each (query, passage) pair scored on its own, its label the target (1 relevant, 0 not)",
             "relevant": "what evaluation ranks for: each query's passages ordered by score (NDCG@10, MRR@10, MAP)"})


def _predict(items: list[Any], kit: Kit) -> list[dict[str, Any]]:
    """A query's corpus ranked by the model's score (the best `RANKED`), or a (query, passage) pair's score."""
    if all(isinstance(item, (list, tuple)) and len(item) == 2 for item in items):
        scores = kit.model.predict([tuple(item) for item in items], show_progress_bar=False)
        return [{"input": list(item), "score": round(float(s), 4)} for item, s in zip(items, scores)]
    if not kit.corpus:
        raise SpecError("predict: reranking scores passages for a query: give the passages (--file FILE, corpus=[...]) "
                        "or (query, passage) pairs")
    corpus = list(kit.corpus)
    found = []
    for item in items:
        ranked = kit.model.rank(item, corpus, top_k=RANKED, show_progress_bar=False)
        found.append({"input": item, "ranked": [{"text": corpus[r["corpus_id"]], "score": round(float(r["score"]), 4)}
                                                for r in ranked]})
    return found


def _said(prediction: Mapping[str, Any]) -> str:
    if "ranked" not in prediction:
        return f"{' | '.join(prediction['input'])}  ->  {prediction['score']:.3f}"
    best = "; ".join(f"{r['score']:.3f} {r['text'][:60]}" for r in prediction["ranked"][:3])
    return f"{prediction['input']}  ->  {best}"


TASK = Task(
    name="reranking",
    model_class="CrossEncoder",
    lora_task="SEQ_CLS",
    collator="CrossEncoderDataCollator (each query and passage tokenized together, padded to its batch's longest)",
    columns=("query", "passage", "label"),
    column_counts=(3,),
    metrics="reranking, each query's passages ordered by score: ndcg@10, mrr@10, map",
    metric_names=("ndcg@10", "mrr@10", "map"),
    distillation="not supported yet",
    encode=_encode,
    predict=_predict,
    said=_said,
    check=_check,
    summary=summary,
    hub_tag="text-ranking",
    inputs=2,
    lora_exclude=("classifier", "score"),  # the new head, trained in full by peft's SEQ_CLS
    fields=frozenset({"loss"}),
    sentences=Sentences(
        trainer="CrossEncoderTrainer",
        backbone="AutoModelForSequenceClassification",
        options=MappingProxyType({"num_labels": 1}),
        loss=_loss,
        evaluator=_evaluator,
        section=section,
        forward=lambda spec, batch, columns: batch,
        losses=("pointwise", "listwise"),
    ),
)
