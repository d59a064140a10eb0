"""Our `TrainingArguments` and `Trainer`: the library's, with the changes each named below (batch
order, losses that accumulate as one batch, resume records, evaluation order).

A module of its own so the Trainer can pickle the arguments class, and so that only the
stages, which import it lazily, pay for importing transformers.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import inspect
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from pipeline.training.hush import hushed

with hushed():  # the Trainer imports peft, which imports bitsandbytes, which says an optional kernel is missing
    import transformers
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from transformers.trainer_utils import unwrap_peft_model

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


class Arguments(transformers.TrainingArguments):
    """`TrainingArguments` whose ``should_save`` is False when ``output_dir`` is empty (a transient model)."""

    @property
    def should_save(self) -> bool:
        return bool(self.output_dir) and super().should_save


SHORT = 64
"""Texts up to this many tokens share one bucket: at such lengths a step costs about the same padded
or not, and sorting short texts by length sorts them by whatever goes with length (the class)."""


def bucket(length: int) -> int:
    """A length's bucket: 0 up to `SHORT` tokens, then one per doubling (65-128, 129-256, ...).

    >>> [bucket(n) for n in (1, 64, 65, 128, 129, 512, 513)]
    [0, 0, 1, 1, 2, 3, 4]
    """
    return max(0, (max(length, 1) - 1) // SHORT).bit_length()


def generator(seed: int, epoch: int) -> torch.Generator:
    """A generator for one epoch's order, the same on every rank and after any resume."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class LengthBuckets(torch.utils.data.Sampler):
    """Batches drawn at random from buckets of similar length (`bucket`), in random order: the longest
    batch first (out of memory early) and the short remainder batch last. The order comes from
    (``seed``, epoch) alone, so every process draws the same one and a resumed run draws the epoch it
    left off in.

    Why buckets and not a sort: a sort over the whole set made batches of nearly one length, and where
    length goes with the class, batches of nearly one class (MiniLM on mixed reviews, five seeds: 0.960
    held-out accuracy sorted, 0.980 in random order, 0.993 in buckets); sorting within random
    mega-batches (the library's) does the same within each. Random order within a bucket keeps classes
    mixed, and whole doublings of length still keep a 250-token review out of a batch of 20-token ones,
    which is where padding costs (3.1x random order's speed there, 0.8x the sort's: bench/RESULTS.md).

    The data loader cuts what this yields into batches again, by count: a remainder batch anywhere
    but last would shift every batch after it across two buckets.

    ``clock``: the epoch reached (the Trainer's state), read when an epoch's batches are drawn; the epoch is the
    later of it and what ``set_epoch`` last said, since either may not reach the sampler and neither runs
    ahead. Under several processes a run resumed mid-epoch never calls ``set_epoch`` here: accelerate's
    ``skip_first_batches`` wraps the sampler three deep (skip, shard, batch) and the Trainer's call reaches
    two, so a run resumed in its second epoch drew the first epoch's order again (2 processes, 10 epochs:
    adapter weights 0.087 apart from the uninterrupted run's). Driven by hand, only ``set_epoch`` speaks.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, clock: Callable[[], float] | None = None):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0
        self.clock = clock

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in order."""
        random = generator(self.seed, max(self.epoch, int(self.clock()) if self.clock else 0))
        buckets: dict[int, list[int]] = {}
        for i in torch.randperm(len(self.lengths), generator=random).tolist():
            buckets.setdefault(bucket(self.lengths[i]), []).append(i)
        size, batches, rest = self.batch_size, [], []
        for key in sorted(buckets, reverse=True):  # leftovers longest first: the remainder is short
            members = buckets[key]
            whole = len(members) // size * size
            batches += [members[i : i + size] for i in range(0, whole, size)]
            rest += members[whole:]
        batches += [rest[i : i + size] for i in range(0, len(rest), size)]  # mixed leftovers
        if len(batches) < 2:
            return batches
        tail = [batches.pop()] if len(batches[-1]) < size else []
        longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
        first = batches.pop(longest)
        middle = [batches[b] for b in torch.randperm(len(batches), generator=random).tolist()]
        return [first, *middle, *tail]

    def __iter__(self) -> Iterator[int]:
        return iter([index for batch in self.batches() for index in batch])


def counts_items(model: Any) -> bool:
    """Whether ``model``'s loss divides by the Trainer's ``num_items_in_batch`` (the items of the whole
    accumulated batch) rather than averaging over its own batch.

    The Trainer takes any ``forward(**kwargs)`` for the first and then skips dividing the loss by the
    accumulation steps; but BERT's classification, QA and masked-LM heads and BART's accept
    ``**kwargs`` and still average their own loss (transformers issue 47688), so 8 x 2 stepped twice
    as far as one batch of 16. The forward's source says which: only the heads that hand their
    keyword arguments to ``self.loss_function`` count the accumulated items.
    """
    forward = getattr(type(model), "forward", None)
    try:
        source = inspect.getsource(forward)
    except (OSError, TypeError):
        return False
    return "num_items_in_batch" in source or bool(re.search(r"loss_function\([^)]*\*\*\w+", source))


