"""Writes the search example's data: questions people ask about their home appliances, and the service
manual's passages that answer them, in the manual's words (not the asker's): a passage names the appliance by
its model number and the problem as the manual does.

Each (appliance, problem) has one passage and three ways of asking. A quarter of the combinations are held
out (search-test.jsonl): their questions are new, and what the model must learn is the manual's words
(``my dishwasher is dead`` -> ``Model DW-4410: does not power up``) from the other pairs. Each training row carries
a negative: another (not held-out) passage about the same appliance, the one most easily confused. The held-out rows carry
every other passage as a ``negative``, so held-out retrieval searches all the manual's passages.

Run: python examples/data/make_search.py
"""

import json
from pathlib import Path

APPLIANCES = {"dishwasher": "DW-4410", "washing machine": "WM-2200", "tumble dryer": "TD-850", "fridge": "FR-3100",
              "oven": "OV-600", "microwave": "MW-120", "kettle": "KT-15", "coffee machine": "CM-900",
              "vacuum cleaner": "VC-75", "air conditioner": "AC-1800", "space heater": "SH-25", "wifi router": "RT-AX3"}

# (three ways people ask, with {a} for the appliance; the manual's heading and advice)
PROBLEMS = [
    (["my {a} is dead, nothing happens when I press the button", "{a} won't switch on at all",
      "I plug in the {a} and get no lights"],
     "does not power up", "check that the plug is seated, the socket works and the circuit breaker has not tripped"),
    (["the {a} is making a horrible grinding racket", "weird loud noises from my {a}",
      "why is my {a} so noisy suddenly"],
     "abnormal sound during operation", "a foreign object or a worn bearing is the usual cause; inspect the "
     "moving parts"),
    (["there is a puddle under my {a}", "water coming out of the bottom of the {a}",
      "{a} dripping onto the floor"],
     "fluid escaping from the housing", "inspect the seals and hoses for cracks and tighten the connections"),
    (["my {a} smells like something is burning", "burnt plastic smell from the {a}",
      "smoke smell when I use the {a}"],
     "emits an odour of overheating", "disconnect it at once; an overheated component or wiring must be "
     "inspected by service"),
    (["the {a} stops halfway through", "{a} quits in the middle and I have to restart it",
      "my {a} keeps cutting out before it's done"],
     "cycle interrupted before completion", "the thermal cut-out or a door interlock is stopping the cycle; "
     "let it cool and check the door latch"),
    (["the {a} gets way too hot to touch", "my {a} is scorching on the outside",
      "is it normal that the {a} is boiling hot"],
     "surface temperature above specification", "ensure the ventilation openings are not blocked and keep the "
     "recommended clearance around the unit"),
    (["the buttons on my {a} don't respond", "{a} ignores everything I press on the panel",
      "touch controls on the {a} stopped working"],
     "control panel unresponsive", "the child lock may be active; hold the lock key for three seconds, then "
     "reset the unit"),
    (["how do I get the gunk out of my {a}", "my {a} is filthy inside, how to clean it",
      "best way to clean the {a}"],
     "routine maintenance and cleaning", "wipe the interior with a mild detergent, descale monthly and clean "
     "the filters"),
    (["the {a} is flashing a code at me", "weird error message on my {a} display",
      "what does the blinking light on the {a} mean"],
     "fault indication on the display", "note the code and look it up in the fault table; power-cycle the "
     "unit to clear a transient fault"),
    (["my {a} is costing me a fortune in electricity", "{a} uses way too much power",
      "how can I make my {a} cheaper to run"],
     "energy consumption higher than rated", "select the eco programme, keep the filters clean and avoid "
     "running it half empty"),
]


def passage(appliance: str, heading: str, advice: str) -> str:
    return f"Model {APPLIANCES[appliance]}: {heading}. {advice.capitalize()}."


def rows() -> tuple[list[dict], list[dict]]:
    train, test, held = [], [], []
    for a, appliance in enumerate(APPLIANCES):
        for p, (asked, heading, advice) in enumerate(PROBLEMS):
            text = passage(appliance, heading, advice)
            q = next(q for q in ((p + k) % len(PROBLEMS) for k in (1, 2, 3)) if (a + q) % 4)  # a trained passage
            negative = passage(appliance, *PROBLEMS[q][1:])
            pairs = [{"anchor": q.format(a=appliance), "positive": text, "negative": negative} for q in asked]
            if (a + p) % 4 == 0:
                test += pairs
                held.append(text)
            else:
                train += pairs
    others = sorted({row["positive"] for row in train})
    for i, row in enumerate(test):  # every passage of the manual in the held-out search
        row["negative"] = others[i % len(others)]
    return train, test


def main() -> None:
    folder = Path(__file__).parent
    train, test = rows()
    for name, found in (("search-train.jsonl", train), ("search-test.jsonl", test)):
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in found))


if __name__ == "__main__":
    main()
