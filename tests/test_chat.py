"""chat: conversations and prompt/completion pairs through a chat template, the loss on the answers only."""

import json
import random

import pytest
from datasets import Dataset

from pipeline import DataError, Hardware, Spec, SpecError, evaluate, fine_tune, predict, start
from pipeline.tasks import TASKS
from pipeline.tasks.chat import TEMPLATES, answer_spans, trained

TALK = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what color is the car ?"},
    {"role": "assistant", "content": "the car is red ."},
    {"role": "user", "content": "and the hat ?"},
    {"role": "assistant", "content": "the hat is blue ."},
]
MARKERS = {"chatml": "<|im_end|>", "llama-3": "<|eot_id|>", "mistral": "</s>"}
COLORS, THINGS = ["red", "blue", "green", "black"], ["car", "hat", "boat", "cat", "dog", "cup", "bag", "pen"]


def qa(n: int, seed: int = 0, things: list[str] = THINGS) -> list[dict]:
    """Questions about a thing's color, each answered with one sentence of the same pattern."""
    rng = random.Random(seed)
    found = []
    for _ in range(n):
        thing, color = rng.choice(things), rng.choice(COLORS)
        found.append({"messages": [{"role": "user", "content": f"the {thing} is {color} . what color is the {thing} ?"},
                                   {"role": "assistant", "content": f"{color} ."}]})
    return found


def test_answer_spans_and_trained_tokens_are_pure_functions():
    """No tokenizer, no torch: a render written here, offsets by hand. Each answer's span is its text and the
    end marker; a token is trained when it starts inside one; an added token (empty offset) never."""

    def render(messages, prompt):
        text = "".join(f"<{m['role']}>{m['content']}</>" for m in messages)
        return text + ("<assistant>" if prompt else "")

    talk = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "ok?"}, {"role": "assistant", "content": "ok"}]
    text, spans = answer_spans(talk, render)
    assert [text[a:b] for a, b in spans] == ["yo</>", "ok</>"]
    offsets = [(0, 0), (0, 6), (6, 8), (8, 11), (11, 22), (22, 24), (24, 27)]  # BOS, "<user>", "hi", "</>", ...
    assert trained(offsets, [(6, 11)]) == [False, False, True, True, False, False, False]
    with pytest.raises(ValueError, match="renders turn 2 otherwise alone than in the conversation"):
        answer_spans(talk[:2], lambda messages, prompt: render(messages[-1:], prompt))


@pytest.fixture(scope="module")
def tokenizer(models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models["chat"])


def encoded(tokenizer, rows, **fields):
    spec = Spec(base="m", task="chat", train=rows, **fields)
    task = TASKS["chat"]
    data = Dataset.from_list(rows)
    columns = task.columns_of(spec.columns)
    return task.encode(data[:], columns, tokenizer, spec.maxlength or 128, spec, None, None)


def trained_text(tokenizer, ids, labels) -> str:
    assert all(label in (-100, i) for i, label in zip(ids, labels))  # labels are the ids where trained
    return tokenizer.decode([i for i, label in zip(ids, labels) if label != -100]).replace(" ", "").replace("\n", "")


@pytest.mark.parametrize("template", list(TEMPLATES))
@pytest.mark.parametrize("turns", [1, 2])
def test_the_trained_tokens_are_each_answer_and_its_end_marker(tokenizer, template, turns):
    """Three template shapes (ChatML, Llama 3's headers, Mistral's system folded into the first user turn):
    what trains is exactly each answer followed by the end-of-turn marker, single- and multi-turn."""
    messages = TALK[: 3 if turns == 1 else 5]
    found = encoded(tokenizer, [{"messages": messages}], template=template)
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    expected = "".join(a + MARKERS[template] for a in answers).replace(" ", "")
    assert trained_text(tokenizer, found["input_ids"][0], found["labels"][0]) == expected
    assert found["answers"] == [turns] == found["stops"] and found["cut"] == [0]
    everything = encoded(tokenizer, [{"messages": messages}], template=template, train_on="all")
    assert everything["labels"][0] == everything["input_ids"][0]


