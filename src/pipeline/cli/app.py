"""The `pipeline` command: spec files and flags in, a plan or a trained model out.

The only module that prints or exits.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.core.plan import Plan
from pipeline.core.search import best, better
from pipeline.errors import Interrupted, PipelineError, SpecError
from pipeline.io.files import load_spec, parse_settings
from pipeline.training.planning import plan as planned
from pipeline.core.hardware import PROFILES, Hardware, profile
from pipeline.training.detect import detect
from pipeline.io.runs import columns, flatten
from pipeline.io.runs import shown as _number
from pipeline.io.runs import final_metrics as _final
from pipeline.training.sweep import main_process, sweep_folder, sweep_metric, train_into
from pipeline.training.sweep import sweep as run_sweep
from pipeline.core.spec import Spec
from pipeline.tasks import TASKS

app = typer.Typer(
    help=__doc__.splitlines()[0], no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)


@app.callback()
def _commands() -> None:
    """Fine-tune Hugging Face transformers from spec files (add --debug for a traceback on errors)."""


class Format(str, Enum):
    text = "text"
    json = "json"
    yaml = "yaml"


SpecPath = Annotated[Path, typer.Argument(help="spec file (.yaml, .yml or .json)")]
Settings = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override a field: key=value, e.g. training.learning_rate=1e-3")
]
HardwareName = Annotated[
    str, typer.Option("--hardware", "-H", help=f"this machine ('detect'), or one of {', '.join(PROFILES)}")
]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="run folder (default: runs/<run id>)")]
Force = Annotated[bool, typer.Option("--force", help="train into a folder that holds a run of another spec")]


Processes = Annotated[int | None, typer.Option(
    "--processes", "-p", min=1, help="plan for this many training processes (one a GPU: a node of them)")]


def _machine(name: str, processes: int | None = None) -> Hardware:
    machine = detect() if name == "detect" else profile(name)
    if processes is None:
        return machine
    return machine.model_copy(update={"processes": processes, "devices": processes if machine.accelerator else 0})


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    """Rows as a rich table: a header rule, numbers right-aligned, no wrapping or cutting (a wide table
    stays one line a row in a file or a pipe), bold headers on a terminal only."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    def number(cell: Any) -> bool:
        try:
            float(str(cell))
        except ValueError:
            return False
        return True

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for i, name in enumerate(header):
        cells = [row[i] for row in rows]
        table.add_column(name, justify="right" if cells and all(number(c) for c in cells) else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    terminal = sys.stdout.isatty()
    console = Console(width=None if terminal else 100_000, force_terminal=terminal, soft_wrap=False)
    with console.capture() as captured:
        console.print(table)
    return "\n".join(line.rstrip() for line in captured.get().splitlines() if line.strip())


def _records(rows: list[dict[str, Any]], names: list[str]) -> str:
    """Records as a `_table` of columns ``names``, numbers shortened, a missing value blank."""
    return _table([tuple(_number(r.get(c, "")) for c in names) for r in rows], tuple(names))


@app.command()
def plan(
    spec: SpecPath,
    hardware: HardwareName = "detect",
    settings: Settings = None,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
    processes: Processes = None,
) -> None:
    """Show every value a run would use and where it came from, without loading anything."""
    loaded = load_spec(spec, parse_settings(settings or []))
    result = planned(loaded, _machine(hardware, processes))
    if format is Format.text:
        typer.echo(str(result))
        return
    document = result.model_dump(mode="json")
    if format is Format.json:
        typer.echo(json.dumps(document, indent=2))
    else:
        import yaml

        typer.echo(yaml.safe_dump(document, sort_keys=False), nl=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of spec files, for editor completion and checks."""
    typer.echo(json.dumps(Spec.model_json_schema(), indent=2))


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no bars or notices: errors and the results only")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="also the Trainer's log lines (loss, lr, ...)")]


def _logging(quiet: bool = False, verbose: bool = False) -> None:
    """Our notices at INFO (``-v``: the Trainer's log lines too; ``-q``: warnings only). Progress bars only on a
    terminal: a log file gets lines, not redrawn bars. Deprecation warnings from the libraries are hidden (the stages
    hide the other library notices a user cannot act on: `_hush`)."""
    import warnings

    if quiet or not sys.stderr.isatty():
        for name in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
            os.environ[name] = "1"  # read when the libraries are imported, which is later
    logging.basicConfig(format="%(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # under torchrun, rank 0 alone says our notices
        handler.addFilter(lambda record: main_process() or not record.name.startswith("pipeline"))
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.getLogger("pipeline").setLevel(level)
    logging.getLogger("pipeline.notice").setLevel(logging.WARNING if quiet else logging.INFO)
    warnings.filterwarnings("ignore", category=FutureWarning)


@app.command()
def train(
    spec: SpecPath, settings: Settings = None, output: Output = None, force: Force = False, quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Fine-tune: runs load ▸ quantize ▸ adapt ▸ train and writes the run folder."""
    _logging(quiet, verbose)
    loaded = load_spec(spec, parse_settings(settings or []))
    identity, folder, run = train_into(loaded, detect(), force, output=output)
    if not main_process():
        return
    typer.echo(_table([(k, _number(v)) for k, v in run.metrics.items()], ("metric", "value")))
    typer.echo(f"\nrun {identity}: model, spec, plan, metrics and loss.png in {folder}")


def _grid(grids: list[str]) -> dict[str, list[Any]]:
    parsed: dict[str, list[Any]] = {}
    for grid in grids:
        key, _, values = grid.partition("=")
        if not values:
            raise SpecError(f"--grid: expected key=v1,v2 (got {grid!r})")
        parsed[key] = [parse_settings([f"{key}={v}"])[key] for v in values.split(",")]
    return parsed


class Search(str, Enum):
    grid = "grid"
    random = "random"
    optuna = "optuna"


@app.command()
def sweep(
    spec: SpecPath,
    grid: Annotated[list[str] | None, typer.Option("--grid", "-g", help="key=v1,v2: values to try for a field")] = None,
    ranges: Annotated[
        list[str] | None, typer.Option("--range", "-r", help="key=low:high[:log]: a range to draw from (random, optuna)")
    ] = None,
    search: Annotated[Search, typer.Option(help="every --grid combination, random draws, or Optuna's TPE")] = Search.grid,
    trials: Annotated[int, typer.Option(min=1, help="trials for random and optuna searches")] = 10,
    seed: Annotated[int, typer.Option(help="seed of the random and optuna searches")] = 0,
    settings: Settings = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="sweep folder")] = None,
    metric: Annotated[str | None, typer.Option(help="metric that picks the best run (default eval_loss)")] = None,
    maximize: Annotated[bool | None, typer.Option(
        "--maximize/--minimize", help="higher (lower) metric is better; default: as the metric's name says (losses, "
        "perplexity, errors lower; accuracy, F1, NDCG, correlations higher)")] = None,
    force: Force = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    storage: Annotated[str | None, typer.Option(help="optuna: a study storage URL (sqlite:///sweep.db, "
                                                     "postgresql://...) shared by workers on any machine")] = None,
    study: Annotated[str | None, typer.Option(help="with --storage: the study's name (default: the sweep folder's)")] = None,
) -> None:
    """Train variants of a spec: every --grid combination, or --trials drawn at random or suggested by Optuna
    (which stops trials doing worse than earlier ones at an evaluation). Writes the results (CSV, Markdown),
    sweep.png (the metric against each swept value) and names the best run. With --storage, any number of
    workers share one Optuna study: each trains the next trial until the study has --trials."""
    from pipeline.core.search import parse_range

    _logging(quiet, verbose)
    base = parse_settings(settings or [])
    loaded, choices, drawn = load_spec(spec, base), _grid(grid or []), dict(parse_range(r) for r in ranges or [])
    metric, direction = sweep_metric(loaded, metric, maximize)
    folder = output or sweep_folder(loaded, choices, drawn, search.value, trials, seed)
    rows = run_sweep(loaded, grid=choices, ranges=drawn, search=search.value, trials=trials, seed=seed, metric=metric,
                     maximize=maximize, output=folder, force=force, storage=storage, study=study)
    if not main_process():
        return
    typer.echo(_records(rows, columns(rows)))
    top = best(rows, metric, direction)
    failed = sum(1 for r in rows if "error" in r)
    if failed:
        typer.echo(f"\n{failed} of {len(rows)} trials failed (their error is in the results)", err=True)
    if top is None:
        raise SpecError(f"--metric: no run reported {metric!r} (they reported {sorted(rows[0])})")
    typer.echo(f"\nbest run by {metric} ({'highest' if direction == 'maximize' else 'lowest'}): {top['run']} "
               f"({_number(top[metric])}); results and sweep.png in {folder}")


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(help="first spec file")],
    b: Annotated[Path, typer.Argument(help="second spec file (may be the same file)")],
    hardware: HardwareName = "detect",
    hardware_b: Annotated[str | None, typer.Option("--hardware-b", help="machine for B (default: --hardware)")] = None,
) -> None:
    """Differences between two specs and between their plans (e.g. on two machines)."""
    from pipeline.io.runs import spec_document

    first, second = load_spec(a), load_spec(b)
    plans: list[Plan] = [
        planned(first, _machine(hardware)),
        planned(second, _machine(hardware_b or hardware)),
    ]
    for title, left, right in (
        ("spec", spec_document(first), spec_document(second)),
        ("plan", *(p.model_dump(mode="json", exclude={"provenance"}) for p in plans)),
    ):
        flat_a, flat_b = flatten(left), flatten(right)
        rows = [
            (key, _wrapped(flat_a.get(key, "-")), _wrapped(flat_b.get(key, "-")))
            for key in sorted(set(flat_a) | set(flat_b))
            if flat_a.get(key, "-") != flat_b.get(key, "-")
        ]
        typer.echo(f"{title}: " + ("no differences" if not rows else f"{len(rows)} differences"))
        if rows:
            typer.echo(_table(rows, ("field", "A", "B")))