def label_items(inputs: dict) -> torch.Tensor | None:
    """The items a self-averaging head averaged its loss over: its labels other than -100."""
    labels = inputs.get("labels")
    return None if labels is None else labels.ne(-100).sum()


def answer_loss(model, inputs: dict) -> tuple[torch.Tensor, Any]:
    """Question answering's loss, the mean of the start and end cross-entropies over each window's real
    tokens: the library's heads also spread probability over the padding, so a window's loss changed
    with the longest window of its batch (8 x 2 accumulated did not step as one batch of 16)."""
    targets = [inputs["start_positions"], inputs["end_positions"]]
    outputs = model(**{k: v for k, v in inputs.items() if k not in ("start_positions", "end_positions")})
    padding = inputs["attention_mask"] == 0 if "attention_mask" in inputs else None
    losses = []
    for logits, target in zip((outputs.start_logits, outputs.end_logits), targets):
        logits = logits.float()
        if padding is not None:
            logits = logits.masked_fill(padding, torch.finfo(logits.dtype).min)
        losses.append(torch.nn.functional.cross_entropy(logits, target.view(-1).to(logits.device)))
    loss = (losses[0] + losses[1]) / 2
    outputs["loss"] = loss
    return loss, outputs


LOSS_RECORD = "pipeline_loss"
"""In each checkpoint's trainer state (``stateful_callbacks``, written with it, so a checkpoint complete
enough to resume from has it): the step and the sum of the step losses up to it, so a resumed run
reports ``train_loss`` over all its steps (the Trainer's covers only the steps since it resumed); and
the run's lineage (`runs.lineage`), so a checkpoint resumes only the run it belongs to."""


def checkpoint_record(folder: str | Path) -> dict:
    """`LOSS_RECORD` of a checkpoint folder (empty when it has none: written by an earlier version)."""
    try:
        state = json.loads((Path(folder) / "trainer_state.json").read_text())
        return dict(state["stateful_callbacks"][LOSS_RECORD])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


class Records:
    """What each of our trainers adds to the library's (mixed in before it): ``train_loss`` over the whole run
    when it resumes from a checkpoint, the run's lineage in each checkpoint, and an evaluation that leaves the
    random generators as it found them."""

    earlier = (0, 0.0)
    """(step, sum of step losses) of the checkpoint this session resumed from."""
    lineage: str | None = None
    """The run's `runs.lineage`, written into each checkpoint."""

    def train(self, resume_from_checkpoint=None, **kwargs):
        self.earlier = (0, 0.0)
        if isinstance(resume_from_checkpoint, str):
            saved = checkpoint_record(resume_from_checkpoint)
            if "loss_sum" in saved:
                self.earlier = (int(saved["step"]), float(saved["loss_sum"]))
            else:
                log.info("%s has no loss record: train_loss covers the resumed steps only", resume_from_checkpoint)
        checks = logging.getLogger("transformers.trainer_utils")
        checks.addFilter(_not_our_fractions)  # only while we train: the application's own runs keep the warning
        try:
            result = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            checks.removeFilter(_not_our_fractions)
        step, total = self.earlier
        if not step or result.global_step <= step:
            return result
        whole = (total + result.training_loss * (result.global_step - step)) / result.global_step
        return transformers.trainer_utils.TrainOutput(result.global_step, whole, {**result.metrics, "train_loss": whole})

    def _save_checkpoint(self, model, trial):
        total = self.earlier[1] + self._total_loss_scalar + float(self._tr_loss)
        self.state.stateful_callbacks[LOSS_RECORD] = {"step": self.state.global_step, "loss_sum": total,
                                                      "lineage": self.lineage}
        super()._save_checkpoint(model, trial)

    def evaluate(self, *args, **kwargs):
        """The library's evaluation, leaving the random generators as it found them: its data loader draws a
        seed from the global generator, which moved every dropout mask after an evaluation between epochs
        (training with validation data trained other weights than without)."""
        cpu = torch.random.get_rng_state()
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            torch.random.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)


