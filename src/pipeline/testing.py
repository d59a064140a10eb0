"""Tiny real models and toy data, built offline: for tests, examples and trying things out.

``tiny_models(folder)`` writes small random BERT, Llama (two: one with chat markers), BART and ELECTRA models with
tokenizers trained on the toy corpus; each trains in about a second on a CPU.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

__all__ = ["conversations", "questions", "rerank_rows", "scored_pairs", "search_pairs", "sentences", "sentiment", "truncated", "tiny_models"]

COLORS = ["red", "blue", "green", "black", "white", "yellow"]
THINGS = ["car", "house", "door", "ball", "hat", "boat"]
GOOD = ["good", "great", "excellent", "lovely", "wonderful"]
BAD = ["bad", "awful", "terrible", "horrible", "poor"]


def sentences(n: int, seed: int = 0) -> list[str]:
    """Short, regular sentences that a tiny model learns in a few steps."""
    rnd = random.Random(seed)
    return [
        f"the {rnd.choice(THINGS)} is {rnd.choice(COLORS)} and the {rnd.choice(THINGS)} is {rnd.choice(COLORS)}"
        for _ in range(n)
    ]


CODES = {"red": "vermo", "blue": "azil", "green": "grunt", "black": "nox", "white": "blanq", "yellow": "sulf",
         "orange": "tanj", "purple": "violo"}
"""A made-up word per colour: queries say the code, passages the colour, so a model must learn the mapping."""

ASKED = ["where is the {code} {thing}?", "which room has the {code} {thing}", "looking for the {code} {thing}"]


def search_pairs(held_out: bool = False, asked: int = 3, things: list[str] | None = None) -> list[dict[str, str]]:
    """Query/passage pairs whose wording differs: the query names a colour by its made-up code (`CODES`), the
    passage by the colour.
    Each (colour, thing) is one passage; ``asked`` phrasings of its query each make a pair. A quarter of the
    colour/thing combinations are held out (``held_out``: those; else the rest), so held-out retrieval needs the
    codes learnt from other things."""
    found = []
    for c, (colour, code) in enumerate(CODES.items()):
        for t, thing in enumerate(things or THINGS):
            if ((c + t) % 4 == 0) != held_out:
                continue
            passage = f"The {colour} {thing} is kept in room {10 * c + t}, on the shelf by the window."
            found += [{"anchor": q.format(code=code, thing=thing), "positive": passage} for q in ASKED[:asked]]
    return found


def scored_pairs(held_out: bool = False) -> list[dict[str, Any]]:
    """Scored pairs for graded similarity: "the {code} {thing}" (a colour by its made-up code, `CODES`) against
    "the {colour} {thing}": 1 for the code's colour and the same thing, 0.5 for another colour, 0.2 for the
    code's colour on another thing, 0 for neither. A quarter of the colour/thing combinations are held out."""
    colours, found = list(CODES), []
    for c, (colour, code) in enumerate(CODES.items()):
        for t, thing in enumerate(THINGS):
            if ((c + t) % 4 == 0) != held_out:
                continue
            other, elsewhere = colours[(c + 1 + t) % len(colours)], THINGS[(t + 1 + c) % len(THINGS)]
            first = f"the {code} {thing}"
            found += [{"sentence1": first, "sentence2": f"the {colour} {thing}", "score": 1.0},
                      {"sentence1": first, "sentence2": f"the {other} {thing}", "score": 0.5},
                      {"sentence1": first, "sentence2": f"the {colour} {elsewhere}", "score": 0.2},
                      {"sentence1": first, "sentence2": f"the {other} {elsewhere}", "score": 0.0}]
    return found


ASKED_PLAINLY = ["the {colour} {thing}", "where is the {colour} {thing}?", "which {thing} is {colour}"]


def rerank_rows(held_out: bool = False, asked: int = 3) -> list[dict[str, Any]]:
    """Labelled pairs for a reranker: a query for a thing of a colour with its passage (label 1) and two passages of
    the same thing in other colours (label 0), so only the colour tells them apart. ``asked`` phrasings per query;
    a quarter of the colour/thing combinations are held out (``held_out``: those; else the rest)."""
    colours, found = list(CODES), []
    for c, colour in enumerate(colours):
        for t, thing in enumerate(THINGS):
            if ((c + t) % 4 == 0) != held_out:
                continue
            for query in ASKED_PLAINLY[:asked]:
                query = query.format(colour=colour, thing=thing)
                found.append({"query": query, "passage": f"the {thing} is {colour}", "label": 1})
                found += [{"query": query, "passage": f"the {thing} is {colours[(c + k) % len(colours)]}", "label": 0}
                          for k in (1, 3)]
    return found


