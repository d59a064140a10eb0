"""Runs written into folders, and sweeps of them: the CLI's `train` and `sweep`, as a Python API.

``train_into`` trains one spec into its run folder (the run's record beside the model);
``sweep`` trains variants of a spec (every grid combination, random draws, or Optuna's
suggestions) and returns one record per trial, writing ``results.csv``/``results.md`` and
``sweep.png`` into the sweep's folder.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import SpecError
from pipeline.core.frozen import evolve
from pipeline.core.hardware import Hardware
from pipeline.core.search import Range, better, parse_range, random_trials, suggest
from pipeline.core.search import grid as combinations
from pipeline.core.spec import Spec
from pipeline.io.files import plan, with_settings
from pipeline.io.runs import final_metrics, guard, plot_sweep, run_id, spec_document, write_results, write_run
from pipeline.tasks import TASKS

__all__ = ["main_process", "sweep", "sweep_folder", "sweep_metric", "train_into"]

log = logging.getLogger("pipeline")


def main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch (always, in a single process): the one that writes."""
    return os.environ.get("RANK", "0") == "0"


def train_into(spec: Spec, hardware: Hardware, force: bool = False, output: str | Path | None = None,
               parent: str | Path | None = None, callbacks: tuple[Any, ...] = ()) -> tuple[str, Path, Any]:
    """Train one spec into its run folder: ``output``, else ``parent/<run id>`` (a sweep's runs), else the
    spec's ``output_dir``, else ``runs/<run id>``. Returns (run id, folder, finished run).

    Raises `SpecError` for a folder that holds another run (unless ``force``, which removes that
    run's checkpoints). What the run falls back on is logged at INFO on the ``pipeline`` logger.
    """
    from pipeline.training.stages import adapt, checkpoints, load, quantize, start, train

    # The run id leaves output_dir out; a placeholder lets a spec that saves checkpoints be planned.
    placeholder = evolve(spec, training={**spec.training, "output_dir": spec.training.get("output_dir") or "runs"})
    planned = plan(placeholder, hardware)
    identity = run_id(placeholder, planned)
    if output or parent:
        folder = Path(output or Path(parent) / identity)
    else:
        folder = Path(spec.training.get("output_dir") or Path("runs") / identity)
    if not force:
        guard(folder, identity)  # another run's folder is refused before anything loads
    spec = evolve(spec, training={**spec.training, "output_dir": str(folder)})
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer's progress; stdout carries the results
        loaded = load(start(spec, hardware, callbacks))  # its checks first: a refused spec announces no run
    removed = guard(folder, identity, force) if force else []  # and removes nothing of another run's
    if main_process():
        log.info("run %s -> %s", identity, folder)
        if removed:
            log.info("note: --force: removed %s of the run that was in %s", ", ".join(removed), folder)
        for note in planned.notes:  # what fell back or is ignored, as `pipeline plan` says it
            log.info("note: %s", note)
        saved, _ = checkpoints(folder)
        if saved and not spec.checkpoint:
            log.info("note: %s holds %s of this run; add --set checkpoint=true to resume from it (this run "
                     "starts over)", folder, saved[-1].name)
    with contextlib.redirect_stdout(sys.stderr):
        run = train(adapt(quantize(loaded)))  # fine_tune, announced between its load and the rest
    if main_process():
        write_run(folder, identity, run)
    return identity, folder, run


def sweep_metric(spec: Spec, metric: str | None = None, maximize: bool | None = None) -> tuple[str, str]:
    """The metric that ranks the trials (default ``eval_loss``, ``train_loss`` without validation data), checked
    against what the runs will report, and which way is better (`better`: ``maximize`` if given, else the
    metric's). Raises `SpecError` for a metric the runs will not report, or one of unknown direction."""
    found = TASKS[spec.task].reported(spec.validation is not None, spec.metrics is not None)
    metric = metric or ("eval_loss" if spec.validation is not None else "train_loss")
    if found is not None and metric not in found:
        hint = "" if spec.validation is not None else "; eval_* metrics need validation data (the spec's validation)"
        raise SpecError(f"--metric {metric!r}: runs of {spec.task} report {', '.join(sorted(found))}{hint}")
    return metric, better(metric, maximize)


