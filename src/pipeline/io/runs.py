"""Run identity and run directories: what a finished run leaves on disk, and adapter merging.

A run directory holds the model (or adapter) and tokenizer, plus ``run.json`` (id),
``spec.yaml``, ``plan.json``, ``metrics.json``, ``log_history.json`` and ``loss.png``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.core.frozen import thaw
from pipeline.core.plan import Plan
from pipeline.core.search import best as pick
from pipeline.errors import SpecError
from pipeline.core.spec import Spec, source_kind

__all__ = ["columns", "final_metrics", "find_runs", "flatten", "guard", "is_adapter", "lineage", "run_id", "shown", "spec_document", "write_results", "write_run"]


def _plain(value: Any) -> Any:
    """A spec value as plain data: live objects (frames, datasets, models, functions) by fingerprint."""
    kind = source_kind(value)
    if kind == "frame":
        import pandas as pd

        return {"dataframe": int(pd.util.hash_pandas_object(value, index=False).sum() % 2**63)}
    if kind == "dataset":
        return {"dataset": value._fingerprint}
    if isinstance(value, tuple) and len(value) == 2 and hasattr(value[0], "config"):
        return {"model": getattr(value[0].config, "_name_or_path", type(value[0]).__name__)}
    if callable(value):
        return f"{value.__module__}.{value.__qualname__}"
    return thaw(value)


def spec_document(spec: Spec) -> dict[str, Any]:
    """The spec as plain data (YAML/JSON-able), live objects replaced by what identifies them."""
    return {name: _plain(value) for name, value in spec}


def _identifying(spec: Spec) -> dict[str, Any]:
    """The spec as plain data without where the run is written (``output_dir``) and whether it resumes
    (``checkpoint``), which do not change what it is; data files by content."""
    document = spec_document(spec)
    del document["checkpoint"]
    document["training"].pop("output_dir", None)
    for name in ("train", "validation"):
        path = document[name]
        if isinstance(path, str) and Path(path).is_file():
            found = Path(path).stat()
            document[name] = {"file": path, "sha256": _sha256(path, found.st_size, found.st_mtime_ns)}
    return document


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, modified: int) -> str:
    """A data file's hash, read once per version of the file (`run_id` and `lineage` both need it)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


UNTIL = ("max_steps", "num_train_epochs", "save_steps", "save_strategy", "save_total_limit", "logging_steps",
         "logging_strategy", "logging_first_step", "eval_steps", "eval_strategy", "eval_on_start", "disable_tqdm",
         "report_to", "per_device_eval_batch_size")
"""Training settings a resumed run may change: how long it goes on, and how it saves and reports."""