def sentiment(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Rows of ``text`` and a string ``label`` (``positive`` / ``negative``)."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rnd.random() < 0.5
        word = rnd.choice(GOOD if positive else BAD)
        rows.append({"text": f"the {rnd.choice(THINGS)} was {word}", "label": "positive" if positive else "negative"})
    return rows


def questions(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """SQuAD-style rows: ``question``, ``context`` and ``answers`` (``text``, ``answer_start``)."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        thing, color = rnd.choice(THINGS), rnd.choice(COLORS)
        filler = " ".join(rnd.choice(THINGS) for _ in range(rnd.randint(0, 6)))
        context = f"{filler} the {thing} is {color} . {filler}".strip()
        answer = {"text": [color], "answer_start": [context.index(f"is {color}") + 3]}
        rows.append({"question": f"what color is the {thing} ?", "context": context, "answers": answer})
    return rows


def tagged_rows(n: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """CoNLL-style rows: a thing and its color (``the car is red``: THING, COLOR) or an item of two
    words (``a red car``: B-ITEM I-ITEM), one to three to a row, so a word's tag depends on its context."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens: list[str] = []
        tags: list[str] = []
        for _ in range(rnd.randint(1, 3)):
            thing, color = rnd.choice(THINGS), rnd.choice(COLORS)
            if tokens:
                tokens, tags = [*tokens, "and"], [*tags, "O"]
            if rnd.random() < 0.5:
                tokens, tags = [*tokens, "the", thing, "is", color], [*tags, "O", "B-THING", "O", "B-COLOR"]
            else:
                tokens, tags = [*tokens, "a", color, thing], [*tags, "O", "B-ITEM", "I-ITEM"]
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def spanned_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`tagged_rows` as a ``text`` and its ``entities``: character spans ``{start, end, label}``."""
    found = []
    for row in tagged_rows(n, seed):
        text, entities = "", []
        for word, tag in zip(row["tokens"], row["tags"]):
            start = len(text) + 1 if text else 0
            text = f"{text} {word}" if text else word
            if tag.startswith("B-"):
                entities.append({"start": start, "end": len(text), "label": tag[2:]})
            elif tag.startswith("I-"):
                entities[-1]["end"] = len(text)
        found.append({"text": text, "entities": entities})
    return found


def conversations(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Chat rows (``messages``): the user says the colors of one or two things and asks for one; the
    assistant answers ``"<color> ."``; with two, a second turn asks for the other (``and the hat ?``). A
    third of them start with a system prompt. The answer is in the conversation: a pattern, not a fact."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        first, second = rnd.sample(THINGS, 2)
        colors = [rnd.choice(COLORS), rnd.choice(COLORS)]
        two = rnd.random() < 0.5
        told = f"the {first} is {colors[0]}" + (f" and the {second} is {colors[1]}" if two else "")
        messages = [{"role": "system", "content": "answer in a few words ."}] if rnd.random() < 1 / 3 else []
        messages += [{"role": "user", "content": f"{told} . what color is the {first} ?"},
                     {"role": "assistant", "content": f"{colors[0]} ."}]
        if two:
            messages += [{"role": "user", "content": f"and the {second} ?"},
                         {"role": "assistant", "content": f"{colors[1]} ."}]
        rows.append({"messages": messages})
    return rows


def _corpus() -> list[str]:
    return (
        sentences(300)
        + [r["text"] for r in sentiment(300)]
        + [f"{r['question']} {r['context']} copy :" for r in questions(100)]
    )


def _wordpiece(path: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=128,
    )
    fast.save_pretrained(path)
    return fast


CHAT_TOKENS = ("<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "[INST]", "[/INST]")
"""The markers of the built-in chat templates, single tokens in the tiny chat model's vocabulary."""


def _bpe(path: Path, *, pad: bool, wrap: bool, chat: bool = False) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    specials = ["<s>", "</s>", "<pad>", "<unk>", "<mask>", *(CHAT_TOKENS if chat else ())]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    talk = [m["content"] for row in conversations(300) for m in row["messages"]] if chat else []
    tok.train_from_iterator(_corpus() + talk, trainer)
    tok.decoder = decoders.ByteLevel()
    if wrap:
        bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>",
        pad_token="<pad>" if pad else None, model_max_length=128, model_input_names=["input_ids", "attention_mask"],
    )
    if chat:
        from pipeline.tasks.chat import TEMPLATES

        fast.chat_template = TEMPLATES["chatml"]
    fast.save_pretrained(path)
    return fast


def tiny_models(folder: str | Path) -> dict[str, str]:
    """Write tiny random models into ``folder``; returns their paths by name.

    ``bert`` (pre-training heads, for classification, masked LM and QA), ``llama``
    (causal LM, a tokenizer without a pad token), ``chat`` (causal LM whose tokenizer has the chat
    templates' markers and a ChatML template), ``bart`` (seq2seq), ``electra``
    (discriminator, with its generator in ``electra/generator``). Hidden size 64: the
    smallest width bitsandbytes 4-bit runs on a CPU.
    """
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        BertConfig,
        BertForPreTraining,
        ElectraConfig,
        ElectraForMaskedLM,
        ElectraForPreTraining,
        LlamaConfig,
        LlamaForCausalLM,
        set_seed,
    )

    set_seed(0)
    root = Path(folder)
    paths = {name: root / name for name in ("bert", "llama", "bart", "electra", "chat")}
    small = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=128
    )
    wordpiece = _wordpiece(paths["bert"])
    BertForPreTraining(BertConfig(vocab_size=len(wordpiece), **small)).save_pretrained(paths["bert"])

    electra = ElectraConfig(vocab_size=len(wordpiece), embedding_size=64, **small)
    for path, model_class in ((paths["electra"], ElectraForPreTraining), (paths["electra"] / "generator", ElectraForMaskedLM)):
        _wordpiece(path)
        model_class(electra).save_pretrained(path)

    causal = _bpe(paths["llama"], pad=False, wrap=False)
    LlamaForCausalLM(
        LlamaConfig(vocab_size=len(causal), bos_token_id=causal.bos_token_id, eos_token_id=causal.eos_token_id, **small)
    ).save_pretrained(paths["llama"])

    chat = _bpe(paths["chat"], pad=True, wrap=False, chat=True)
    LlamaForCausalLM(
        LlamaConfig(vocab_size=len(chat), bos_token_id=chat.bos_token_id, eos_token_id=chat.eos_token_id,
                    pad_token_id=chat.pad_token_id, **small)
    ).save_pretrained(paths["chat"])

    s2s = _bpe(paths["bart"], pad=True, wrap=True)
    ids = dict(pad_token_id=s2s.pad_token_id, bos_token_id=s2s.bos_token_id, eos_token_id=s2s.eos_token_id)
    BartForConditionalGeneration(
        BartConfig(
            vocab_size=len(s2s), d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128,
            decoder_start_token_id=s2s.eos_token_id, forced_eos_token_id=s2s.eos_token_id, **ids,
        )
    ).save_pretrained(paths["bart"])
    return {name: str(path) for name, path in paths.items()}


