"""Embeddings: a sentence-embedding model (bi-encoder) learns to place each anchor (a query) nearest its
positive (the passage it asks for), trained through sentence-transformers.

The loss is in-batch negatives ranking (`MultipleNegativesRankingLoss`): each anchor is scored against its own
positive and every other positive in the batch (and every negative, where a negative column is given), and
learns to pick its own. So what an anchor learns from is the batch: the plan's ``objective`` section counts
the candidates each anchor is scored against, and says how duplicates are kept out of a batch (a text that
is twice in one batch would be a false negative for its own anchor).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from pipeline.errors import DataError
from pipeline.tasks.task import Kit, Sentences, Task, rows, text_problems, texts

ROLES = ("anchor", "positive", "negative")

SCALE_REASON = "cosine similarities x {scale:g} before the softmax (a temperature of {temperature:.3g})"

RANKED = 10
"""Corpus entries `predict` returns per query."""


def _given(columns: tuple[str | None, ...]) -> list[tuple[str, str]]:
    """(role, column) of the columns a spec gives."""
    return [(role, column) for role, column in zip(ROLES, columns) if column is not None]


def _texts(spec: Any, columns: tuple[str | None, ...]) -> int:
    """Texts per training row: the columns given, and a mined negative (``mine``: each row becomes a triplet)."""
    return len(_given(columns)) + (1 if spec.mine else 0)


def _encode(batch, columns, tokenizer, maxlength, spec, labels, indices):
    """The texts as they are, one column per role: sentence-transformers' collator tokenizes each batch (to the
    model's ``max_seq_length``, which the stages set to ``maxlength``). Held-out rows without an anchor (passages
    only searched among) are not pairs: they are left out of the loss."""
    asked = [i for i, anchor in enumerate(batch[columns[0]]) if anchor is not None]
    pairs = {column: [batch[column][i] for i in asked] for _, column in _given(columns)}
    return {role: texts(pairs, column) for role, column in _given(columns)}


def _check(dataset: Any, columns: tuple[str | None, ...], field: str) -> list[str]:
    given, held_out = _given(columns), field != "train"
    if held_out and all(value is None for value in dataset[given[0][1]]):
        return [f"{field}: column {given[0][1]!r} has no anchor in any row; a held-out row without one is a passage "
                "only searched among, so give at least one query with its positive"]
    # held out, a row without an anchor is a passage of the corpus that no query asks for
    return [problem for role, column in given
            for problem in text_problems(dataset, column, field, f"{role} text", optional=held_out and role == "anchor")]


def summary(encoded: Any, field: str) -> tuple[list[str], list[str]]:
    """The pairs, and the rows that repeat a text of another row: in one batch such a text is a false negative
    (another anchor's positive counted wrong), which the no-duplicates batch sampler avoids."""
    roles = [role for role in ROLES if role in encoded.column_names]
    columns = [encoded[role] for role in roles]
    texts_of = [set(row) for row in zip(*columns)]
    seen = Counter(text for row in texts_of for text in row)  # rows each text is in
    repeated = [i for i, row in enumerate(texts_of) if any(seen[text] > 1 for text in row)]
    negatives = " with a negative each" if "negative" in roles else ""
    note = f"{field}: {len(encoded)} pairs{negatives}"
    if repeated:
        note += (f"; {len(repeated)} share a text with another row ({rows(repeated)}): in one batch it would be a "
                 "false negative, so the no-duplicates batch sampler puts them in different batches")
    return [note], []


def queries(dataset: Any, columns: tuple[str | None, ...]) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """Retrieval data from pairs: each distinct anchor a query, every distinct positive and negative text the
    corpus, each anchor's positives the relevant documents (ids are the texts' first places, as text). A row
    without an anchor adds its passages to the corpus only (one no query asks for, as BEIR's corpora have)."""
    given = dict(_given(columns))
    anchors, positives = dataset[given["anchor"]], dataset[given["positive"]]
    corpus_texts = list(positives) + (list(dataset[given["negative"]]) if "negative" in given else [])
    ids: dict[str, str] = {}
    for text in corpus_texts:
        ids.setdefault(text, f"d{len(ids)}")
    found: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for anchor, positive in zip(anchors, positives):
        if anchor is None:
            continue
        query = found.setdefault(anchor, f"q{len(found)}")
        relevant.setdefault(query, set()).add(ids[positive])
    return {q: a for a, q in found.items()}, {d: t for t, d in ids.items()}, relevant


def _evaluator(library: Any, dataset: Any, columns: tuple[str | None, ...]) -> Any:
    found, corpus, relevant = queries(dataset, columns)
    return library.sentence_transformers.sentence_transformer.evaluation.InformationRetrievalEvaluator(
        found, corpus, relevant, mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[1, 10],
        map_at_k=[10], name="", write_csv=False, score_functions={"cosine": library.sentence_transformers.util.cos_sim},
        show_progress_bar=False,
    )


def _loss(library: Any, model: Any, spec: Any, processes: int, objective: Mapping[str, Any]) -> Any:
    """The plan's loss (``objective``: its section, which may have chosen the cached form for memory)."""
    losses = library.sentence_transformers.sentence_transformer.losses
    if objective["loss"] == "CachedMultipleNegativesRankingLoss":
        ranking = losses.CachedMultipleNegativesRankingLoss(model, scale=spec.scale, mini_batch_size=CACHED_MINI_BATCH,
                                                            gather_across_devices=processes > 1)
    else:
        ranking = losses.MultipleNegativesRankingLoss(model, scale=spec.scale, gather_across_devices=processes > 1)
    if spec.teacher is None:
        return ranking
    alpha = spec.distillation[1]
    if objective["distilled"] == "margin-MSE":
        margin = losses.MarginMSELoss(model, similarity_fct=library.sentence_transformers.util.pairwise_cos_sim)
        return library.Weighted(model, {"ranking": (1 - alpha, ranking), "margin_mse": (alpha, margin)})
    return library.Weighted(model, {"ranking": (1 - alpha, ranking), "embedding_mse": (alpha, library.Matched(model))})


def margins(teacher: Any, encoded: Any) -> list[float]:
    """The teacher's score of each row's positive minus its negative for the anchor: a cross-encoder's scores
    (its activation's, 0 to 1), or a bi-encoder's cosine similarities."""
    anchors, positives, negatives = encoded["anchor"], encoded["positive"], encoded["negative"]
    if type(teacher).__name__ == "CrossEncoder":
        good = teacher.predict(list(zip(anchors, positives)), convert_to_tensor=True, show_progress_bar=False)
        bad = teacher.predict(list(zip(anchors, negatives)), convert_to_tensor=True, show_progress_bar=False)
        return (good - bad).float().tolist()
    a, p, n = (teacher.encode(list(texts_), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
               for texts_ in (anchors, positives, negatives))
    return ((a * p).sum(-1) - (a * n).sum(-1)).float().tolist()


def embeddings_of(teacher: Any, encoded: Any) -> list[list[list[float]]]:
    """The teacher's embedding of each text of each row (rows x columns x width), as its model gives them."""
    roles = [role for role in ROLES if role in encoded.column_names]
    found = [teacher.encode(list(encoded[role]), convert_to_tensor=True, show_progress_bar=False) for role in roles]
    return [[found[c][i].float().tolist() for c in range(len(roles))] for i in range(len(encoded))]


def _distill(library: Any, teacher: Any, student: Any, encoded: Any, spec: Any) -> Any:
    """The rows with the teacher's targets as their ``label``: with a negative, its score margin (margin-MSE); else
    its embeddings of the row's texts (embedding MSE), for which the teacher must be a bi-encoder of the student's
    width."""
    if "negative" in encoded.column_names:
        return encoded.add_column("label", margins(teacher, encoded))
    if type(teacher).__name__ == "CrossEncoder":
        raise DataError(f"teacher: a cross-encoder scores pairs, and {spec.task}'s rows have no negative to score "
                        "against the positive; give a negative column (margin-MSE), or a bi-encoder teacher")
    width, ours = teacher.get_sentence_embedding_dimension(), student.get_sentence_embedding_dimension()
    if width != ours:
        raise DataError(f"teacher: its embeddings have {width} dimensions and the student's {ours}; embedding MSE "
                        "needs one width: give a negative column (margin-MSE compares scores, any width), or a "
                        "teacher of the student's width")
    return encoded.add_column("label", embeddings_of(teacher, encoded))


CACHED_MINI_BATCH = 32
"""The cached loss's forward batch (its memory), whatever the batch the anchors are scored in."""


def _mini_batch(spec: Any, batch: int, columns: tuple[str | None, ...]) -> int:
    """The texts the cached loss embeds at once: a mini-batch, or the whole batch's texts where fewer."""
    return min(batch * _texts(spec, columns), CACHED_MINI_BATCH)


MARGIN = 0.05
"""Mined negatives score at most this much below the positive, relatively (a near-paraphrase is no negative)."""


def _mine(library: Any, model: Any, encoded: Any, spec: Any) -> Any:
    """``spec.mine`` hard negatives per pair from the training passages, by ``model`` (before it trains): each pair
    becomes that many (anchor, positive, negative) rows; anchors without enough candidates keep fewer."""
    return library.sentence_transformers.util.mine_hard_negatives(
        encoded, model, anchor_column_name="anchor", positive_column_name="positive", num_negatives=spec.mine,
        relative_margin=MARGIN, sampling_strategy="top", output_format="triplet", verbose=False)


def pooling_rows(spec: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The plan's rows for the spec's ``pooling`` and ``normalize``, where it sets them (else the model's own)."""
    values = {key: getattr(spec, key) for key in ("pooling", "normalize") if getattr(spec, key) is not None}
    reasons = {"pooling": "one vector per text from its token embeddings, in place of the model's own pooling",
               "normalize": "vectors scaled to length 1" if spec.normalize else "vectors left at their length"}
    return values, {key: reasons[key] for key in values}


def section(spec: Any, batch: int, accumulation: int, processes: int, columns: tuple[str | None, ...]
            ) -> tuple[dict[str, Any], dict[str, str]]:
    """The plan's ``objective`` section: the loss, its scale, the candidates each anchor is scored against, the
    batch sampler and the mined negatives, each with why (pure)."""
    negatives = _texts(spec, columns) - 2  # beside the anchor and its positive
    loss = spec.loss or "in-batch"
    gathered = processes if processes > 1 else 1
    candidates = batch * gathered * (1 + negatives)
    parts = [f"its positive and the other {batch - 1} of its batch's {batch} positives"]
    if negatives:
        parts.append(f"the batch's {batch} negatives")
    why = " and ".join(parts)
    if gathered > 1:
        why += f", gathered from all {processes} processes (x{processes})"
    if accumulation > 1:
        why += (f"; gradient accumulation ({accumulation} steps) adds none: each step's batch is scored on its own "
                "(loss: cached scores a larger batch in the same memory)")
    values = {
        "loss": "CachedMultipleNegativesRankingLoss" if loss == "cached" else "MultipleNegativesRankingLoss",
        "scale": spec.scale,
        "candidates": candidates,
        "batch_sampler": "no_duplicates",
    }
    reasons = {
        "loss": (f"in-batch negatives, the batch embedded in mini-batches of {CACHED_MINI_BATCH} (GradCache): the "
                 "memory of the mini-batch, the negatives of the whole batch") if loss == "cached"
        else "in-batch negatives: each anchor picks its positive among the batch's",
        "scale": SCALE_REASON.format(scale=spec.scale, temperature=1 / spec.scale),
        "candidates": f"per anchor: {why}",
        "batch_sampler": "a text twice in one batch would be a false negative: such rows go to different batches",
    }
    if spec.teacher is not None:
        values["distilled"] = "margin-MSE" if negatives else "embedding MSE"
        reasons["distilled"] = ("the teacher's positive-minus-negative score per row" if negatives else
                                "no negative: each text's embedding against the teacher's (a bi-encoder of the "
                                "student's width)")
    if spec.mine:
        values["mine"] = spec.mine
        reasons["mine"] = (f"hard negatives per pair, mined with the base model before training from the training "
                           f"passages (not its positive, scored at most {1 - MARGIN:.0%} of it): each pair becomes "
                           f"{spec.mine} (anchor, positive, negative) rows, written to the run folder (mined-train.jsonl)")
    pooled, why = pooling_rows(spec)
    values, reasons = values | pooled, reasons | why
    if gathered > 1:
        values["gather"] = True
        reasons["gather"] = f"{processes} processes: each anchor is scored against every process's batch"
    return values, reasons


def predict_embeddings(items: list[Any], kit: Kit) -> list[dict[str, Any]]:
    """Each input's embedding; with a corpus, the corpus ranked for it by cosine similarity (the best `RANKED`)."""
    queries_ = kit.model.encode(list(items), convert_to_tensor=True, normalize_embeddings=True)
    if not kit.corpus:
        return [{"input": item, "embedding": [round(float(v), 6) for v in vector]}
                for item, vector in zip(items, queries_)]
    corpus = list(kit.corpus)
    documents = kit.model.encode(corpus, convert_to_tensor=True, normalize_embeddings=True)
    scores = queries_ @ documents.T
    top = scores.topk(min(RANKED, len(corpus)), dim=1)
    return [{"input": item, "ranked": [{"text": corpus[int(i)], "score": round(float(s), 4)} for s, i in zip(values, at)]}
            for item, values, at in zip(items, top.values, top.indices)]


def said_embeddings(prediction: Mapping[str, Any]) -> str:
    if "ranked" not in prediction:
        vector = prediction["embedding"]
        return f"{prediction['input']}  ->  [{', '.join(f'{v:.3f}' for v in vector[:4])}, ...] ({len(vector)} dims)"
    best = "; ".join(f"{r['score']:.3f} {r['text'][:60]}" for r in prediction["ranked"][:3])
    return f"{prediction['input']}  ->  {best}"


TASK = Task(
    name="embeddings",
    model_class="SentenceTransformer",
    lora_task="FEATURE_EXTRACTION",
    collator="SentenceTransformerDataCollator (each text column tokenized, padded to its batch's longest)",
    columns=("anchor", "positive", None),
    column_counts=(2, 3),
    metrics="retrieval, each anchor against every positive: cosine_ndcg@10, cosine_mrr@10, cosine_recall@10 (with "
            "map@10, accuracy@1, precision@1 and @10, recall@1)",
    metric_names=("cosine_ndcg@10", "cosine_mrr@10", "cosine_recall@10", "cosine_map@10", "cosine_accuracy@1",
                  "cosine_precision@1", "cosine_precision@10", "cosine_recall@1"),
    distillation=("margin-MSE where rows have a negative: the student's cosine margin sim(anchor, positive) - "
                  "sim(anchor, negative) against the teacher's (a cross-encoder's scores or a bi-encoder's cosines); "
                  "else embedding MSE: each text's embedding against a bi-encoder teacher's of the same width"),
    encode=_encode,
    predict=predict_embeddings,
    said=said_embeddings,
    check=_check,
    summary=summary,
    roles=ROLES,
    fields=frozenset({"loss", "scale", "mine", "pooling", "normalize"}),
    lora_exclude=("pooler.dense",),  # BERT's pooler: sentence-transformers pools the token embeddings instead
    hub_tag="sentence-similarity",
    sentences=Sentences(
        loss=_loss,
        evaluator=_evaluator,
        mine=_mine,
        distill=_distill,
        section=section,
        losses=("in-batch", "cached"),
        forward=lambda spec, batch, columns: (
            _mini_batch(spec, batch, columns) if spec.loss == "cached" else batch * _texts(spec, columns)),
        cached=lambda spec, batch, columns: _mini_batch(spec, batch, columns) if spec.loss != "cached" else None,
    ),
)
