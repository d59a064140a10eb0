"""The output folder: a final save swapped in whole, and no empty folder left by a failed run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from pipeline.io.files import BASE_CONFIG

__all__ = ["drop_if_new_and_empty", "save"]

MODEL_FILES = (
    "config.json", BASE_CONFIG, "generation_config.json", "model*.safetensors*", "pytorch_model*", "adapter_*",
    "tokenizer*", "special_tokens_map.json", "vocab.*", "merges.txt", "added_tokens.json", "*.model", "chat_template*",
    "README.md", "training_args.bin", "generator",
    # sentence-transformers: its modules (pooling, normalization) and settings, and an adapter beside the whole model
    "modules.json", "config_sentence_transformers.json", "sentence_bert_config.json", "[0-9]_*", "adapter",
)
"""What a save writes: replaced as a whole by the next save (an old adapter never outlives a full model)."""


def save(model: Any, tokenizer: Any, path: str, parts: list[Any]) -> None:
    """Model (or adapter) and tokenizer, each loadable with plain transformers / peft.

    ``parts``: the transformers models inside ``model`` (two for token detection: the
    generator, then the discriminator).

    Written whole into a sibling staging folder, with everything of the old output that
    is not a saved model (checkpoints, run records, your files) linked in, then swapped
    with the output folder in one atomic rename: a reader sees the old output or the new
    one, never a mix, and a crash before the swap leaves the old one as it was. An output
    that is a mount point (a Docker or Kubernetes volume), or a system that cannot swap
    folders, gets `_replace_in_place` instead: staged inside, moved in file by file. Beside an
    adapter goes the base model's config (`files.BASE_CONFIG`): its label names and task class,
    which `pipeline merge` needs. Token detection's generator (in ``generator/``) gets the
    tokenizer too.
    """
    target = Path(path).absolute()
    inside = os.path.ismount(target)  # a volume: nothing renames it, and its parent is another filesystem
    staging = target / f".saving-{os.getpid()}" if inside else target.with_name(f".{target.name}.saving-{os.getpid()}")
    _recover(target)
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
        if inside or not _exchanged(staging, target):
            _replace_in_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the old output after a swap, the partial new one otherwise


def _exchanged(staging: Path, target: Path) -> bool:
    """The staged output swapped in whole (``renameat2`` exchange), with everything of the old output
    that is not a saved model (checkpoints, run records, your files) linked into it first; False where
    the system cannot exchange (macOS, NFS, a busy folder): the caller then replaces in place."""
    if not target.exists():
        os.rename(staging, target)
        return True
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        exchange = libc.renameat2
    except (OSError, AttributeError):
        return False
    for item in target.iterdir():
        if not _is_model_file(item):
            _link(item, staging / item.name)
    if exchange(-100, bytes(staging), -100, bytes(target), 2) == 0:  # AT_FDCWD, RENAME_EXCHANGE
        return True
    for item in staging.iterdir():  # undo the links: the in-place way moves only model files
        if not _is_model_file(item):
            _remove(item)
    return False


def _is_model_file(item: Path) -> bool:
    return any(item.match(pattern) for pattern in MODEL_FILES)


REPLACED = ".replaced"
"""Inside the output while a save replaces it in place: the old model's files, until the new ones are in."""


def _replace_in_place(staging: Path, target: Path) -> None:
    """The old model's files moved aside (`REPLACED`, inside ``target``), the new ones moved in, then the
    old ones dropped: no moment without a whole model on disk, and on a failure the old files go back.

    For an output that cannot be exchanged whole (a mount point, a system without ``renameat2``): one
    file at a time, so a reader may see a mix while it runs, but a crash loses neither model (the
    next save, `_recover`, puts the old one back if the new one did not get in whole).
    """
    aside = target / REPLACED
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    moved: list[Path] = []
    try:
        for item in list(target.iterdir()):
            if _is_model_file(item):
                _move(item, aside / item.name)
        for item in list(staging.iterdir()):
            _move(item, target / item.name)
            moved.append(target / item.name)
    except BaseException:
        for item in moved:
            _remove(item)
        for item in aside.iterdir():
            os.replace(item, target / item.name)
        aside.rmdir()
        raise
    shutil.rmtree(aside)


def _move(source: Path, target: Path) -> None:
    os.replace(source, target)


def _recover(target: Path) -> None:
    """After a save killed mid-way: the old model back from `REPLACED` unless the new one got in whole
    (its staging folder emptied), and no staging folders of dead processes left in or beside the output."""
    stale = [f for f in (*target.glob(".saving-*"), *target.parent.glob(f".{target.name}.saving-*"))
             if not _alive(f.name.rpartition("-")[2])]
    aside = target / REPLACED
    if aside.is_dir():
        if any(any(folder.iterdir()) for folder in stale):  # the new model did not get in whole
            old = {item.name for item in aside.iterdir()}
            for item in list(target.iterdir()):
                if _is_model_file(item):
                    _remove(item)
            for name in old:
                os.replace(aside / name, target / name)
        shutil.rmtree(aside, ignore_errors=True)
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)


def _remove(item: Path) -> None:
    shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


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


def drop_if_new_and_empty(output_dir: str, existed: bool) -> None:
    """After a failed run: remove the output folder the Trainer created, unless it holds checkpoints."""
    folder = Path(output_dir) if output_dir else None
    if folder is None or existed or not folder.is_dir() or any(folder.glob("checkpoint-*")):
        return
    shutil.rmtree(folder, ignore_errors=True)