def lineage(spec: Spec) -> str:
    """Short hash of what makes the steps of a run what they are (model, data, every training setting but
    `UNTIL`): a checkpoint resumes only into a run of the same lineage."""
    document = _identifying(spec)
    for key in UNTIL:
        document["training"].pop(key, None)
    document.pop("validation", None)
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_id(spec: Spec, plan: Plan) -> str:
    """Short content hash of the normalised spec (data files by content) and its plan.

    Where the run is written (``output_dir``) and whether it resumes (``checkpoint``)
    do not change what it is, so they are left out.
    """
    document = _identifying(spec)
    planned = plan.model_dump(mode="json")
    planned["training_args"].pop("output_dir", None)
    planned["provenance"].pop("training_args.output_dir", None)
    text = json.dumps({"spec": document, "plan": planned}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def guard(folder: Path, identity: str, force: bool = False) -> list[str]:
    """Refuse to train into ``folder`` when it holds a run of a different spec, or files that are no run's
    (checkpoints of an interrupted run are), unless forced. Forced over another run: its checkpoints are
    removed (a later resume would take them for this run's); returns their names."""
    marker = folder / "run.json"
    if not folder.is_dir():
        return []
    if force:
        held = json.loads(marker.read_text()).get("id") if marker.is_file() else None
        if held == identity:
            return []
        import shutil

        removed = sorted(folder.glob("checkpoint-*"))
        for checkpoint in removed:
            shutil.rmtree(checkpoint, ignore_errors=True)
        return [c.name for c in removed]
    if not marker.is_file():
        others = sorted(p.name for p in folder.iterdir() if not p.name.startswith("checkpoint-"))
        if others:
            raise SpecError(
                f"output: {folder} is not empty ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) and "
                "holds no run; training there would mix your files with the run's. Choose another output, or pass "
                "--force to train there anyway"
            )
        return []
    held = json.loads(marker.read_text()).get("id")
    if held != identity:
        raise SpecError(
            f"output: {folder} holds run {held}, from a different spec (this one is run {identity}); "
            "resuming it would mix the two. Choose another output, or pass --force to train over it"
        )
    return []


def write_run(folder: Path, identity: str, run: Any) -> None:
    """Write the run's record (id, spec, plan, metrics, log history, loss curve) into ``folder``."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps({"id": identity}, indent=2) + "\n")
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec_document(run.spec), sort_keys=False))
    (folder / "plan.json").write_text(json.dumps(run.plan.model_dump(mode="json"), indent=2) + "\n")
    (folder / "metrics.json").write_text(json.dumps(dict(run.metrics), indent=2) + "\n")
    history = [dict(entry) for entry in run.log_history]
    (folder / "log_history.json").write_text(json.dumps(history, indent=2) + "\n")
    plot_losses(history, folder / "loss.png", title=f"run {identity}")
    (folder / "README.md").write_text(model_card(identity, run, folder))  # in place of peft's empty template


CARD_SETTINGS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "bf16", "fp16", "seed")
"""Training arguments a model card shows (beside LoRA, quantization, length and dtype)."""


def model_card(identity: str, run: Any, folder: Path) -> str:
    """A model card for the run in ``folder``, with the Hub's metadata block: base model, task, labels, data
    (sources, rows, hashes), the plan's key values with their origins, final metrics, and how to load it."""
    from pipeline.tasks import TASKS

    spec, plan, task = run.spec, run.plan, TASKS[run.spec.task]
    adapter = bool(plan.lora)
    base = _plain(spec.base) if not isinstance(spec.base, str) else spec.base
    tags = ["pipeline", spec.task, *(["lora"] if adapter else []), *(["qlora"] if plan.quantization else [])]
    meta = [f"library_name: {'peft' if adapter else 'transformers'}", f"base_model: {base}",
            *([f"pipeline_tag: {task.hub_tag}"] if task.hub_tag else []), "tags:", *(f"- {t}" for t in tags)]
    lines = ["---", *meta, "---", "", f"# {folder.name}", "",
             f"`{base}` fine-tuned for {spec.task} with pipeline ({'LoRA adapters' if adapter else 'all weights'}"
             f"{', 4-bit base' if plan.quantization else ''}), run `{identity}`."]
    labels = getattr(run, "labels", None)
    if labels is not None and labels.classes:
        lines += ["", f"Labels: {', '.join(str(c) for c in labels.classes)}."]
    document = _identifying(spec)
    lines += ["", "## Data", "", "| split | source | rows | sha256 |", "|---|---|---|---|"]
    for split, data in (("train", run.train_data), ("validation", run.eval_data)):
        given = document[split]
        if given is None:
            continue
        source = Path(given["file"]).name if isinstance(given, dict) and "file" in given else json.dumps(given)[:60]
        digest = given.get("sha256", "")[:16] if isinstance(given, dict) else ""
        lines.append(f"| {split} | {source} | {len(data) if data is not None else ''} | {digest} |")
    lines += ["", "## Training", "", "| setting | value | origin |", "|---|---|---|"]
    shown_settings = [("maxlength", plan.maxlength, "maxlength"), ("dtype", plan.dtype, "dtype")]
    shown_settings += [(f"training_args.{k}", plan.training_args[k], f"training_args.{k}") for k in CARD_SETTINGS
                       if k in plan.training_args]
    shown_settings += [(f"lora.{k}", v, f"lora.{k}") for k, v in (plan.lora or {}).items()
                       if k in ("r", "lora_alpha", "target_modules", "lora_dropout")]
    shown_settings += [(f"quantization.{k}", v, f"quantization.{k}") for k, v in (plan.quantization or {}).items()
                       if k in ("load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_compute_dtype")]
    for name, value, key in shown_settings:
        origin = plan.provenance.get(key)
        lines.append(f"| {name} | {value} | {origin.source + ': ' + origin.reason if origin else ''} |")
    lines += ["", "## Results", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {shown(v)} |" for k, v in final_metrics(run.metrics).items()]
    model_class = task.load_class
    load = (f"model = PeftModel.from_pretrained({model_class}.from_pretrained(\"{base}\", config=AutoConfig."
            f"from_pretrained(folder + \"/base_config.json\")), folder)" if adapter
            else f"model = {model_class}.from_pretrained(folder)")
    lines += ["", "## Use it", "", "```python", "from pipeline import predict", "",
              f'predict("{folder}", ["..."])', "```", "", "```python",
              *(["from peft import PeftModel"] if adapter else []),
              f"from transformers import {'AutoConfig, ' if adapter else ''}{model_class}, AutoTokenizer", "",
              f'folder = "{folder}"', load, "tokenizer = AutoTokenizer.from_pretrained(folder)", "```", "",
              f'`pipeline predict {folder} "..."` tries it from the command line; `pipeline merge {folder} OUT` '
              "merges adapters into the base." if adapter else f'`pipeline predict {folder} "..."` tries it from '
              "the command line."]
    return "\n".join(lines) + "\n"


RECORD = ("spec.yaml", "plan.json", "metrics.json", "log_history.json", "loss.png")
"""A run folder's record beside its model (`write_run`), run.json aside."""


def copy_record(source: Path, target: Path) -> None:
    """Copy the record of the run in ``source`` into ``target`` (its merged model), which says where it came from:
    run.json's ``merged_from``. A folder without a record (a bare adapter) gets none."""
    import shutil

    if not (source / "run.json").is_file():
        return
    record = json.loads((source / "run.json").read_text())
    for name in RECORD:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    (target / "run.json").write_text(json.dumps({**record, "merged_from": str(source)}, indent=2) + "\n")


SKIPPED = ("runtime", "per_second", "epoch", "total_flos", "preparation_time")
"""Metrics not worth a column: runtimes and counters."""


def final_metrics(metrics: Any) -> dict[str, Any]:
    """The metrics worth a column: losses and the task's or the user's metrics, not `SKIPPED`."""
    return {k: v for k, v in metrics.items() if not any(s in k for s in SKIPPED)}


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of a list of records, in first-seen order (records may lack some: a pruned trial's flag)."""
    return list(dict.fromkeys(k for r in rows for k in r))


def shown(value: Any) -> str:
    """A value as a table shows it: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_results(folder: Path, rows: list[dict[str, Any]]) -> None:
    """A sweep's records as ``results.csv`` and ``results.md`` (every key a column, in first-seen order)."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    names = columns(rows)
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, names)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(shown(r.get(c, "")) for c in names) + " |" for r in rows]
    (folder / "results.md").write_text("\n".join(lines) + "\n")


def find_runs(folder: str | Path) -> list[dict[str, Any]]:
    """Every run under ``folder`` (sweeps' runs too): id, folder, when (run.json's time), spec, metrics."""
    import datetime

    import yaml

    found = []
    for marker in sorted(Path(folder).rglob("run.json")):
        where = marker.parent
        try:
            identity = json.loads(marker.read_text())["id"]
            spec = yaml.safe_load((where / "spec.yaml").read_text()) or {}
            metrics = json.loads((where / "metrics.json").read_text())
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
            continue  # a run still training, or not a run of ours
        when = datetime.datetime.fromtimestamp(marker.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        found.append({"run": identity, "folder": str(where), "when": when, "spec": spec, "metrics": metrics})
    return found


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys: ``{"training": {"seed": 1}}`` -> ``{"training.seed": 1}``."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    return plt


def plot_sweep(rows: list[dict[str, Any]], keys: list[str], metric: str, path: Path, log: set[str] = frozenset(),
               maximize: bool = False) -> None:
    """`sweep_figure` as a PNG."""
    _save(_pyplot(), sweep_figure(rows, keys, metric, log, maximize), path)


def sweep_figure(rows: list[dict[str, Any]], keys: list[str], metric: str, log: set[str] = frozenset(),
                 maximize: bool = False) -> Any:
    """A sweep's ``metric`` against each value that varied, one panel a key: pruned trials hollow, the best run a
    star, whole numbers on an integer axis, a log axis labelled at its decades only."""
    from matplotlib.ticker import MaxNLocator, NullFormatter

    plt = _pyplot()
    scored = [r for r in rows if metric in r]
    varied = [k for k in keys if len({repr(r.get(k)) for r in scored}) > 1] or keys[:1]
    best = pick(scored, metric, "maximize" if maximize else "minimize")
    figure, panels = plt.subplots(1, len(varied), figsize=(4 * len(varied), 3.5), dpi=100, squeeze=False)
    for key, axes in zip(varied, panels[0]):
        values = [r[key] for r in scored]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        shown = lambda v: v if numeric else str(v)  # noqa: E731
        for pruned in (False, True):
            points = [(shown(r[key]), r[metric]) for r in scored if bool(r.get("pruned")) == pruned]
            if points:
                xs, ys = zip(*points)
                axes.scatter(xs, ys, facecolors="none" if pruned else None, edgecolors="C0",
                             label="pruned" if pruned else None)
        if best is not None:
            axes.scatter([shown(best[key])], [best[metric]], marker="*", s=200, color="C3", zorder=3, label="best")
        if key in log:
            axes.set_xscale("log")
            axes.xaxis.set_minor_formatter(NullFormatter())
        elif numeric and all(isinstance(v, int) for v in values):
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        _tidy(axes, xlabel=key, ylabel=metric)
    figure.tight_layout()
    return figure


def plot_losses(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Train and eval loss over steps, as a PNG."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key, label in (("loss", "train loss"), ("eval_loss", "eval loss")):
        points = [(e["step"], e[key]) for e in history if key in e and "step" in e]
        if points:
            steps, losses = zip(*points)
            axes.plot(steps, losses, marker="o" if len(points) < 30 else None, label=label)
    _tidy(axes, xlabel="step", ylabel="loss", title=title)
    _save(plt, figure, path)


def plot_confusion(confusion: dict[str, Any], path: Path, title: str) -> None:
    """A confusion matrix (rows: the true class, columns: the predicted one) as a PNG, each cell's count
    written on it."""
    plt = _pyplot()
    names, matrix = confusion["labels"], confusion["matrix"]
    side = 2.5 + 0.5 * len(names)
    figure, axes = plt.subplots(figsize=(side + 1, side), dpi=100)
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axes.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    axes.set_xticks(range(len(names)), names, rotation=45 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    axes.set_yticks(range(len(names)), names)
    axes.set(xlabel="predicted", ylabel="true", title=title)
    _save(plt, figure, path)


def _tidy(axes: Any, **labels: str) -> None:
    axes.set(**labels)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend()


def _save(plt: Any, figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def is_adapter(folder: str | Path) -> bool:
    """Whether ``folder`` holds a LoRA adapter (a LoRA run's output)."""
    return (Path(folder) / "adapter_config.json").is_file()