def test_prompt_and_completion_columns_are_one_user_turn_and_its_answer(tokenizer):
    rows = [{"q": "what color is the car ?", "a": "red ."}]
    found = encoded(tokenizer, rows, columns=["q", "a"])
    assert trained_text(tokenizer, found["input_ids"][0], found["labels"][0]) == "red.<|im_end|>"


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_on_either_side_keeps_the_trained_tokens(tokenizer, side):
    """The collator pads labels with -100 on the tokenizer's side: each row's trained tokens are the same
    tokens, at the same places beside their inputs."""
    from transformers import DataCollatorForSeq2Seq

    rows = [{"messages": TALK[:3]}, {"messages": TALK}]
    found = encoded(tokenizer, rows)
    tokenizer.padding_side = side
    try:
        batch = DataCollatorForSeq2Seq(tokenizer, padding=True)(
            [{k: found[k][i] for k in ("input_ids", "attention_mask", "labels")} for i in range(2)])
    finally:
        tokenizer.padding_side = "right"
    for i in range(2):
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        kept = [(t, m) for t, m in zip(ids, batch["attention_mask"][i].tolist()) if m]
        assert [t for t, _ in kept] == found["input_ids"][i]
        assert trained_text(tokenizer, ids, labels) == trained_text(tokenizer, found["input_ids"][i], found["labels"][i])


def test_a_maxlength_that_cuts_loses_the_prompt_first_or_drops_the_row(tokenizer):
    """Too long: the conversation's start goes (the last answer stays whole, the cut answer is counted), or
    with truncation: drop the row goes; a row left with no trained token is an error before training."""
    whole = encoded(tokenizer, [{"messages": TALK}])
    length, first = len(whole["input_ids"][0]), next(i for i, t in enumerate(whole["labels"][0]) if t != -100)
    last = len(tokenizer("the hat is blue .<|im_end|>\n", add_special_tokens=False)["input_ids"])
    short = length - first - 2  # into the first answer
    cut = encoded(tokenizer, [{"messages": TALK}], maxlength=short)
    assert cut["input_ids"][0] == whole["input_ids"][0][-short:]
    assert trained_text(tokenizer, cut["input_ids"][0], cut["labels"][0]).endswith("thehatisblue.<|im_end|>")
    assert cut["cut"] == [1] and cut["answers"] == [2]
    assert encoded(tokenizer, [{"messages": TALK}], maxlength=short, truncation="drop")["input_ids"] == []

    notes, problems = TASKS["chat"].summary(Dataset.from_dict(cut), "train")
    assert "1 conversations" in notes[0] and "1 over maxlength lost their start, 1 of 2 answers cut" in notes[0]
    assert not problems
    ends_asking = [{"messages": TALK + [{"role": "user", "content": "and the car and the boat and the dog ?"}]}]
    asked = encoded(tokenizer, ends_asking, maxlength=last)
    notes, problems = TASKS["chat"].summary(Dataset.from_dict(asked), "train")
    assert problems == ["train: row 1 have no trained token (the answer was cut away by maxlength); raise maxlength, "
                        "set truncation: drop, or drop the rows"]


def test_templates_that_cannot_be_trained_on_answers_are_refused(models, tokenizer):
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(models["llama"])  # no chat template, no chat markers
    with pytest.raises(SpecError, match="has no chat template and the spec names none; set template: to one of "
                                        "chatml, llama-3, mistral"):
        encoded(plain, [{"messages": TALK}])
    with pytest.raises(DataError, match=r"end-of-turn marker '<\|im_end\|>' is \d+ tokens for this tokenizer"):
        encoded(plain, [{"messages": TALK}], template="chatml")  # the end is never one token: it never stops
    last_only = "{{ messages[-1]['content'] }}<|im_end|>"  # renders each turn otherwise in the conversation
    with pytest.raises(DataError, match="template: the template renders turn 3 otherwise alone"):
        encoded(tokenizer, [{"messages": TALK}], template=last_only)


def test_conversations_are_checked_before_anything_loads(models):
    rows = [{"messages": TALK}, {"messages": TALK[:2]}, {"messages": [{"role": "bot", "content": "hi"}]}]
    with pytest.raises(DataError) as e:
        fine_tune(Spec(base=models["chat"], task="chat", train=rows))
    assert list(e.value.problems) == [
        "train: column 'messages': row 2: no assistant message: nothing to learn; add the answer or drop the row",
        "train: column 'messages': row 3: message 1 must be {role: one of system, user, assistant, content: text} "
        "(got {'role': 'bot', 'content': 'hi'}); fix or drop the row",
    ]