class Trainer(Records, transformers.Trainer):
    """The `Trainer`, with batches from length buckets (`LengthBuckets`), losses that accumulate as one
    large batch (`counts_items`, `answer_loss`), evaluation in the set's order, and our `Records`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        inner = unwrap_peft_model(self.accelerator.unwrap_model(self.model))  # the model the Trainer inspects
        self.averages_own_loss = self.model_accepts_loss_kwargs and not counts_items(inner)
        """The Trainer will not divide this model's loss by the accumulation steps, yet the model averages
        it over its own batch: `compute_loss` weighs it by its share of the accumulated items instead."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "start_positions" in inputs:
            loss, outputs = answer_loss(model, inputs)
            return (loss, outputs) if return_outputs else loss
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        if self.averages_own_loss and model.training and num_items_in_batch is not None:
            items = label_items(inputs)
            if items is not None:  # this batch's mean, weighted as its share of the accumulated batch
                loss = loss * items.to(loss.device) / num_items_in_batch
        return (loss, outputs) if return_outputs else loss

    token_mean: str | None = None
    """A token loss whose evaluation is a mean over every held-out token (``eval_loss``, and ``eval_perplexity``, its
    exp): ``"shifted"`` (a causal LM: position i predicts token i + 1) or ``"aligned"``; ``None``: the library's
    mean of the batches' means, weighted by their examples (a per-example loss)."""

    def evaluation_loop(self, *args, **kwargs):
        """The library's loop; with `token_mean`, its loss replaced by the mean over the tokens of every batch (a
        mean of batch means weighs a short row's tokens more, and changed with the evaluation batch size)."""
        self._tokens = [0.0, 0.0] if self.token_mean else None
        try:
            output = super().evaluation_loop(*args, **kwargs)
        finally:
            counted, self._tokens = self._tokens, None
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        if counted is not None and f"{prefix}_loss" in output.metrics:
            total = torch.tensor(counted, dtype=torch.float64, device=self.args.device)
            total = self.accelerator.reduce(total, reduction="sum")  # each process's own batches
            if total[1] > 0:
                output.metrics[f"{prefix}_loss"] = (total[0] / total[1]).item()
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if getattr(self, "_tokens", None) is not None and loss is not None and inputs.get("labels") is not None:
            target = inputs["labels"][..., 1:] if self.token_mean == "shifted" else inputs["labels"]
            tokens = float(target.ne(-100).sum())
            self._tokens[0] += float(loss) * tokens
            self._tokens[1] += tokens
        return loss, logits, labels

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            # the state's epoch: the finished epochs (and a fraction, resumed mid-epoch) when an epoch begins
            return LengthBuckets(sampler.lengths, batch, self.args.seed, clock=lambda: self.state.epoch or 0)
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
    """Our `Progress` in place of the Trainer's bars or printed dicts (``disable_tqdm``, or stderr not a terminal:
    no bars at all)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if trainer.pop_callback(ProgressCallback) or trainer.pop_callback(PrinterCallback):  # either prints dicts
        # bars on a terminal only: a log file or a pipe would get every redraw
        trainer.add_callback(Progress(bars=not trainer.args.disable_tqdm and sys.stderr.isatty()))


class Pruning(transformers.TrainerCallback):
    """Reports each evaluation's ``metric`` to an Optuna trial and stops training when the study's
    pruner finds the trial doing worse than earlier trials had at the same step."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric, self.pruned, self.reported = trial, metric, False, set()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # the evaluation after training repeats the last epoch's step: Optuna keeps the first and warns
        if metrics and self.metric in metrics and not self.pruned and state.global_step not in self.reported:
            self.reported.add(state.global_step)
            self.trial.report(float(metrics[self.metric]), state.global_step)
            if self.trial.should_prune():
                self.pruned = control.should_training_stop = True


class StopOnSignal(transformers.TrainerCallback):
    """SIGINT / SIGTERM stop training at the next step boundary, saving a checkpoint when there is an
    ``output_dir``; a second signal stops at once (the default handlers are back by then)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        """The signal training stopped for, the same on every rank."""
        self.received: int | None = None
        """The signal this process received."""

    def on_step_end(self, args, state, control, **kwargs):
        signum = self.received
        if torch.distributed.is_available() and torch.distributed.is_initialized() and args.world_size > 1:
            # A signal reaches the ranks at different steps (a node's only, when one node is preempted): all stop
            # after the same step, or those going on wait for the stopped ones in their next collective. One that
            # comes while this reduce waits stays in `received` for the next step's.
            flag = torch.tensor([signum or 0], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            signum = int(flag.item()) or None
        if signum is not None:
            self.signal = signum
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
            self.received = signum
            for s, handler in previous.items():
                signal.signal(s, handler)

        for s in previous:
            signal.signal(s, stop)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def close_group_at_exit() -> None:
    """Under torchrun: end the ranks' process group when Python exits, before the interpreter finalizes.

    The Trainer starts the group and nothing ends it. Left to the interpreter's shutdown, a gloo worker
    thread still dropping the last collective's tensors (the Trainer's closing all-gather) asks for the
    GIL after finalizing has begun: Python ends the thread inside a C++ destructor and the rank aborts
    ("terminate called without an active exception"), so torchrun reports the finished run as failed
    and stops the other ranks, mid-save: 5 of 70 launches of a ZeRO-2 run from the test suite (gdb on
    the core dump), 0 of 50 with this. Destroying the group and collecting what holds it (the Trainer's references
    form cycles) joins gloo's threads while Python still runs; a script that goes on using the group
    after training keeps it until it exits.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        _register_close()


@functools.cache
def _register_close() -> None:
    atexit.register(_close_group)


def _close_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        gc.collect()


@contextlib.contextmanager
def whole_model(trainer: transformers.Trainer) -> Iterator[None]:
    """Under ZeRO-3, the model's weights gathered whole on every rank (each holds a shard of every large one;
    `save_pretrained` alone writes those empty): enter it on every rank, since gathering is a collective.
    Elsewhere it does nothing."""
    engine = getattr(trainer, "deepspeed", None)
    if engine is None or engine.zero_optimization_stage() != 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(trainer.model.parameters()), modifier_rank=None):
        yield


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
