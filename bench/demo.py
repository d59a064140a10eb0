"""`make demo`'s held-out accuracy over five seeds, with --set style changes to its spec.

python -m bench.demo [SETTING ...]     e.g. python -m bench.demo lora.r=8 lora.lora_alpha=16

Prints one line of JSON: the settings, the accuracy at seeds 42, 1, 2, 3, 4, their minimum and mean.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


def main() -> None:
    sys.path.insert(0, str(EXAMPLES))
    from make_models import main as make_models

    from pipeline import fine_tune, load_spec, start
    from pipeline.io.files import parse_settings
    from pipeline.training.detect import detect

    make_models()
    settings, found = sys.argv[1:], []
    for seed in (42, 1, 2, 3, 4):
        spec = load_spec(EXAMPLES / "classification.yaml",
                         parse_settings([*settings, f"training.seed={seed}", "training.disable_tqdm=true"]))
        found.append(round(fine_tune(start(spec, detect())).metrics["eval_accuracy"], 3))
    print(json.dumps({"settings": settings, "accuracy": found, "min": min(found),
                      "mean": round(sum(found) / len(found), 3)}))


if __name__ == "__main__":
    main()