def test_packing_keeps_each_conversation_to_itself_and_trains_the_same_tokens(models, tokenizer):
    """The padding-free collator puts a batch in one row with positions restarting: each conversation's logits
    are the ones it has alone (no token attends across a boundary), and the trained tokens are the same."""
    import torch
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, DataCollatorWithFlattening

    rows = qa(4) + [{"messages": TALK}]
    found = encoded(tokenizer, rows)
    features = [{k: found[k][i] for k in ("input_ids", "attention_mask", "labels")} for i in range(len(rows))]
    model = AutoModelForCausalLM.from_pretrained(models["chat"]).train()  # as in training: no dropout in this model
    batch = DataCollatorWithFlattening()(features)
    assert batch["input_ids"].shape[0] == 1
    with torch.no_grad():  # the Trainer turns the cache off (TrainingArguments.use_cache)
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=True).logits[0]
        at, crossed = 0, False
        for feature in features:
            alone = model(input_ids=torch.tensor([feature["input_ids"]])).logits[0]
            torch.testing.assert_close(logits[at:at + len(alone)], alone, atol=1e-5, rtol=1e-4)
            crossed |= not torch.allclose(leaky[at:at + len(alone)], alone, atol=1e-4)
            at += len(alone)
    # With a KV cache transformers builds no packed mask: why the plan refuses packing with use_cache. When this
    # fails the library keeps packed examples apart with a cache too, and that check can go.
    assert crossed
    with pytest.raises(SpecError, match="training.use_cache: packing needs it off"):
        start(Spec(base=models["chat"], task="chat", train=qa(4), packing=True, training={"use_cache": True}), Hardware())
    padded = DataCollatorForSeq2Seq(tokenizer, padding=True)(features)
    assert int((batch["labels"] != -100).sum()) == int((padded["labels"] != -100).sum())
    with torch.no_grad():
        assert model(**batch, use_cache=False).loss.item() == pytest.approx(model(**padded).loss.item(), rel=1e-5)


