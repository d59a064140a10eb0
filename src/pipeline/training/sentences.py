"""Tasks trained through sentence-transformers (`Task.sentences`): its model, trainer, loss and evaluators,
with what the stages add to every run (resume records, the plan's arguments) and what that library leaves to
us with an adapter inside (peft 0.21 is older than its own adapter support wants).

- **The model**: ``SentenceTransformer(base)`` (its pooling and normalization from the folder's modules, mean
  pooling for a plain transformers model); LoRA wraps the transformer inside it (`stages.adapt`).
- **Saving**: the run folder loads with plain ``SentenceTransformer(folder)`` (and txtai): the adapter merged
  into a copy of the model, saved whole, and the adapter itself in ``adapter/`` (loads onto the base with peft).
  Saved as it is, the library would write the adapter-wrapped weights under names a plain model does not read
  (it loads random weights and says so in a warning).
- **Checkpoints** of an adapter-wrapped model (the library saves the adapter alone) reload into it with peft
  (`Trainer._load_from_checkpoint`): the library's own reload builds a model through transformers' adapter
  support, which refuses this peft.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch

from pipeline.training.hush import hushed
from pipeline.training.trainer import Records

with hushed():
    import sentence_transformers
    from sentence_transformers import (CrossEncoderTrainer, CrossEncoderTrainingArguments, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.base.model import BaseModel

__all__ = ["TRAINERS", "Saved", "load"]


class _Saving:
    """Our arguments' change, mixed into each of the library's: ``should_save`` is False when ``output_dir`` is
    empty (a transient model)."""

    @property
    def should_save(self) -> bool:
        return bool(self.output_dir) and super().should_save


class _Ours(Records):
    """What each of the library's trainers gets mixed in: our `Records`, checkpoints of an adapter-wrapped model
    reloaded, no model card of its own and no empty ``eval/`` folder."""

    def add_model_card_callback(self, default_args_dict):
        """None: the run folder's model card is ours (`runs.model_card`); the library's would embed example
        searches at the start of training (a progress bar of its own)."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        inner = transformer(self.model)
        if not hasattr(inner, "get_base_model"):
            return super()._load_from_checkpoint(resume_from_checkpoint)
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        found = set_peft_model_state_dict(inner, load_file(str(Path(resume_from_checkpoint) / "adapter_model.safetensors")))
        missing = [key for key in found.missing_keys if "lora_" in key]
        if missing:
            raise RuntimeError(f"{resume_from_checkpoint}: its adapter lacks {missing[:3]}: not this run's adapter")

    def evaluation_loop(self, *args, **kwargs):
        """The library's, without the empty ``eval/`` folder it leaves in the output (our evaluators write no files)."""
        try:
            return super().evaluation_loop(*args, **kwargs)
        finally:
            folder = Path(self.args.output_dir or ".") / "eval"
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


class EmbeddingTrainer(_Ours, SentenceTransformerTrainer):
    pass


class RerankingTrainer(_Ours, CrossEncoderTrainer):
    pass


class EmbeddingArguments(_Saving, SentenceTransformerTrainingArguments):  # module-level: checkpoints pickle them
    pass


class RerankingArguments(_Saving, CrossEncoderTrainingArguments):
    pass


TRAINERS = {"SentenceTransformerTrainer": (EmbeddingTrainer, EmbeddingArguments),
            "CrossEncoderTrainer": (RerankingTrainer, RerankingArguments)}
"""Our trainer and arguments classes by the library's trainer they extend (`Sentences.trainer`)."""


def load(model_class: str, name: str, dtype: str, cuda: bool, quantization: Any = None, **options: Any) -> Any:
    """A sentence-transformers model (``model_class``: ``SentenceTransformer``, ``CrossEncoder``) from a folder or
    hub id, its weights in ``dtype`` (4-bit with a ``quantization`` config), on the GPU when ``cuda``, with the
    task's ``options`` (a cross-encoder's one label)."""
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if cuda else "cpu"
    kwargs: dict[str, Any] = {} if dtype == "auto" else {"dtype": getattr(torch, dtype)}
    if quantization is not None:
        kwargs |= {"quantization_config": quantization, "device_map": {"": device}}
    return getattr(sentence_transformers, model_class)(name, device=device, model_kwargs=kwargs, **options)


