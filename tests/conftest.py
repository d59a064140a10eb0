"""Shared test set-up: offline, quiet, deterministic; tiny real models built once per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import random  # noqa: E402

import pytest  # noqa: E402

COLORS = ["red", "blue", "green", "black", "white", "yellow"]
THINGS = ["car", "house", "door", "ball", "hat", "boat"]
GOOD = ["good", "great", "excellent", "lovely", "wonderful"]
BAD = ["bad", "awful", "terrible", "horrible", "poor"]


def sentences(n, seed=0):
    """Short, regular English-like sentences: learnable by a tiny model in a few steps."""
    rnd = random.Random(seed)
    return [f"the {rnd.choice(THINGS)} is {rnd.choice(COLORS)} and the {rnd.choice(THINGS)} is {rnd.choice(COLORS)}"
            for _ in range(n)]


def sentiment(n, seed=0):
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rnd.random() < 0.5
        word = rnd.choice(GOOD if positive else BAD)
        rows.append({"text": f"the {rnd.choice(THINGS)} was {word}", "label": "positive" if positive else "negative"})
    return rows


def questions(n, seed=0):
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        thing, color = rnd.choice(THINGS), rnd.choice(COLORS)
        filler = " ".join(rnd.choice(THINGS) for _ in range(rnd.randint(0, 6)))
        context = f"{filler} the {thing} is {color} . {filler}".strip()
        rows.append({"question": f"what color is the {thing} ?", "context": context,
                     "answers": {"text": [color], "answer_start": [context.index(f"is {color}") + 3]}})
    return rows


CORPUS = sentences(300) + [r["text"] for r in sentiment(300)] + [r["question"] + " " + r["context"] for r in questions(100)]


def _wordpiece(path):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    fast.save_pretrained(path)
    return fast


def _bpe(path, *, pad, post=None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    specials = ["<s>", "</s>", "<pad>", "<unk>", "<mask>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.decoder = decoders.ByteLevel()
    if post:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))]
        )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   mask_token="<mask>", pad_token="<pad>" if pad else None, model_max_length=128,
                                   model_input_names=["input_ids", "attention_mask"])
    fast.save_pretrained(path)
    return fast


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Folders of tiny random models with their tokenizers: bert, llama, bart, electra (+ generator)."""
    from transformers import (BartConfig, BartForConditionalGeneration, BertConfig, BertForPreTraining, ElectraConfig,
                              ElectraForMaskedLM, ElectraForPreTraining, LlamaConfig, LlamaForCausalLM, set_seed)

    set_seed(0)
    root = tmp_path_factory.mktemp("models")
    paths = {name: root / name for name in ("bert", "llama", "bart", "electra")}
    wp = _wordpiece(paths["bert"])
    _wordpiece(paths["electra"])
    _wordpiece(paths["electra"] / "generator")
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                 max_position_embeddings=128)
    BertForPreTraining(BertConfig(vocab_size=len(wp), **small)).save_pretrained(paths["bert"])
    electra = ElectraConfig(vocab_size=len(wp), embedding_size=64, **small)
    ElectraForPreTraining(electra).save_pretrained(paths["electra"])
    ElectraForMaskedLM(electra).save_pretrained(paths["electra"] / "generator")

    lm = _bpe(paths["llama"], pad=False)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(lm), bos_token_id=lm.bos_token_id, eos_token_id=lm.eos_token_id,
                                 **small)).save_pretrained(paths["llama"])
    s2s = _bpe(paths["bart"], pad=True, post=True)
    BartForConditionalGeneration(BartConfig(
        vocab_size=len(s2s), d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128,
        pad_token_id=s2s.pad_token_id, bos_token_id=s2s.bos_token_id, eos_token_id=s2s.eos_token_id,
        decoder_start_token_id=s2s.eos_token_id, forced_eos_token_id=s2s.eos_token_id,
    )).save_pretrained(paths["bart"])
    return {name: str(path) for name, path in paths.items()}
