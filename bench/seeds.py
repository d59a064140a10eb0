"""Held-out accuracy of the MiniLM LoRA job over seeds, for one way at a time (accuracy, not speed:
one epoch at 3e-3 is seed-sensitive, so one seed says little).

python -m bench.seeds pipeline 42,1,2,3,4,5    (or limit, hand; a line of JSON per seed)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import bench.worker as worker
from bench.jobs import JOBS, read, write_data


def main() -> None:
    way, seeds = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
    folder = Path(tempfile.mkdtemp(prefix="bench-seeds-"))
    write_data(folder, 600, 150)  # the benchmark's data
    job = JOBS["minilm-lora"]
    train, held_out = read(folder, "reviews-train"), read(folder, "reviews-eval")
    run = {"pipeline": worker.run_pipeline, "hand": worker.run_hand, "limit": worker.run_limit}[way]
    for seed in seeds:
        worker.SEED = seed
        model, tokenizer = run(job, worker.model_path(job, folder), train)
        print(json.dumps({"way": way, "seed": seed, "accuracy": worker.evaluate(job, model, tokenizer, held_out)}),
              flush=True)


if __name__ == "__main__":
    main()