def test_training_packed_is_training_padded(models):
    """The same steps with packing: the same losses and the same weights (the loss is over the same trained
    tokens of the same batches)."""
    import torch

    found = []
    for packing in (False, True):
        spec = Spec(base=models["chat"], task="chat", train=qa(48) + [{"messages": TALK}] * 8, packing=packing,
                    training={"max_steps": 3, "learning_rate": 1e-2, "per_device_train_batch_size": 8, "seed": 0,
                              "logging_steps": 1})
        run = fine_tune(start(spec, Hardware()))
        found.append((run, [e["loss"] for e in run.log_history if "loss" in e]))
    (padded, losses), (packed_run, packed_losses) = found
    assert packed_losses == pytest.approx(losses, rel=1e-4)
    for (name, a), b in zip(padded.model.named_parameters(), packed_run.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_a_chat_model_learns_to_answer_and_stops(models, tmp_path):
    """Trained on answers: held-out questions of the same pattern (things it never saw) are answered, the reply
    ends at the end-of-turn marker, and evaluation's perplexity is the answers'. The run folder predicts the same."""
    from pipeline.io.runs import write_run

    spec = Spec(base=models["chat"], task="chat", train=qa(256), validation=qa(32, 1), maxlength=64,
                training={"num_train_epochs": 8, "learning_rate": 3e-3, "per_device_train_batch_size": 16, "seed": 0,
                          "output_dir": str(tmp_path / "run")})
    run = fine_tune(start(spec, Hardware()))
    held = [f"the {t} is {c} . what color is the {t} ?" for t, c in (("ball", "green"), ("box", "black"))]
    replies = predict(run, held)
    assert [r["text"] for r in replies] == ["green .", "black ."]
    assert run.metrics["eval_perplexity"] < 2.0
    write_run(tmp_path / "run", "test", run)
    assert [r["text"] for r in predict(str(tmp_path / "run"), held)] == ["green .", "black ."]
    assert evaluate(str(tmp_path / "run"), qa(32, 1))["eval_loss"] == pytest.approx(run.metrics["eval_loss"], rel=1e-4)
    asked = predict(run, [qa(1, 7)[0]["messages"]])[0]  # a conversation ending in its answer: asked again
    assert asked["text"] == asked["expected"] == qa(1, 7)[0]["messages"][-1]["content"]
    assert len(predict(run, held[:1], generation={"max_new_tokens": 1})[0]["text"].split()) == 1

    from pipeline.testing import invoke

    shown = invoke("predict", tmp_path / "run", held[0], "--max-new-tokens", "8")
    assert shown.returncode == 0 and shown.stdout == f"{held[0]}  ->  green .\n", shown.stderr
    refused = invoke("predict", tmp_path / "run", held[0], "--temperature", "0.7")
    assert refused.returncode == 2 and "--temperature and --top-p shape sampling; add --sample" in refused.stderr


def test_a_named_template_is_saved_with_the_run(models, tmp_path):
    """Trained with template: llama-3, the run folder's tokenizer renders conversations with it in plain
    transformers, and predict prompts the folder's model with it."""
    from transformers import AutoTokenizer

    spec = Spec(base=models["chat"], task="chat", train=qa(16), template="llama-3",
                training={"max_steps": 1, "output_dir": str(tmp_path / "run")})
    fine_tune(start(spec, Hardware()))
    saved = AutoTokenizer.from_pretrained(tmp_path / "run")
    assert saved.chat_template == TEMPLATES["llama-3"]
    assert "<|start_header_id|>user<|end_header_id|>" in saved.apply_chat_template(TALK[1:3], tokenize=False)
    assert len(predict(str(tmp_path / "run"), ["what color is the car ?"], task="chat")) == 1  # its own template


def test_the_plan_says_what_trains_before_anything_loads(models, tokenizer, tmp_path):
    """`pipeline plan`: the template's origin and the rules, and per split the conversations, trained tokens and
    their share, answers cut and end-of-turn markers trained, counted as training will; a split with rows that
    would train on nothing is refused there."""
    from pipeline import plan
    from pipeline.testing import invoke

    rows = qa(20) + [{"messages": TALK}]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "spec.yaml").write_text(f"base: {models['chat']}\ntask: chat\ntrain: chat.jsonl\nmaxlength: 64\n")
    found = encoded(tokenizer, rows, maxlength=64)
    trained = sum(1 for labels in found["labels"] for t in labels if t != -100)
    total = sum(len(ids) for ids in found["input_ids"])
    made = plan(Spec(base=models["chat"], task="chat", train=str(tmp_path / "chat.jsonl"), maxlength=64), Hardware())
    shortened = sum(found["shortened"])
    assert made.data == (f"train: 21 conversations, {trained:,} of {total:,} tokens trained ({trained / total:.1%}); "
                         f"{shortened} over maxlength lost their start, 0 of 22 answers cut; the end-of-turn marker "
                         "trained after 22 of 22 answers",)
    assert made.chat["template"] == "the tokenizer's" and made.chat["train_on"] == "answers"
    # the memory estimate: the real lengths after templating, where they are under maxlength
    longest = max(len(ids) for ids in encoded(tokenizer, rows, maxlength=128)["input_ids"])
    roomy = plan(Spec(base=models["chat"], task="chat", train=str(tmp_path / "chat.jsonl"), maxlength=128), Hardware())
    assert longest < 128 and f"memory: counted at the longest training example, {longest} tokens" in roomy.notes[0]
    assert f" x {8 * longest:,} tokens x " in roomy.memory.inputs["activations"]
    shown = invoke("plan", tmp_path / "spec.yaml")
    assert shown.returncode == 0, shown.stderr
    assert "chat.template" in shown.stdout and "the chat template in tokenizer_config.json" in shown.stdout
    assert f"data:\n  train: 21 conversations, {trained:,} of {total:,} tokens trained" in shown.stdout

    asking = [{"messages": TALK + [{"role": "user", "content": "and the car and the boat and the dog ?"}]}]
    with pytest.raises(DataError, match="train: row 1 have no trained token"):
        plan(Spec(base=models["chat"], task="chat", train=asking, maxlength=12), Hardware())


def test_distillation_is_on_the_trained_tokens(models, tokenizer):
    """The teacher's term is one KL per trained token (each answer and its marker), none for the prompts."""
    import torch
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    from pipeline.training.distill import Softened

    found = encoded(tokenizer, qa(3) + [{"messages": TALK}])
    batch = DataCollatorForSeq2Seq(tokenizer, padding=True)(
        [{k: found[k][i] for k in ("input_ids", "attention_mask", "labels")} for i in range(4)])
    student = AutoModelForCausalLM.from_pretrained(models["chat"])
    teacher = AutoModelForCausalLM.from_pretrained(models["chat"])
    with torch.no_grad():
        teacher.lm_head.weight.mul_(2.0)  # a teacher that differs
        terms = TASKS["chat"].distill(student(**batch), teacher(**batch), batch, Softened(2.0), None)
    trained = int((batch["labels"][:, 1:] != -100).sum())
    assert terms.shape == (trained,) and trained == sum(1 for row in found["labels"] for t in row if t != -100)
    assert bool((terms > 0).all())
