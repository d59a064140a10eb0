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
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

__all__ = ["Arguments", "Trainer", "Saved", "load"]


class Arguments(SentenceTransformerTrainingArguments):
    """The library's arguments whose ``should_save`` is False when ``output_dir`` is empty (a transient model)."""

    @property
    def should_save(self) -> bool:
        return bool(self.output_dir) and super().should_save


class Trainer(Records, SentenceTransformerTrainer):
    """sentence-transformers' trainer with our `Records`, and checkpoints of an adapter-wrapped model reloaded."""

    def add_model_card_callback(self, default_args_dict):
        """None: the run folder's model card is ours (`runs.model_card`); the library's would embed example
        searches at the start of training (a progress bar of its own)."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        inner = self.model[0].auto_model
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


def load(name: str, dtype: str, cuda: bool) -> Any:
    """A `SentenceTransformer` from a folder or hub id, its weights in ``dtype``, on the GPU when ``cuda``."""
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if cuda else "cpu"
    kwargs = {} if dtype == "auto" else {"dtype": getattr(torch, dtype)}
    return sentence_transformers.SentenceTransformer(name, device=device, model_kwargs=kwargs)


def transformer(model: Any) -> Any:
    """The transformers model inside a sentence-transformers model (its first module's)."""
    return model[0].auto_model


def replaced(model: Any, inner: Any) -> Any:
    """``model`` with ``inner`` as its transformer (in place: the library's modules hold it)."""
    model[0].model = inner
    return model


def is_sentence_model(model: Any) -> bool:
    return isinstance(model, sentence_transformers.SentenceTransformer)


class Saved:
    """A sentence-transformers model as `disk.save` saves it: ``save_pretrained`` writes the model whole, an adapter
    merged into a copy (the run's model keeps its adapter), and the adapter itself in ``adapter/``."""

    def __init__(self, model: Any):
        self.model = model

    def save_pretrained(self, path: str | Path) -> None:
        inner = transformer(self.model)
        if not hasattr(inner, "merge_and_unload"):
            self.model.save(str(path))
            return
        inner.save_pretrained(Path(path) / "adapter")
        replaced(self.model, copy.deepcopy(inner).merge_and_unload())
        try:
            self.model.save(str(path))
        finally:
            replaced(self.model, inner)
