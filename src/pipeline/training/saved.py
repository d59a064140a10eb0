"""Saved runs loaded again: a LoRA adapter merged into its base, in memory or into a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import SpecError
from pipeline.io.runs import copy_record, is_adapter
from pipeline.training.hush import hushed

__all__ = ["merge_dir", "merged"]


def merge_dir(source: str | Path, target: str | Path) -> Path:
    """Merge the LoRA adapter saved in ``source`` (a run or adapter folder) into its base.

    The base is reloaded unquantized (merging into 4-bit weights would round the update
    away); the merged model and tokenizer are written to ``target``, loadable with plain
    transformers, with the run's record (a run folder like the run's, its run.json naming
    the run it was ``merged_from``). Returns ``target``. Raises `SpecError` when ``source`` holds no adapter.
    """
    import transformers

    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise SpecError(f"merge: no such folder {str(source)!r}; give a run folder or an adapter folder")
    if not is_adapter(source):
        raise SpecError(
            f"merge: {source} holds no LoRA adapter (no adapter_config.json); "
            "merge needs the output of a run trained with lora"
        )
    merged(source).save_pretrained(target)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(target)
    if is_adapter(source / "generator"):
        merge_dir(source / "generator", target / "generator")
    copy_record(source, target)  # a run folder too: its spec, plan and metrics, and which run it came from
    return target


@hushed()
def merged(source: str | Path, **kwargs: Any) -> Any:
    """The adapter in ``source`` merged into its base, reloaded unquantized: a plain transformers model.

    The task class and labels come from the config saved beside the adapter (else the base's).
    ``kwargs`` go to ``from_pretrained`` (e.g. ``dtype``).
    """
    import transformers
    from peft import PeftModel

    from pipeline.io.files import config_file

    source = Path(source)
    base_path = json.loads((source / "adapter_config.json").read_text())["base_model_name_or_path"]
    beside = config_file(source)
    config = transformers.AutoConfig.from_pretrained(beside if beside.is_file() else base_path)
    if getattr(config, "quantization_config", None):
        del config.quantization_config  # reload the base in full precision, then merge
    model_class = getattr(transformers, config.architectures[0])
    base = model_class.from_pretrained(base_path, config=config, **kwargs)
    return PeftModel.from_pretrained(base, source).merge_and_unload()
