"""pipeline: fine-tune Hugging Face transformers through a functional, composable DSL.

Specs say what a run wants, `plan` derives every config from a spec and the hardware
(purely, with provenance), and the stages ``load ▸ quantize ▸ adapt ▸ train`` do it:
``fine_tune(spec)`` returns the trained `Run`. Importing this package imports no torch.
"""

import logging as _logging

from pipeline.errors import DataError, HardwareError, Interrupted, PipelineError, SpecError
from pipeline.core.frozen import evolve
from pipeline.core.hardware import PROFILES, Hardware, profile
from pipeline.core.memory import Memory
from pipeline.core.plan import Origin, Plan
from pipeline.core.spec import LORA_DEFAULTS, QUANTIZE_DEFAULTS, TRAINING_DEFAULTS, Spec
from pipeline.io.files import estimate, load_spec, model_config
from pipeline.training.planning import plan
from pipeline.tasks import TASKS
from pipeline.training.detect import detect
from pipeline.training.inference import evaluate, predict
from pipeline.training.saved import merge_dir
from pipeline.training.stages import Parameters, Run, adapt, fine_tune, load, merge, quantize, start, train
from pipeline.training.sweep import sweep

__all__ = [
    "LORA_DEFAULTS",
    "PROFILES",
    "QUANTIZE_DEFAULTS",
    "TASKS",
    "TRAINING_DEFAULTS",
    "DataError",
    "Hardware",
    "HardwareError",
    "Interrupted",
    "Memory",
    "Origin",
    "Parameters",
    "PipelineError",
    "Plan",
    "Run",
    "Spec",
    "SpecError",
    "adapt",
    "detect",
    "estimate",
    "evaluate",
    "evolve",
    "fine_tune",
    "load",
    "load_spec",
    "merge",
    "merge_dir",
    "model_config",
    "plan",
    "predict",
    "profile",
    "quantize",
    "start",
    "sweep",
    "train",
]

_logging.getLogger("pipeline").addHandler(_logging.NullHandler())  # a library's manners: the application decides
