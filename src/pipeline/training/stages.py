"""The stages: one frozen `Run` flows through ``load ▸ quantize ▸ adapt ▸ train``.

Every stage takes a `Run` and returns a new one (``dataclasses.replace``); compose your
own chains from them with ``toolz.compose_left``. torch, transformers and peft are
imported inside the stages, never at module import.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from toolz import compose_left

from pipeline.training import host as cpu
from pipeline.io import disk as disk
from pipeline.io import data
from pipeline.training.hush import hushed
from pipeline.core.frozen import FrozenDict, thaw
from pipeline.core.plan import Plan
from pipeline.errors import DataError, Interrupted, SpecError
from pipeline.core.hardware import Hardware
from pipeline.training.detect import detect
from pipeline.core.spec import Spec
from pipeline.tasks import TASKS, Labels

__all__ = ["Parameters", "Run", "adapt", "fine_tune", "load", "merge", "quantize", "start", "train"]

log = logging.getLogger("pipeline")

notice = logging.getLogger("pipeline.notice")
"""What `pipeline train` shows by default: the trainable-parameter count after `adapt` (as the seed prints it)
and the checkpoint a run resumes from. A library's logger: from Python it shows where logging is set up
(``logging.basicConfig(level=logging.INFO)``); ``setLevel(logging.WARNING)`` on it silences it."""


@dataclass(frozen=True)
class Parameters:
    """Trainable and total parameter counts of a model."""

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} of {self.total:,} ({self.fraction:.2%})"


@dataclass(frozen=True)
class Run:
    """One run as it moves through the stages: what was asked, what was derived, what exists."""

    spec: Spec
    hardware: Hardware
    plan: Plan
    tokenizer: Any = None
    model: Any = None
    train_data: Any = None
    """The training data as a `datasets.Dataset`, untokenized."""
    eval_data: Any = None
    labels: Labels | None = None
    parameters: Parameters | None = None
    metrics: FrozenDict = field(default_factory=FrozenDict)
    """Final training and evaluation metrics (``train_loss``, ``eval_loss``, ...)."""
    log_history: tuple[FrozenDict, ...] = ()
    teacher: Any = None
    """The frozen teacher model when the spec distills (``spec.teacher``)."""
    callbacks: tuple[Any, ...] = ()
    """`transformers.TrainerCallback` objects `train` adds to the Trainer's (a sweep's pruning, your own)."""


def _take(run: Run, stage: str) -> None:
    """Mark ``run`` used up by ``stage``, which changes its model in place (peft injects adapters into it,
    training moves its weights): a second stage given the same run would build on the changed model.
    Raises `SpecError` if another stage took it already."""
    taken = run.__dict__.get("_taken_by")
    if taken:
        raise SpecError(
            f"{stage}: this Run was already given to {taken}, which changed its model in place; continue "
            f"from the Run {taken} returned, or load again for a separate branch (e.g. "
            f"{stage}(load(spec)) for each branch)"
        )
    object.__setattr__(run, "_taken_by", stage)  # frozen to users; the mark is not a field (replace drops it)


def start(spec: Spec, hardware: Hardware | None = None, callbacks: tuple[Any, ...] = ()) -> Run:
    """A `Run` for ``spec``, planned for ``hardware`` (default: this machine, via `detect`), with Trainer
    ``callbacks`` of your own."""
    from pipeline.training.planning import plan as planned

    hardware = hardware if hardware is not None else detect()
    return Run(spec=spec, hardware=hardware, plan=planned(spec, hardware), callbacks=tuple(callbacks))


def _seed(run: Run) -> int:
    return run.plan.training_args.get("seed", 42)


@hushed()
def load(run: Run | Spec) -> Run:
    """Check and read the data, seed, then load the tokenizer and the model (4-bit when the plan says).

    Accepts a `Spec` too (planned for this machine). Raises `DataError` / `SpecError`
    with every problem found (see `preflight`) before any model loads.
    """
    from transformers import set_seed

    from pipeline.io.preflight import preflight
    from pipeline.training.trainer import Arguments

    run = run if isinstance(run, Run) else start(run)
    spec = run.spec
    train_data, eval_data, labels = preflight(spec, run.plan, Arguments)
    cpu.host_memory(bool(run.plan.lean_memory))  # before loading: quantizing on load frees much of what it reads

    set_seed(_seed(run))  # before the model is created, so its new weights are reproducible
    tokenizer, model = _load_pretrained(run, labels)
    if run.plan.quantization and not run.hardware.accelerator:
        cpu.own_unquantized(_parts(model))
    log.info("loaded %s for %s", type(model).__name__, spec.task)
    teacher = _load_teacher(run) if spec.teacher is not None else None
    return replace(
        run, tokenizer=tokenizer, model=model, train_data=train_data, eval_data=eval_data, labels=labels,
        teacher=teacher,
    )


def _load_teacher(run: Run) -> Any:
    """The teacher, frozen in eval mode: a loaded model as it is, a LoRA run's adapter merged into its base,
    else the task's model class from the folder or hub id, 4-bit when the plan quantizes the student (it
    only runs forward). A teacher without trained weights for the task (a new, random head) is refused."""
    from pipeline.io.runs import is_adapter
    from pipeline.training.saved import merged

    spec = run.spec
    if TASKS[spec.task].sentences is not None:
        from pipeline.training import sentences

        teacher = sentences.teacher(spec.teacher, run.plan.dtype, run.hardware.cuda)
    elif isinstance(spec.teacher, tuple):
        teacher = spec.teacher[0]
    elif is_adapter(spec.teacher):
        teacher = merged(spec.teacher, dtype=run.plan.dtype)
    else:
        name = saved_class(spec.task)
        teacher, info = _pretrained(
            run, getattr(library(), name), spec.teacher, {"dtype": run.plan.dtype, "output_loading_info": True}
        )
        untrained = sorted(info.get("missing_keys") or ())
        if untrained:
            raise SpecError(
                f"teacher: {spec.teacher!r} has no trained weights for {', '.join(untrained[:3])}"
                f"{', ...' if len(untrained) > 3 else ''} (a new {name} head); a teacher must already do "
                f"{spec.task}: fine-tune one first (e.g. pipeline train with the same task and data)"
            )
    log.info("loaded teacher %s", type(teacher).__name__)
    return teacher.eval().requires_grad_(False)


def _load_pretrained(run: Run, labels: Labels | None) -> tuple[Any, Any]:
    import transformers

    spec, task = run.spec, TASKS[run.spec.task]
    if task.sentences is not None:
        from pipeline.training import sentences

        options = dict(task.sentences.options)
        quantization = run.plan.quantization and _quantization(
            run.plan.quantization, getattr(library(), task.sentences.backbone), spec.base, options)
        model = sentences.load(task.model_class, spec.base, run.plan.dtype, run.hardware.cuda, quantization or None,
                               **options)
        if {"pooling", "normalize"} <= task.fields:
            model = sentences.pooled(model, spec.pooling, spec.normalize)
        tokenizer = model.tokenizer
    elif isinstance(spec.base, tuple):
        model, tokenizer = spec.base
        tokenizer = copy.deepcopy(tokenizer)  # we may set a pad token: never change the caller's
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(spec.base)
        kwargs: dict[str, Any] = labels.config() if labels else {}
        kwargs["dtype"] = run.plan.dtype  # "auto" or a torch dtype's name; transformers takes both
        pretrained = lambda model_class, name, kwargs: _pretrained(run, model_class, name, kwargs)  # noqa: E731
        if task.load:
            model = task.load(pretrained, library(), spec, kwargs)
        else:
            model = pretrained(getattr(library(), task.model_class), spec.base, kwargs)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # decoder-only models often have no pad token
    if task.prepare_tokenizer:
        task.prepare_tokenizer(tokenizer, spec)
    for part in _parts(model):  # the pad token given to the tokenizer, said to the model (and its generation)
        for config in (part.config, getattr(part, "generation_config", None)):
            if config is not None and config.pad_token_id is None:
                config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def _pretrained(run: Run, model_class: Any, name: str, kwargs: dict[str, Any]) -> Any:
    """``model_class.from_pretrained``, 4-bit when the plan quantizes."""
    if not run.plan.quantization:
        return model_class.from_pretrained(name, **kwargs)
    device = int(os.environ.get("LOCAL_RANK", "0")) if run.hardware.cuda else "cpu"
    quantization = _quantization(run.plan.quantization, model_class, name, kwargs)
    return model_class.from_pretrained(name, quantization_config=quantization, device_map={"": device}, **kwargs)


def _quantization(planned: Any, model_class: Any, name: str, kwargs: dict[str, Any]) -> Any:
    """The plan's `BitsAndBytesConfig`, its skip list added to transformers' own for this model.

    Given a skip list, transformers drops its own (the output embeddings, tied and last
    modules), so heads outside ours (BART's classification_head, ELECTRA's tied
    generator head) would be quantized. Its own are read from a weightless skeleton.
    """
    import torch
    import transformers
    from transformers.quantizers.base import get_keys_to_not_convert

    with torch.device("meta"):
        labels = {k: v for k, v in kwargs.items() if k not in ("dtype", "output_loading_info")}
        skeleton = model_class.from_config(transformers.AutoConfig.from_pretrained(name, **labels))
    values = thaw(planned)
    skips = set(values.get("llm_int8_skip_modules") or ()) | set(get_keys_to_not_convert(skeleton))
    return transformers.BitsAndBytesConfig(**{**values, "llm_int8_skip_modules": sorted(skips)})


def saved_class(task: str) -> str:
    """The transformers auto class that loads one saved model of ``task`` (token detection: its discriminator)."""
    return TASKS[task].load_class


def library() -> Any:
    """What a task's ``load`` and ``collate`` take classes from by name: transformers, and our own models
    (`TokenDetection`)."""
    return _Library()


class _Library:
    def __getattr__(self, name: str) -> Any:
        import transformers

        from pipeline.training import detection

        if name in ("Weighted", "Matched"):
            from pipeline.training import sentences

            return getattr(sentences, name)
        if name == "sentence_transformers":  # with the modules the tasks use loaded
            import sentence_transformers.cross_encoder.evaluation
            import sentence_transformers.cross_encoder.losses
            import sentence_transformers.sentence_transformer.evaluation
            import sentence_transformers.sentence_transformer.losses
            import sentence_transformers.util

            return sentence_transformers
        return getattr(detection, name) if hasattr(detection, name) else getattr(transformers, name)


def _configs(model: Any) -> list[Any]:
    return [m.config for m in _parts(model)]


def _parts(model: Any) -> list[Any]:
    """The transformers models inside ``model`` (two for token detection, one inside a sentence-transformers model)."""
    from pipeline.training.detection import TokenDetection

    if _sentence_model(model):
        from pipeline.training.sentences import transformer

        return [transformer(model)]
    return [model.generator, model.discriminator] if isinstance(model, TokenDetection) else [model]


def _sentence_model(model: Any) -> bool:
    """A sentence-transformers model (without importing that library for the other tasks)."""
    if "sentence_transformers" not in sys.modules:
        return False
    from pipeline.training.sentences import is_sentence_model

    return is_sentence_model(model)


def _each(model: Any, change: Any) -> Any:
    """``model`` with ``change`` applied to each transformers model inside it."""
    from pipeline.training.detection import TokenDetection

    if isinstance(model, TokenDetection):
        return TokenDetection(change(model.generator), change(model.discriminator))
    if _sentence_model(model):
        from pipeline.training.sentences import replaced, transformer

        return replaced(model, change(transformer(model)))
    return change(model)


@hushed()
def quantize(run: Run) -> Run:
    """Prepare a 4/8-bit model for training (k-bit preparation); identity when not quantized.

    An unquantized model is left alone: k-bit preparation would upcast bf16 weights to fp32.
    """
    if not run.plan.quantization:
        return run
    import inspect

    from peft import prepare_model_for_kbit_training

    _take(run, "quantize")

    checkpointing = run.plan.training_args.get("gradient_checkpointing", True)
    # peft 0.22 renamed the argument (the old name warns, a FutureWarning no user can act on); earlier ones know only it.
    renamed = "activation_checkpointing_kwargs" in inspect.signature(prepare_model_for_kbit_training).parameters
    reentrant = {"activation_checkpointing_kwargs" if renamed else "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    for part in _parts(run.model):
        prepare_model_for_kbit_training(part, use_gradient_checkpointing=checkpointing, **reentrant)
        if not run.hardware.cuda:
            # bitsandbytes repacks 4-bit CPU weights for inference at the first eval-mode
            # forward, after which training forwards fail; evaluation between epochs must not.
            for module in part.modules():
                if hasattr(module, "support_avx512bf16_for_cpu"):
                    module.support_avx512bf16_for_cpu = False
    return replace(run)


@hushed()
def adapt(run: Run) -> Run:
    """Wrap the model with LoRA adapters from the plan; count trainable parameters either way."""
    model = run.model
    if run.plan.lora:
        from peft import LoraConfig, get_peft_model

        from pipeline.training.lora import lean_dropout

        _take(run, "adapt")
        # A LoraConfig each: peft writes the base model's path into it.
        model = _each(model, lambda part: get_peft_model(part, LoraConfig(**thaw(run.plan.lora))))
        for part in _parts(model):
            lean_dropout(part)  # no dropped-out copies of each adapted layer's input kept for backward
    parameters = _count(model)
    notice.info("%s", parameters)
    return replace(run, model=model, parameters=parameters)


def _count(model: Any) -> Parameters:
    trainable = total = 0
    for part in _parts(model):
        if hasattr(part, "get_nb_trainable_parameters"):  # counts 4-bit weights at full size
            t, n = part.get_nb_trainable_parameters()
        else:
            t = sum(p.numel() for p in part.parameters() if p.requires_grad)
            n = sum(p.numel() for p in part.parameters())
        trainable, total = trainable + t, total + n
    return Parameters(trainable, total)


def _maxlength(run: Run) -> int:
    return maxlength(run.spec.maxlength, run.plan.maxlength, run.tokenizer, _configs(run.model))


def maxlength(given: int | None, planned: int | None, tokenizer: Any, configs: list[Any]) -> int:
    """The length texts are cut to: the spec's ``maxlength`` (``given``), else the plan's default within
    what the tokenizer and the model allow. Training, evaluation and predict all take it from here."""
    if given:
        return given
    from pipeline.io.preflight import positions

    limits = [planned, tokenizer.model_max_length, *(positions(c) for c in configs)]
    sane = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]  # tokenizers say 1e30 for "no limit"
    return min(sane) if sane else 512


def _collator(run: Run) -> Any:
    if run.spec.packing:  # the library's padding-free collator: a batch in one row, positions restarting per example
        return library().DataCollatorWithFlattening()
    return collator(run.spec.task, run.tokenizer, run.model, _seed(run))


def collator(task: str, tokenizer: Any, model: Any, seed: int = 42) -> Any:
    """The task's data collator: each batch padded to its own longest (masking for the masked LMs)."""
    return TASKS[task].collate(library(), tokenizer, model, seed)