def truncated(source: str | Path, target: str | Path, layers: int = 1) -> str:
    """A student for distillation: the model in ``source`` cut to its first ``layers`` layers (encoder and
    decoder each), its tokenizer beside it, written to ``target`` (a token-detection ``generator/`` too)."""
    import transformers

    source, target = Path(source), Path(target)
    config = transformers.AutoConfig.from_pretrained(source)
    fewer = {key: layers for key in ("num_hidden_layers", "encoder_layers", "decoder_layers") if hasattr(config, key)}
    model_class = getattr(transformers, config.architectures[0])
    model_class.from_pretrained(source, **fewer).save_pretrained(target)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(target)
    if (source / "generator" / "config.json").is_file():
        truncated(source / "generator", target / "generator", layers)
    return str(target)


def invoke(*args: Any, cwd: str | Path | None = None) -> Any:
    """``pipeline ARGS`` through the CLI's entry point in this process, as a `subprocess.CompletedProcess`
    (returncode, stdout, stderr): what a subprocess gives, without paying the libraries' import (~7 s) per
    command. What a command changes of the process (working folder, environment, logging, warning filters)
    is put back after it."""
    import contextlib
    import io
    import logging
    import os
    import subprocess
    import sys
    import warnings

    from pipeline.cli.app import main

    argv = ["pipeline", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    root, ours = logging.getLogger(), [logging.getLogger(n) for n in ("pipeline", "pipeline.notice")]
    handlers, levels, environ, where = root.handlers[:], [log.level for log in ours], dict(os.environ), os.getcwd()
    code = 0
    try:
        root.handlers = []  # the command sets up its own console handler, on this call's stderr
        os.chdir(cwd or where)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            sys.argv = argv
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    finally:
        root.handlers = handlers
        for log, level in zip(ours, levels):
            log.setLevel(level)
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(where)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