def pooled(model: Any, pooling: str | None, normalize: bool | None) -> Any:
    """A `SentenceTransformer` with the spec's ``pooling`` and ``normalize`` in place of its own (``None``: keep
    that one); the transformer inside is the same module."""
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    if pooling is None and normalize is None:
        return model
    modules = list(model)
    found = [m for m in modules if isinstance(m, Pooling)]
    if pooling is not None:
        fresh = Pooling(model.get_sentence_embedding_dimension() or transformer(model).config.hidden_size, pooling)
        modules = [fresh if isinstance(m, Pooling) else m for m in modules] if found else [modules[0], fresh, *modules[1:]]
    if normalize is not None:
        modules = [m for m in modules if not isinstance(m, Normalize)] + ([Normalize()] if normalize else [])
    return sentence_transformers.SentenceTransformer(modules=modules, device=str(model.device))


def teacher(name: str, dtype: str, cuda: bool) -> Any:
    """A teacher from a folder or hub id: a cross-encoder where the folder says so (sentence-transformers' own
    record, else a sequence-classification model with one output), a `SentenceTransformer` otherwise."""
    import json

    import transformers

    record = Path(name) / "config_sentence_transformers.json"
    try:
        kind = json.loads(record.read_text()).get("model_type")
    except (OSError, ValueError):
        kind = None
    if kind is None:
        config = transformers.AutoConfig.from_pretrained(name)
        scores = any(a.endswith("ForSequenceClassification") for a in config.architectures or ())
        kind = "CrossEncoder" if scores and config.num_labels == 1 else "SentenceTransformer"
    return load("CrossEncoder" if kind == "CrossEncoder" else "SentenceTransformer", name, dtype, cuda)


class Weighted(torch.nn.Module):
    """Losses mixed by weight, ``{name: (weight, loss)}``, each given the features and the labels (a loss that
    reads no labels ignores them); the weighted terms go back by name, and the library logs each and sums them."""

    def __init__(self, model: Any, parts: dict[str, tuple[float, Any]]):
        super().__init__()
        self.model = model  # the library puts its wrapped model here (and into each part) under several processes
        self.weights = {name: weight for name, (weight, _) in parts.items()}
        self.parts = torch.nn.ModuleDict({name: loss for name, (_, loss) in parts.items()})

    def forward(self, features: Any, labels: Any) -> dict[str, torch.Tensor]:
        return {name: self.weights[name] * loss(features, labels) for name, loss in self.parts.items()}


class Matched(torch.nn.Module):
    """Embedding MSE: each text column's embeddings against the teacher's of the same texts (``labels``: batch x
    columns x width). The model embeds the texts again beside the ranking loss, so distilling so costs a second
    forward pass per step."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, features: Any, labels: torch.Tensor) -> torch.Tensor:
        found = torch.stack([self.model(f)["sentence_embedding"] for f in features], dim=1)
        return torch.nn.functional.mse_loss(found, labels.to(found.device, found.dtype))


def transformer(model: Any) -> Any:
    """The transformers model inside a sentence-transformers model (its first module's)."""
    return model[0].auto_model


def replaced(model: Any, inner: Any) -> Any:
    """``model`` with ``inner`` as its transformer (in place: the library's modules hold it)."""
    model[0].model = inner
    return model


def is_sentence_model(model: Any) -> bool:
    return isinstance(model, BaseModel)


class Saved:
    """A sentence-transformers model as `disk.save` saves it: ``save_pretrained`` writes the model whole, an adapter
    merged into a copy (the run's model keeps its adapter), and the adapter itself in ``adapter/``."""

    def __init__(self, model: Any, options: Any = ()):
        self.model, self.options = model, dict(options)  # `Sentences.options`: a 4-bit run's base reloads with them

    def save_pretrained(self, path: str | Path) -> None:
        inner = transformer(self.model)
        if not hasattr(inner, "merge_and_unload"):
            self.model.save(str(path))
            return
        inner.save_pretrained(Path(path) / "adapter")
        if getattr(inner.get_base_model(), "is_quantized", False):  # merged into 4-bit weights it would round away
            self._merged_unquantized(inner, Path(path))
            return
        replaced(self.model, copy.deepcopy(inner).merge_and_unload())
        try:
            self.model.save(str(path))
        finally:
            replaced(self.model, inner)

    def _merged_unquantized(self, inner: Any, path: Path) -> None:
        """A 4-bit run's save: its base reloaded unquantized (in the dtype 4-bit computed in), the adapter merged
        into that, saved whole."""
        from peft import PeftModel

        config = inner.peft_config["default"]
        dtype = str(inner.get_base_model().dtype).removeprefix("torch.")
        base = load(type(self.model).__name__, config.base_model_name_or_path, dtype, cuda=False, **self.options)
        merged = PeftModel.from_pretrained(transformer(base), str(path / "adapter")).merge_and_unload()
        replaced(base, merged).save(str(path))
