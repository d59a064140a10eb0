"""pipeline: fine-tune Hugging Face transformers through a functional, composable DSL.

Specs say what a run wants, `plan` derives every config from a spec and the hardware
(purely, with provenance), and the stages ``load ▸ quantize ▸ adapt ▸ train`` do it:
``fine_tune(spec)`` returns the trained `Run`. Importing this package imports no torch.
"""

from pipeline.core.frozen import FrozenDict, evolve
from pipeline.core.plan import Origin, Plan, lora_kwargs, quantization_kwargs, training_kwargs
from pipeline.io.files import estimate, plan
from pipeline.core.errors import DataError, HardwareError, Interrupted, PipelineError, SpecError
from pipeline.io.files import load_spec, model_config
from pipeline.core.hardware import PROFILES, Hardware, profile
from pipeline.training.detect import detect
from pipeline.core.memory import Memory, Shape, Suggestion, shape
from pipeline.training.inference import evaluate, predict
from pipeline.io.runs import run_id
from pipeline.training.saved import merge_dir
from pipeline.core.spec import LORA_DEFAULTS, QUANTIZE_DEFAULTS, TRAINING_DEFAULTS, Spec
from pipeline.training.stages import Parameters, Run, adapt, fine_tune, load, merge, quantize, start, train
from pipeline.tasks import TASKS, TaskRule

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
