"""The output folder: a final save swapped in whole, and no empty folder left by a failed run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .files import BASE_CONFIG

__all__ = ["drop_if_new_and_empty", "save"]

MODEL_FILES = (
    "config.json", BASE_CONFIG, "generation_config.json", "model*.safetensors*", "pytorch_model*", "adapter_*",
    "tokenizer*", "special_tokens_map.json", "vocab.*", "merges.txt", "added_tokens.json", "*.model", "chat_template*",
    "README.md", "training_args.bin", "generator",
)
"""What a save writes: replaced as a whole by the next save (an old adapter never outlives a full model)."""


def save(model: Any, tokenizer: Any, path: str, parts: list[Any]) -> None:
    """Model (or adapter) and tokenizer, each loadable with plain transformers / peft.

    ``parts``: the transformers models inside ``model`` (two for token detection: the
    generator, then the discriminator).

    Written whole into a sibling staging folder, with everything of the old output that
    is not a saved model (checkpoints, run records, your files) linked in, then swapped
    with the output folder in one atomic rename: a reader sees the old output or the new
    one, never a mix, and a crash before the swap leaves the old one as it was. Beside an
    adapter goes the base model's config (`files.BASE_CONFIG`): its label names and task class,
    which `pipeline merge` needs. Token detection's generator (in ``generator/``) gets the
    tokenizer too.
    """
    target = Path(path).absolute()
    staging = target.with_name(f".{target.name}.saving-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging)
        folders = [staging / "generator", staging] if len(parts) == 2 else [staging]  # as TokenDetection saves
        for part, folder in zip(parts, folders):
            if hasattr(part, "get_base_model"):
                base = part.get_base_model()
                base.config.architectures = [type(base).__name__]  # the task class, not the checkpoint's
                base.config.to_json_file(folder / BASE_CONFIG)
        for folder in folders:  # each folder loads on its own
            tokenizer.save_pretrained(folder)
        if target.is_dir():
            for item in target.iterdir():
                if not any(item.match(pattern) for pattern in MODEL_FILES):
                    _link(item, staging / item.name)
        _swap(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the old output after a swap, the partial new one otherwise


def _link(source: Path, target: Path) -> None:
    """Hard-link ``source`` (a file or a whole folder) at ``target``: no copies, same filesystem."""
    if source.is_dir():
        target.mkdir()
        for item in source.iterdir():
            _link(item, target / item.name)
        return
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links
        shutil.copy2(source, target)


def _swap(new: Path, old: Path) -> None:
    """Put folder ``new`` at ``old`` in one atomic step (``renameat2`` exchange on Linux); ``old``'s
    content ends up at ``new``. Elsewhere two renames, with a moment where ``old`` is missing."""
    if not old.exists():
        os.rename(new, old)
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.renameat2(-100, bytes(new), -100, bytes(old), 2) == 0:  # AT_FDCWD, RENAME_EXCHANGE
            return
    except (OSError, AttributeError):
        pass
    aside = new.with_name(new.name + ".old")
    os.rename(old, aside)
    os.rename(new, old)
    os.rename(aside, new)


def drop_if_new_and_empty(output_dir: str, existed: bool) -> None:
    """After a failed run: remove the output folder the Trainer created, unless it holds checkpoints."""
    folder = Path(output_dir) if output_dir else None
    if folder is None or existed or not folder.is_dir() or any(folder.glob("checkpoint-*")):
        return
    shutil.rmtree(folder, ignore_errors=True)