def scoring(spec: Spec, labels: Labels | None, rows: Any, encoded: Any) -> tuple[Any, dict[str, Any]]:
    """An evaluation set (``encoded`` from ``rows``, with ``windows``) as the Trainer takes it: longest
    first, so each batch pads little (our Trainer keeps this order); and the Trainer's arguments that
    score it: the spec's ``metrics`` function, else the task's defaults."""
    from pipeline.io.preflight import metrics_function

    task = TASKS[spec.task]
    lengths = [len(ids) for ids in encoded["input_ids"]]
    encoded = encoded.select(sorted(range(len(lengths)), key=lambda i: -lengths[i]))
    own = metrics_function(spec.metrics)
    found, preprocess = (own, None) if own else task.score(labels, rows, encoded, data.columns(spec))
    encoded = encoded.remove_columns([c for c in task.scored_columns if c in encoded.column_names])
    return encoded, {"compute_metrics": found, "preprocess_logits_for_metrics": preprocess}


def _problem(labels: Labels | None) -> str | None:
    return labels.problem_type if labels else None


def _checkpoint(checkpoint: str | bool | None, output_dir: str, lineage: str | None = None) -> str | None:
    """The checkpoint to resume from: ``True`` means the latest *complete* one in ``output_dir``.

    A run killed while writing a checkpoint leaves it without a readable trainer state
    (the Trainer writes that last); such a folder is skipped. No complete checkpoint:
    training starts from the beginning. Raises `SpecError` for a checkpoint of another run
    (a lineage other than ``lineage``: another model, data or training setting).
    """
    if checkpoint is not True:
        found = checkpoint or None
    else:
        complete, incomplete = checkpoints(output_dir)
        for folder in incomplete:
            log.warning("skipping %s: incomplete (no readable trainer_state.json)", folder)
        if not complete:
            log.info("no complete checkpoint in %s; training from the start", output_dir)
            return None
        found = str(complete[-1])
    from pipeline.training.trainer import checkpoint_record

    theirs = checkpoint_record(found).get("lineage") if found else None
    if found and lineage and theirs and theirs != lineage:
        raise SpecError(
            f"checkpoint: {found} belongs to another run (lineage {theirs}; this spec's is {lineage}: another "
            "model, data or training setting); resuming from it would train that run under this one's name. "
            "Train into another folder, remove the checkpoint, or set checkpoint: false to start over"
        )
    return found