def _wrapped(value: Any, width: int = 60) -> str:
    """A value as JSON, in lines of ``width`` (a plan's notes run to hundreds of characters); a list one item a line."""
    import textwrap

    items = value if isinstance(value, list) and value else [value]
    return "\n".join(line for item in items for line in textwrap.wrap(json.dumps(item, default=str), width) or [""])


class Listing(str, Enum):
    text = "text"
    json = "json"
    csv = "csv"


@app.command()
def runs(
    folder: Annotated[Path, typer.Argument(help="folder holding run folders (sweeps' too)")] = Path("runs"),
    sort: Annotated[str | None, typer.Option("--sort", help="a metric to order by, best first")] = None,
    format: Annotated[Listing, typer.Option("--format", "-f")] = Listing.text,
) -> None:
    """Past runs side by side: id, task, base, when, the spec values that differ, final metrics."""
    from pipeline.io.runs import find_runs

    found = find_runs(folder)
    if not found:
        raise SpecError(f"runs: no runs under {str(folder)!r} (a run folder holds run.json); train one first")
    specs = [{k: v for k, v in flatten(r["spec"]).items() if k not in ("training.output_dir", "checkpoint")}
             for r in found]
    differ = [k for k in dict.fromkeys(k for spec in specs for k in spec)
              if len({json.dumps(spec.get(k), default=str) for spec in specs}) > 1]
    rows = [
        {"run": r["run"], "task": r["spec"].get("task", ""), "base": Path(str(r["spec"].get("base", ""))).name,
         "when": r["when"], **{k: spec.get(k) for k in differ}, **_final(r["metrics"]), "folder": r["folder"]}
        for r, spec in zip(found, specs)
    ]
    if sort:
        scored = [r for r in rows if isinstance(r.get(sort), (int, float))]
        if not scored:
            names = sorted({k for r in rows for k in r if k.startswith(("eval_", "train_"))})
            raise SpecError(f"--sort: no run reported {sort!r}; metrics found: {', '.join(names) or 'none'}")
        try:
            lower = better(sort) == "minimize"
        except SpecError:  # any column sorts: one whose name says no direction, highest first
            lower = False
        rows = sorted(scored, key=lambda r: r[sort], reverse=not lower) + [r for r in rows if r not in scored]
    names = columns(rows)
    if format is Listing.json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    elif format is Listing.csv:
        writer = csv.DictWriter(sys.stdout, names)
        writer.writeheader()
        writer.writerows(rows)
    else:
        typer.echo(_records(rows, [c for c in names if c != "folder"]))


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="a run folder")],
    texts: Annotated[list[str] | None, typer.Argument(help="inputs (question answering: questions, see --context)")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="inputs: a text per line, or JSON lines with the task's columns; embeddings: the corpus the texts rank")] = None,
    context: Annotated[str | None, typer.Option("--context", help="question answering: the context the questions ask about; reranking: the passage each query scores")] = None,
    format: Annotated[Listing, typer.Option("--format", "-f", help="text, or json: one JSON object per line")] = Listing.text,
    max_new_tokens: Annotated[int | None, typer.Option(help="generating tasks: new tokens at most")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="generating tasks: sample instead of greedy")] = False,
    temperature: Annotated[float | None, typer.Option(help="with --sample: the softmax temperature")] = None,
    top_p: Annotated[float | None, typer.Option(help="with --sample: nucleus sampling's probability mass")] = None,
) -> None:
    """Try a trained run on a few inputs: labels with scores, generated text, chat replies, answers, mask fills,
    a corpus ranked for each query (embeddings, reranking: `pipeline predict RUN "query" --file corpus.jsonl`)."""
    from pipeline.training.inference import predict as predict_all
    from pipeline.training.inference import read_corpus, read_inputs, run_task

    _logging(quiet=True)
    task = run_task(run)
    inputs: list[Any] = list(texts or [])
    ranks = file is not None and TASKS[task].sentences is not None  # the texts are queries, the file what they rank
    if TASKS[task].inputs > 1 and not ranks:  # question answering: (question, context); reranking: (query, passage)
        if inputs and not context:
            raise SpecError(f"predict: {task} needs --context TEXT, the second text of each pair (or --file "
                            f"{'CORPUS' if TASKS[task].sentences else 'JSONL'})")
        inputs = [(question, context) for question in inputs]
    corpus = read_corpus(file) if ranks else None
    if file and not ranks:
        inputs += read_inputs(file, task)
    if not inputs:
        raise SpecError("predict: no inputs; give texts after the run folder, or --file FILE")
    if (temperature is not None or top_p is not None) and not sample:
        raise SpecError("predict: --temperature and --top-p shape sampling; add --sample (greedy by default)")
    options = {"max_new_tokens": max_new_tokens, "do_sample": sample or None, "temperature": temperature, "top_p": top_p}
    generation = {key: value for key, value in options.items() if value is not None}
    for prediction in predict_all(run, inputs, task, generation=generation, corpus=corpus):
        typer.echo(json.dumps(prediction, default=str) if format is Listing.json else TASKS[task].said(prediction))


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="a run folder")],
    data: Annotated[Path, typer.Argument(help="a data file with the columns the run trained on")],
    format: Annotated[Listing, typer.Option("--format", "-f", help="text or json")] = Listing.text,
) -> None:
    """The task's metrics of a trained run on another data file (loss, accuracy and F1, perplexity, ...);
    for a classifier also precision, recall and F1 per class and the confusion matrix (a PNG in the run folder)."""
    from pipeline.io.runs import plot_confusion
    from pipeline.training.inference import evaluation

    _logging(quiet=True)
    metrics, report = evaluation(run, str(data.absolute()))
    metrics = _final(metrics)
    picture = run / f"confusion-{data.stem}.png" if report and run.is_dir() and os.access(run, os.W_OK) else None
    if picture is not None:
        plot_confusion(report["confusion"], picture, f"{run.name} on {data.name}")
    if format is Listing.json:
        typer.echo(json.dumps(metrics | (report or {}), indent=2))
        return
    typer.echo(_table([(k, _number(v)) for k, v in metrics.items()], ("metric", "value")))
    if report:
        names = ("class", "precision", "recall", "f1", "support")
        typer.echo("\nper class\n" + _table([tuple(_number(row[n]) for n in names) for row in report["classes"]], names))
        confusion = report["confusion"]
        rows = [(name, *counts) for name, counts in zip(confusion["labels"], confusion["matrix"])]
        typer.echo("\nconfusion (rows: true class, columns: predicted)\n"
                   + _table(rows, ("true \\ predicted", *confusion["labels"])))
        if picture:
            typer.echo(f"\nconfusion matrix drawn in {picture}")


@app.command()
def merge(
    source: Annotated[Path, typer.Argument(help="a run folder or adapter folder")],
    target: Annotated[Path, typer.Argument(help="where the merged model goes")],
) -> None:
    """Merge LoRA adapters into the base model for zero-overhead serving (plain transformers)."""
    from pipeline.training.saved import merge_dir

    _logging()
    merge_dir(source, target)
    typer.echo(f"merged {source} into {target}: load it with AutoModel*.from_pretrained({str(target)!r})")


def main() -> None:
    """Entry point: our errors become a plain message and exit code 2 (``--debug`` shows a traceback)."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except Interrupted as e:
        if debug:
            raise
        if main_process():  # under torchrun every rank stops; one says so
            typer.echo(f"\n{e}", err=True)
            if e.checkpoint:
                typer.echo("resume: the same command with --set checkpoint=true", err=True)
        raise SystemExit(128 + e.signal) from None
    except PipelineError as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