def sweep(
    spec: Spec,
    grid: dict[str, list[Any]] | None = None,
    ranges: dict[str, Range | str] | None = None,
    search: Literal["grid", "random", "optuna"] = "grid",
    trials: int = 10,
    seed: int = 0,
    metric: str | None = None,
    maximize: bool | None = None,
    output: str | Path | None = None,
    hardware: Hardware | None = None,
    force: bool = False,
    storage: str | None = None,
    study: str | None = None,
) -> list[dict[str, Any]]:
    """Train variants of ``spec``, one record per trial: its run id, the values it tried, its final metrics
    (a trial that fails: its ``error``; one Optuna stopped: ``pruned``) and seconds.

    ``grid`` maps dotted fields (``"training.learning_rate"``) to values to try; ``ranges`` to a `Range`
    or ``"low:high[:log]"`` to draw from (``search="random"`` or ``"optuna"``, Optuna's TPE with median pruning at
    each evaluation). Each run goes to ``output/<run id>`` (default ``runs/sweep-<hash>``), with the
    results (CSV, Markdown) and ``sweep.png`` beside them, written also when the sweep is interrupted.
    ``storage`` (an Optuna storage URL: ``sqlite:///sweep.db``, ``postgresql://...``) shares the Optuna study
    ``study`` (default: the sweep folder's name) with every worker that names it, on any machine: each takes
    the next trial until the study has ``trials``, and writes the results of all of them.

    ``metric`` ranks the trials, higher or lower as ``maximize`` says, else as the metric's name says (`better`:
    losses, perplexity and errors lower, accuracy, F1, NDCG, correlations... higher).

    Raises `SpecError` for a sweep that varies nothing, a field given both values and a range, or a
    ``metric`` the runs will not report (or, with ``maximize`` left out, of unknown direction), before anything
    trains.
    """
    from pipeline.training.detect import detect

    choices = dict(grid or {})
    drawn = {k: r if isinstance(r, Range) else parse_range(f"{k}={r}")[1] for k, r in (ranges or {}).items()}
    if not choices and not drawn:
        raise SpecError("sweep: nothing to vary; give --grid key=v1,v2 or (with --search random/optuna) --range key=low:high")
    if drawn and search == "grid":
        raise SpecError("--range draws values: add --search random or --search optuna (a grid takes --grid values)")
    if storage and search != "optuna":
        raise SpecError(f"--storage shares an Optuna study: add --search optuna (got --search {search})")
    both = sorted(set(choices) & set(drawn))
    if both:
        raise SpecError(f"sweep: --grid and --range both vary {', '.join(both)}; give each field one of them")
    metric, direction = sweep_metric(spec, metric, maximize)  # before anything trains
    folder = Path(output or sweep_folder(spec, choices, drawn, search, trials, seed))
    hardware = hardware if hardware is not None else detect()
    rows: list[dict[str, Any]] = []

    def trial(values: dict[str, Any], callbacks: tuple[Any, ...] = ()) -> dict[str, Any]:
        """One trial's row; a trial that fails is a row with its error, and the sweep goes on."""
        started = time.perf_counter()
        try:
            identity, _, run = train_into(with_settings(spec, values), hardware, force, parent=folder,
                                          callbacks=callbacks)
            metrics = final_metrics(run.metrics)
            del run
            gc.collect()  # the model is gone before the next one loads
        except Exception as e:  # noqa: BLE001  (an interrupt is no Exception: it stops the sweep)
            error = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            log.warning("trial %s failed: %s", values, error)
            rows.append({"run": "-", **values, "error": error, "seconds": round(time.perf_counter() - started, 1)})
            return rows[-1]
        rows.append({"run": identity, **values, **metrics, "seconds": round(time.perf_counter() - started, 1)})
        return rows[-1]

    try:
        if search == "optuna":
            shared = _optuna(trial, choices, drawn, trials, seed, metric, direction, storage, study or folder.name)
            if storage:
                rows[:] = shared()  # every worker's trials, as the study has them
        else:
            for values in combinations(choices) if search == "grid" else random_trials(choices, drawn, trials, seed):
                trial(values)
    finally:
        if rows and main_process():  # what finished is kept, also when the sweep is interrupted
            write_results(folder, rows)
    if main_process():
        plot_sweep(rows, [*choices, *drawn], metric, folder / "sweep.png", log={k for k, r in drawn.items() if r.log},
                   maximize=direction == "maximize")
    return rows


def sweep_folder(spec: Spec, grid: dict[str, list[Any]], ranges: dict[str, Any], search: str, trials: int,
                 seed: int) -> Path:
    """Where a sweep goes by default: ``runs/sweep-<hash of the spec and what it varies>``."""
    key = hashlib.sha256(json.dumps([spec_document(spec), grid, search, str(ranges), trials, seed],
                                    sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path("runs") / f"sweep-{key}"


def _study(optuna: Any, storage: str | None, name: str, **kwargs: Any) -> Any:
    """The study ``name``: created, or loaded where another worker made it. Workers starting together race to
    create the storage's tables (one sees them half made: "table ... already exists"); the loser retries."""
    if storage is None:
        return optuna.create_study(study_name=name, **kwargs)
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(5):
        try:
            return optuna.create_study(storage=storage, study_name=name, load_if_exists=True, **kwargs)
        except SQLAlchemyError:
            time.sleep(0.2 * (attempt + 1) + random.random() / 5)
    return optuna.create_study(storage=storage, study_name=name, load_if_exists=True, **kwargs)  # or its error


def _optuna(trial: Any, choices: dict[str, list[Any]], drawn: dict[str, Range], trials: int, seed: int, metric: str,
            direction: str, storage: str | None = None, name: str = "sweep") -> Any:
    """Optuna's TPE sampler suggests each trial from the ones before; its median pruner stops a trial
    whose metric at an evaluation is worse than the median of earlier trials at that step.

    With a ``storage`` the study ``name`` is shared: created by the first worker (the others load it),
    each worker asking for trials until the study has ``trials`` of them (workers racing for the last one
    may each add one), its sampler seeded at random (with the sweep's seed every worker would suggest the
    same first trials), each trial's result row kept in the study. Returns the rows of the study's trials."""
    try:
        import optuna
    except ImportError:
        raise SpecError("--search optuna needs Optuna: pip install 'pipeline[sweep]' (or optuna)") from None
    from pipeline.training.trainer import Pruning

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    worker = seed if storage is None else int.from_bytes(os.urandom(4), "little")
    study = _study(optuna, storage, name, direction=direction,
                   sampler=optuna.samplers.TPESampler(seed=worker), pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    done = 0
    while (len(study.get_trials(deepcopy=False)) if storage else done) < trials:
        asked = study.ask()
        pruning = Pruning(asked, metric)
        row = trial(suggest(asked, choices, drawn), (pruning,))
        row["pruned"] = pruning.pruned
        asked.set_user_attr("row", row)
        if pruning.pruned:
            study.tell(asked, state=optuna.trial.TrialState.PRUNED)
        elif metric in row:
            study.tell(asked, row[metric])
        else:
            study.tell(asked, state=optuna.trial.TrialState.FAIL)
        done += 1
    return lambda: [t.user_attrs["row"] for t in study.get_trials(deepcopy=False) if "row" in t.user_attrs]
