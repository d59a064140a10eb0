"""Loss on the answers only against loss on every token: `examples/chat.yaml` at five seeds each.

python -m bench.chat [SETTING ...]     e.g. python -m bench.chat training.num_train_epochs=6

For each ``train_on`` (answers, all) and seed: the held-out replies (`pipeline.predict` on
examples/data/chat-test.jsonl, each conversation asked again without its last answer) that are
exactly the expected answer. Prints one line of JSON per ``train_on``: the settings, the share right
at seeds 0-4, their minimum and mean.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


def main() -> None:
    sys.path.insert(0, str(EXAMPLES))
    from make_models import main as make_models

    from pipeline import fine_tune, load_spec, predict, start
    from pipeline.io.files import parse_settings
    from pipeline.training.detect import detect

    make_models()
    held = [json.loads(line)["messages"] for line in (EXAMPLES / "data" / "chat-test.jsonl").read_text().splitlines()]
    settings = sys.argv[1:]
    for train_on in ("answers", "all"):
        found = []
        for seed in range(5):
            extra = [f"train_on={train_on}", f"training.seed={seed}", "training.disable_tqdm=true"]
            run = fine_tune(start(load_spec(EXAMPLES / "chat.yaml", parse_settings([*settings, *extra])), detect()))
            replies = predict(run, held)
            found.append(round(sum(r["text"] == r["expected"] for r in replies) / len(replies), 3))
        print(json.dumps({"train_on": train_on, "settings": settings, "right": found, "min": min(found),
                          "mean": round(sum(found) / len(found), 3)}), flush=True)


if __name__ == "__main__":
    main()
