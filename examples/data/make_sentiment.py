"""Writes sentiment-train.jsonl and sentiment-test.jsonl: short product and service reviews.

The test split uses praise and complaints that never occur in training, so a model must
know what the words mean, not memorise phrases. Run: python examples/data/make_sentiment.py
"""

import json
import random
from pathlib import Path

SUBJECTS = [
    "The hotel room", "This phone", "The pasta", "Our tour guide", "The new update", "This jacket",
    "The delivery", "The customer service", "The concert", "This novel", "The coffee", "The rental car",
    "The headphones", "The museum", "The train ride", "This vacuum cleaner", "The dentist", "The software",
]
POSITIVE = [
    "was absolutely wonderful", "exceeded every expectation I had", "made my whole week",
    "is the best purchase I have made this year", "was friendly, quick and helpful", "works perfectly",
    "felt like real value for money", "left me smiling", "was a delight from start to finish",
    "is beautifully made", "impressed the whole family", "deserves five stars",
    "arrived early and in perfect shape", "was genuinely excellent", "turned out far better than expected",
    "is something I would happily buy again", "was a joy to use", "was superb",
    "brightened a rainy afternoon", "won me over immediately", "is fantastic", "was lovely",
    "felt luxurious", "is reliable and pleasant",
]
NEGATIVE = [
    "was a complete waste of money", "broke after two days", "ruined our evening",
    "is the worst purchase I have made this year", "was rude, slow and unhelpful", "stopped working",
    "felt like a rip-off", "left me furious", "was a disaster from start to finish",
    "is cheaply made", "disappointed the whole family", "deserves zero stars",
    "arrived late and damaged", "was genuinely awful", "turned out far worse than expected",
    "is something I would never buy again", "was a pain to use", "was dreadful",
    "spoiled a lovely afternoon", "annoyed me immediately", "is terrible", "was horrible",
    "felt filthy", "is unreliable and irritating",
]
ENDINGS = ["", "", " and I told my friends about it.", " to be honest.", ", as my partner agreed.",
           " this time around.", " despite the price.", ", which I did not see coming."]
HELD_OUT = 6  # the last phrases of each list appear only in the test split


def reviews(n, positive, negative, rnd):
    rows = []
    for _ in range(n):
        label = rnd.choice(["positive", "negative"])
        phrase = rnd.choice(positive if label == "positive" else negative)
        rows.append({"text": f"{rnd.choice(SUBJECTS)} {phrase}{rnd.choice(ENDINGS)}", "label": label})
    return rows


def main():
    rnd = random.Random(7)
    folder = Path(__file__).parent
    splits = {
        "sentiment-train.jsonl": reviews(400, POSITIVE[:-HELD_OUT], NEGATIVE[:-HELD_OUT], rnd),
        "sentiment-test.jsonl": reviews(100, POSITIVE[-HELD_OUT:], NEGATIVE[-HELD_OUT:], rnd),
    }
    for name, rows in splits.items():
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
