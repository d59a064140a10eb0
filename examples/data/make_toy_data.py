"""Writes the toy data sets of the tiny-model examples (texts, questions, copy pairs, entities, chats, ranked and scored pairs).

Run: python examples/data/make_toy_data.py
"""

import json
from pathlib import Path

from pipeline.testing import conversations, questions, rerank_rows, scored_pairs, sentences, spanned_rows


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def main() -> None:
    folder = Path(__file__).parent
    write(folder / "texts.jsonl", [{"text": t} for t in sentences(300, seed=1)])
    write(folder / "questions.jsonl", questions(200, seed=1))
    write(folder / "pairs.jsonl", [{"source": t, "target": t} for t in sentences(200, seed=2)])
    write(folder / "entities.jsonl", spanned_rows(200, seed=3))
    write(folder / "chat-train.jsonl", conversations(300, seed=4))
    write(folder / "chat-test.jsonl", conversations(40, seed=5))
    write(folder / "rerank-train.jsonl", rerank_rows())
    write(folder / "rerank-test.jsonl", rerank_rows(held_out=True, asked=1))
    write(folder / "similarity-train.jsonl", scored_pairs())
    write(folder / "similarity-test.jsonl", scored_pairs(held_out=True))


if __name__ == "__main__":
    main()
