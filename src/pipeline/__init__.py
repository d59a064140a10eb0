"""pipeline: fine-tune Hugging Face transformers through a functional, composable DSL.

Specs say what a run wants, `plan` derives every config from a spec and the hardware
(purely, with provenance), and the stages ``load ▸ quantize ▸ adapt ▸ train`` do it:
``fine_tune(spec)`` returns the trained `Run`. Importing this package imports no torch.
"""

from ._frozen import FrozenDict, evolve
from .derive import Origin, Plan, estimate, lora_kwargs, plan, quantization_kwargs, training_kwargs
from .errors import DataError, HardwareError, Interrupted, PipelineError, SpecError
from .files import load_spec, model_config
from .hardware import PROFILES, Hardware, detect, profile
from .memory import Memory, Shape, Suggestion, shape
from .inference import evaluate, predict
from .runs import merge_dir, run_id
from .specs import LORA_DEFAULTS, QUANTIZE_DEFAULTS, TRAINING_DEFAULTS, Spec
from .stages import Parameters, Run, adapt, fine_tune, load, merge, quantize, start, train
from .tasks import TASKS, TaskRule

__all__ = [
    "LORA_DEFAULTS",
    "PROFILES",
    "QUANTIZE_DEFAULTS",
    "TASKS",
    "TRAINING_DEFAULTS",
    "DataError",
    "FrozenDict",
    "Hardware",
    "HardwareError",
    "Interrupted",
    "Memory",
    "Origin",
    "Parameters",
    "PipelineError",
    "Plan",
    "Run",
    "Shape",
    "Spec",
    "SpecError",
    "Suggestion",
    "TaskRule",
    "adapt",
    "detect",
    "estimate",
    "evaluate",
    "evolve",
    "fine_tune",
    "load",
    "load_spec",
    "lora_kwargs",
    "merge",
    "merge_dir",
    "model_config",
    "plan",
    "predict",
    "profile",
    "quantization_kwargs",
    "quantize",
    "run_id",
    "shape",
    "start",
    "train",
    "training_kwargs",
]