def checkpoints(output_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """The ``checkpoint-N`` folders in ``output_dir``, complete (a readable trainer state) and not, by step."""
    complete, incomplete = [], []
    found = [f for f in Path(output_dir).glob("checkpoint-*") if f.name.rpartition("-")[2].isdigit()]
    for folder in sorted(found, key=lambda f: int(f.name.rpartition("-")[2])):
        try:
            json.loads((folder / "trainer_state.json").read_text())
            complete.append(folder)
        except (OSError, ValueError):
            incomplete.append(folder)
    return complete, incomplete


def _summarized(spec: Spec, encoded: Any, field: str) -> Any:
    """The task's summary of an encoded split said (`Task.summary`); `DataError` for its problems; the columns
    it counted with dropped."""
    task = TASKS[spec.task]
    if task.summary is None:
        return encoded
    notes, problems = task.summary(encoded, field)
    for line in notes:
        notice.info("%s", line)
    if problems:
        raise DataError(problems)
    return encoded.remove_columns([c for c in task.scored_columns if c in encoded.column_names])


def train(run: Run) -> Run:
    """Tokenize, train with the Trainer, evaluate on validation data, save when ``output_dir`` is set.

    Returns the run with the model in eval mode, its metrics and the log history.
    """
    from pipeline.training.trainer import (
        Arguments,
        StopOnSignal,
        Trainer,
        close_group_at_exit,
        frozen_heap,
        quiet_progress,
        whole_model,
    )

    if run.model is None:
        raise SpecError("train: the run has no model; put load (and adapt) before train in the chain")
    spec, maxlength = run.spec, _maxlength(run)
    task = TASKS[spec.task]
    train_set = data.encode(run.train_data, spec, run.tokenizer, maxlength, run.labels)
    eval_set, scores = None, {}
    if run.eval_data:
        encoded = data.encode(run.eval_data, spec, run.tokenizer, maxlength, run.labels, windows=True)
        encoded = _summarized(spec, encoded, "validation")
        eval_set, scores = (encoded, {}) if task.sentences else scoring(spec, run.labels, run.eval_data, encoded)
    mined = _mined(run, train_set)
    train_set = _summarized(spec, mined if mined is not None else train_set, "train")
    if run.teacher is not None and task.sentences is not None:  # the teacher's targets, each row scored once
        train_set = task.sentences.distill(library(), run.teacher, run.model, train_set, spec)
        eval_set = task.sentences.distill(library(), run.teacher, run.model, eval_set, spec) if eval_set is not None else None
    trainer_class, arguments, extra = Trainer, Arguments, {}
    if task.sentences is not None:
        trainer_class, arguments, extra = _sentences(run, maxlength)
    elif run.teacher is not None:
        from pipeline.training.distill import Distilling

        temperature, alpha = spec.distillation
        trainer_class = Distilling
        extra = dict(
            teacher=run.teacher, temperature=temperature, alpha=alpha, task=task, problem=_problem(run.labels)
        )
    args = arguments(**thaw(run.plan.training_args), **_sampler(run))
    existed = bool(args.output_dir) and Path(args.output_dir).exists()
    trainer = trainer_class(
        model=run.model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=run.tokenizer,
        data_collator=_collator(run),
        callbacks=[stop := StopOnSignal(), *run.callbacks],
        **scores,
        **extra,
    )
    if isinstance(trainer, Trainer):
        trainer.token_mean = task.token_mean
    quiet_progress(trainer)
    close_group_at_exit()
    if args.output_dir:
        from pipeline.io.runs import lineage

        trainer.lineage = lineage(spec)
    resume = spec.checkpoint
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if resume is None and restarts and args.output_dir:  # torchrun --max-restarts started the group again
        notice.info("torchrun restarted the group (restart %d): resuming from the latest checkpoint", restarts)
        resume = True
    checkpoint = _checkpoint(resume, args.output_dir, trainer.lineage)
    if checkpoint:
        notice.info("resuming from %s", checkpoint)
    _take(run, "train")
    before = _before(trainer) if task.sentences is not None and checkpoint is None else {}
    try:
        with stop.installed(), frozen_heap():
            result = trainer.train(resume_from_checkpoint=checkpoint)
    except BaseException:
        disk.drop_if_new_and_empty(args.output_dir, existed)
        raise
    if stop.signal is not None:
        step = trainer.state.global_step
        saved = Path(args.output_dir) / f"checkpoint-{step}" if args.output_dir else None
        raise Interrupted(stop.signal, step, str(saved) if saved and saved.is_dir() else None)
    metrics = before | dict(result.metrics)
    if eval_set is not None:
        metrics |= trainer.evaluate()
        metrics |= task.after_evaluation(metrics)
    with whole_model(trainer):  # every rank: ZeRO-3 gathers its shards for the save
        if args.output_dir and args.should_save:
            if mined is not None:  # what it trained on, beside the model (not a model file: kept by later saves)
                Path(args.output_dir).mkdir(parents=True, exist_ok=True)
                mined.to_json(str(Path(args.output_dir) / "mined-train.jsonl"), lines=True)
            with hushed():
                if task.sentences is not None:
                    from pipeline.training.sentences import Saved

                    disk.save(Saved(run.model, task.sentences.options), run.tokenizer, args.output_dir, [])
                else:
                    disk.save(run.model, run.tokenizer, args.output_dir, _parts(run.model))
    run.model.eval()
    log.debug("metrics: %s", metrics)
    history = tuple(FrozenDict(entry) for entry in trainer.state.log_history)
    return replace(run, metrics=FrozenDict(metrics), log_history=history)


def _sentences(run: Run, maxlength: int) -> tuple[Any, Any, dict[str, Any]]:
    """A sentence-transformers task's trainer class, arguments class and what the trainer takes besides: the
    task's loss and, with validation data, its evaluator. The model reads ``maxlength`` tokens per text."""
    from pipeline.training import sentences

    spec, built = run.spec, TASKS[run.spec.task].sentences
    run.model.max_seq_length = maxlength
    extra: dict[str, Any] = {"loss": built.loss(library(), run.model, spec, run.hardware.processes, run.plan.objective)}
    if run.eval_data is not None:
        extra["evaluator"] = built.evaluator(library(), run.eval_data, data.columns(spec))
    return (*sentences.TRAINERS[built.trainer], extra)


def _mined(run: Run, encoded: Any) -> Any:
    """The training rows with hard negatives mined by the model before it trains (``mine``); ``None`` without."""
    task = TASKS[run.spec.task]
    if not run.spec.mine or task.sentences is None or task.sentences.mine is None:
        return None
    found = task.sentences.mine(library(), run.model, encoded, run.spec)
    anchors = len(set(found["anchor"])) if len(found) else 0
    if not anchors:
        raise DataError(f"mine: the base model found no hard negative for any of the {len(encoded)} pairs (each "
                        "candidate passage scored within 5% of its positive, or there are too few passages); give a "
                        "negative column instead, or remove mine")
    left = len(set(encoded["anchor"])) - anchors
    notice.info("mined %d hard negatives with the base model for %d anchors%s", len(found), anchors,
                f"; {left} anchors got none and are left out" if left else "")
    return found


def _sampler(run: Run) -> dict[str, Any]:
    """The batch sampler the plan's ``objective`` section names (sentence-transformers' arguments take it)."""
    found = run.plan.objective or {}
    return {"batch_sampler": found["batch_sampler"]} if "batch_sampler" in found else {}


def _before(trainer: Any) -> dict[str, float]:
    """The evaluator's metrics of the model before it trains, as ``before_eval_*`` (what training changed)."""
    if trainer.evaluator is None:
        return {}
    found = trainer.evaluator(trainer.model)
    return {f"before_eval_{key}": float(value) for key, value in found.items()}


def merge(run: Run) -> Run:
    """LoRA adapters merged into the base weights (``merge_and_unload``): a plain transformers model.

    Identity without LoRA. Raises `SpecError` for a quantized model: merging into 4-bit
    weights would round the adapters' update away.
    """
    if not run.plan.lora:
        return run
    if run.plan.quantization:
        raise SpecError(
            "merge: the model is quantized; merging adapters into 4-bit weights would round their update away. "
            "Save the run (training.output_dir), then `pipeline merge DIR OUT`, which reloads the base "
            "unquantized and merges there"
        )
    _take(run, "merge")
    model = _each(run.model, lambda part: part.merge_and_unload())
    return replace(run, model=model, parameters=_count(model))


fine_tune = compose_left(load, quantize, adapt, train)
"""``load ▸ quantize ▸ adapt ▸ train``: a `Spec` (or a started `Run`) in, a trained `Run` out."""
