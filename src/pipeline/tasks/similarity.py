"""Similarity: a sentence-embedding model learns graded similarity from scored pairs (``sentence1``,
``sentence2``, ``score`` from 0 to 1, as STS benchmarks give them), trained through sentence-transformers with
the CoSENT loss: for every two pairs of a batch whose scores differ, the higher-scored pair's cosine should be the
higher one. Evaluation is the Spearman (and Pearson) correlation of the cosines with the scores. The model, its
saves and its predictions are the embeddings task's.
"""

from __future__ import annotations

from typing import Any

from pipeline.tasks.embeddings import pooling_rows, predict_embeddings, said_embeddings
from pipeline.tasks.task import Sentences, Task, rows, text_problems, texts, unit


def _encode(batch, columns, tokenizer, maxlength, spec, labels, indices):
    first, second, score = columns
    return {"sentence1": texts(batch, first), "sentence2": texts(batch, second),
            "score": [float(v) for v in batch[score]]}


def _check(dataset: Any, columns: tuple[str | None, ...], field: str) -> list[str]:
    first, second, score = columns
    problems = text_problems(dataset, first, field) + text_problems(dataset, second, field)
    values = dataset[score]
    bad = [i for i, v in enumerate(values) if not unit(v)]
    if bad:
        problems.append(f"{field}: column {score!r}: {rows(bad)} not a similarity between 0 and 1 (got {values[bad[0]]!r}); "
                        "scale the scores to 0..1 (an STS score of 0-5: divide by 5)")
    return problems


def summary(encoded: Any, field: str) -> tuple[list[str], list[str]]:
    """The pairs and their scores' spread: CoSENT learns from pairs whose scores differ within a batch."""
    scores = encoded["score"]
    distinct = len(set(scores))
    note = f"{field}: {len(scores)} scored pairs, {distinct} distinct scores from {min(scores):g} to {max(scores):g}"
    problems = [f"{field}: every pair has the score {scores[0]:g}: CoSENT learns from pairs that score differently; "
                "give graded scores"] if distinct == 1 and field == "train" else []
    return [note], problems


def _evaluator(library: Any, dataset: Any, columns: tuple[str | None, ...]) -> Any:
    first, second, score = columns
    evaluation = library.sentence_transformers.sentence_transformer.evaluation
    return evaluation.EmbeddingSimilarityEvaluator(list(dataset[first]), list(dataset[second]),
                                                   [float(v) for v in dataset[score]], name="", write_csv=False,
                                                   similarity_fn_names=["cosine"], show_progress_bar=False)


def _loss(library: Any, model: Any, spec: Any, processes: int, objective: Any) -> Any:
    return library.sentence_transformers.sentence_transformer.losses.CoSENTLoss(model, scale=spec.scale)


def section(spec: Any, batch: int, accumulation: int, processes: int, columns: tuple[str | None, ...]
            ) -> tuple[dict[str, Any], dict[str, str]]:
    """The plan's ``objective`` section: the loss and its scale (pure)."""
    pooled, why = pooling_rows(spec)
    return ({"loss": "CoSENTLoss", "scale": spec.scale} | pooled,
            {"loss": f"each two of a batch's {batch} pairs whose scores differ: the higher-scored pair's cosine should "
                     "be the higher (a ranking of pairs, not a regression to the scores)",
             "scale": f"cosine differences x {spec.scale:g} inside the loss's log-sum-exp"} | why)


TASK = Task(
    name="similarity",
    model_class="SentenceTransformer",
    lora_task="FEATURE_EXTRACTION",
    collator="SentenceTransformerDataCollator (each text column tokenized, padded to its batch's longest)",
    columns=("sentence1", "sentence2", "score"),
    column_counts=(3,),
    metrics="spearman_cosine, pearson_cosine (the cosines against the scores)",
    metric_names=("spearman_cosine", "pearson_cosine"),
    distillation="not supported yet",
    encode=_encode,
    predict=predict_embeddings,
    said=said_embeddings,
    check=_check,
    summary=summary,
    fields=frozenset({"scale", "pooling", "normalize"}),
    hub_tag="sentence-similarity",
    lora_exclude=("pooler.dense",),  # BERT's pooler: sentence-transformers pools the token embeddings instead
    sentences=Sentences(
        loss=_loss,
        evaluator=_evaluator,
        section=section,
        forward=lambda spec, batch, columns: 2 * batch,
    ),
)
