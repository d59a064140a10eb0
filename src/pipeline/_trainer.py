"""Our `TrainingArguments` and `Trainer`: the library's, with two changes each named below.

A module of its own so the Trainer can pickle the arguments class, and so that only the
stages, which import it lazily, pay for importing transformers.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers
from transformers.trainer_pt_utils import LengthGroupedSampler

log = logging.getLogger("pipeline")


def _not_our_fractions(record: logging.LogRecord) -> bool:
    """Drop the Trainer's resume warning when all it finds is our steps given as a fraction of the run
    (``logging_steps: 0.02``, the plan's default), which its checkpoint stores as a count."""
    message = record.getMessage()
    if "do not match the ones in the `trainer_state.json`" not in message:
        return True
    found = [line.strip() for line in message.splitlines()[1:] if line.strip()]
    return not all(line.split(":")[0] in ("logging_steps", "eval_steps", "save_steps") and ": 0." in line
                   for line in found)


logging.getLogger("transformers.trainer_utils").addFilter(_not_our_fractions)


class Arguments(transformers.TrainingArguments):
    """`TrainingArguments` whose ``should_save`` is False when ``output_dir`` is empty (a transient model)."""

    @property
    def should_save(self) -> bool:
        return bool(self.output_dir) and super().should_save


class ShuffledBatches(torch.utils.data.Sampler):
    """Batches of the most similar lengths in the whole set, in shuffled order, the longest batch first
    (out of memory early) and the short remainder batch last. Equal lengths are shuffled among
    themselves each epoch.

    The data loader cuts what this yields into batches again, by count: a remainder batch anywhere
    but last would shift every batch after it across two length groups (MiniLM on 600 mixed
    reviews: 1.5x the padded tokens of a whole-set sort).

    transformers' grouping sorts only within mega-batches of at most a quarter of the set, so a
    long text lands in many batches and pads them (MiniLM on 600 mixed reviews: 1.7x the time of
    a global sort, bench/RESULTS.md); and it keeps each mega-batch sorted long to short: a
    curriculum nobody asked for, which costs accuracy when there are few epochs.
    """

    def __init__(self, grouped: LengthGroupedSampler, batch_size: int):
        self.grouped, self.batch_size = grouped, batch_size

    def __len__(self) -> int:
        return len(self.grouped)

    def __iter__(self) -> Iterator[int]:
        lengths = self.grouped.lengths
        indices = torch.randperm(len(lengths), generator=self.grouped.generator).tolist()
        indices.sort(key=lambda i: lengths[i], reverse=True)  # stable: ties keep their random order
        batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        middle = (torch.randperm(max(len(batches) - 2, 0)) + 1).tolist()
        order = [0, *middle, len(batches) - 1] if len(batches) > 1 else list(range(len(batches)))
        return iter([index for b in order for index in batches[b]])


LOSS_RECORD = "pipeline_loss"
"""In each checkpoint's trainer state (``stateful_callbacks``, written with it, so a checkpoint complete
enough to resume from has it): the step and the sum of the step losses up to it, so a resumed run
reports ``train_loss`` over all its steps (the Trainer's covers only the steps since it resumed)."""


class Trainer(transformers.Trainer):
    """The `Trainer`, with length-grouped batches in shuffled order (`ShuffledBatches`), evaluation in
    the set's order, and ``train_loss`` over the whole run when it resumes from a checkpoint."""

    earlier = (0, 0.0)
    """(step, sum of step losses) of the checkpoint this session resumed from."""

    def train(self, resume_from_checkpoint=None, **kwargs):
        self.earlier = (0, 0.0)
        if isinstance(resume_from_checkpoint, str):
            try:
                state = json.loads((Path(resume_from_checkpoint) / "trainer_state.json").read_text())
                saved = state["stateful_callbacks"][LOSS_RECORD]
                self.earlier = (int(saved["step"]), float(saved["loss_sum"]))
            except (OSError, ValueError, KeyError, TypeError):
                log.info("%s has no loss record: train_loss covers the resumed steps only", resume_from_checkpoint)
        result = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        step, total = self.earlier
        if not step or result.global_step <= step:
            return result
        whole = (total + result.training_loss * (result.global_step - step)) / result.global_step
        return transformers.trainer_utils.TrainOutput(result.global_step, whole, {**result.metrics, "train_loss": whole})

    def _save_checkpoint(self, model, trial):
        total = self.earlier[1] + self._total_loss_scalar + float(self._tr_loss)
        self.state.stateful_callbacks[LOSS_RECORD] = {"step": self.state.global_step, "loss_sum": total}
        super()._save_checkpoint(model, trial)

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            return ShuffledBatches(sampler, self.args.train_batch_size * self.args.gradient_accumulation_steps)
        return sampler

    def _get_eval_sampler(self, eval_dataset):
        """The set's order, where the library's length grouping would shuffle it: our evaluation sets
        come sorted by length already (`stages.scoring`), and scoring answers as text needs each
        prediction's window. Several processes: none, as the library does without grouping (its
        loader shards the set in order and gathers the predictions back in order)."""
        if eval_dataset is None or not hasattr(eval_dataset, "__len__") or self.args.world_size > 1:
            return None
        return torch.utils.data.SequentialSampler(eval_dataset)


class Progress(transformers.trainer_callback.ProgressCallback):
    """One training bar with the latest loss and learning rate in it, instead of a dict printed
    into it at every log; evaluation runs in a bar that goes away when it is done. The dicts
    go to the ``pipeline`` logger at DEBUG (``pipeline train -v``)."""

    SHOWN = {"loss": "loss", "eval_loss": "eval_loss", "learning_rate": "lr"}

    def __init__(self, bars: bool = True):
        super().__init__()
        self.bars = bars
        """False (``disable_tqdm``): no bars, and no dicts printed in their place either."""

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.postfix: dict[str, str] = {}
        if self.bars:
            super().on_train_begin(args, state, control, **kwargs)
        else:  # the same bookkeeping, drawn nowhere
            self.training_bar = tqdm(total=state.max_steps, disable=True) if state.is_world_process_zero else None
            self.current_step = 0

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if not self.bars:
            return
        if state.is_world_process_zero and self.prediction_bar is None:  # during training or after: goes away
            from tqdm.auto import tqdm

            total = len(eval_dataloader) if eval_dataloader is not None and hasattr(eval_dataloader, "__len__") else None
            self.prediction_bar = tqdm(total=total, leave=False, dynamic_ncols=True, desc="evaluating")
        super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            log.debug("%s", {key: round(v, 6) if isinstance(v, float) else v for key, v in logs.items()})  # -v
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        shown = {short: f"{logs[key]:.3g}" for key, short in self.SHOWN.items() if isinstance(logs.get(key), float)}
        if shown:
            self.postfix.update(shown)
            self.training_bar.set_postfix(self.postfix, refresh=False)


def quiet_progress(trainer: transformers.Trainer) -> None:
    """Our `Progress` in place of the Trainer's bars or printed dicts (``disable_tqdm``: no bars at all)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if trainer.pop_callback(ProgressCallback) or trainer.pop_callback(PrinterCallback):  # either prints dicts
        trainer.add_callback(Progress(bars=not trainer.args.disable_tqdm))


class Pruning(transformers.TrainerCallback):
    """Reports each evaluation's ``metric`` to an Optuna trial and stops training when the study's
    pruner finds the trial doing worse than earlier trials had at the same step."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric, self.pruned = trial, metric, False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and self.metric in metrics and not self.pruned:
            self.trial.report(float(metrics[self.metric]), state.global_step)
            if self.trial.should_prune():
                self.pruned = control.should_training_stop = True


class StopOnSignal(transformers.TrainerCallback):
    """SIGINT / SIGTERM stop training at the next step boundary, saving a checkpoint when there is an
    ``output_dir``; a second signal stops at once (the default handlers are back by then)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.signal is not None:
            control.should_training_stop = True
            control.should_save = bool(args.output_dir)
        return control

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The handlers, for the duration of training (only the main thread may install them)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def stop(signum, frame):
            self.signal = signum
            for s, handler in previous.items():
                signal.signal(s, handler)

        for s in previous:
            signal.signal(s, stop)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Python's cycle collector skips every object alive now (the libraries, the model, the data) until
    the block ends: the collection the Trainer forces at the start (about 0.3 s with torch, transformers
    and datasets loaded) and the full collections between steps then cost next to nothing."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
