"""Chat and instruction tuning: a causal LM learns the answers of conversations.

Rows are conversations (a ``messages`` column: ``[{role, content}, ...]``) or prompt/completion pairs
(two columns, taken as one user turn and its answer). Each is rendered with a chat template (the
tokenizer's own, a built-in one by name, or a Jinja string) and, by default, only the answers are in
the loss: each assistant turn's text and the end-of-turn marker after it, so the model learns to stop.

The answers are found for any template, not by model-family rules: the conversation is rendered up to
each assistant turn with the generation prompt (what `predict` feeds the model), and again through the
turn; the turn is what the second adds to the first. A template whose renderings are not prefixes of
each other cannot be trained on answers alone, nor prompted as it was trained: refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipeline.errors import DataError, SpecError
from pipeline.tasks.generation import distill
from pipeline.tasks.task import Kit, Task, rows

TEMPLATES = {
    # ChatML: <|im_start|>role\ncontent<|im_end|>\n per turn.
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    # Llama 3: a header per turn, <|eot_id|> after each.
    "llama-3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
    # Mistral: [INST] user [/INST] answer</s>; a system prompt is folded into the first user turn.
    "mistral": (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] "
        "{% if loop.index0 == 1 and messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
        "{{ m['content'] }} [/INST]{% elif m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}{% endif %}"
        "{% endfor %}"
    ),
}
"""Built-in chat templates, written from each format's published token layout."""

ROLES = ("system", "user", "assistant")

REPLY_TOKENS = 64
"""New tokens a reply may have at most (`predict`), unless the caller says."""

Render = Callable[[Sequence[Mapping[str, str]], bool], str]
"""``(messages, add_generation_prompt) -> text``: a chat template applied."""


def template_of(given: str | None, own: str | None, model: Any) -> str:
    """The template a run uses: the spec's (``given``: a built-in name or a Jinja string), else the tokenizer's
    ``own``. `SpecError` naming the choices where there is none."""
    if given:
        return TEMPLATES.get(given, given)
    if own:
        return own
    raise SpecError(
        f"template: {model!r} has no chat template and the spec names none; set template: to one of "
        f"{', '.join(TEMPLATES)} (built in) or a Jinja template string"
    )


def _adopt(tokenizer: Any, spec: Any) -> None:
    """The spec's template becomes the tokenizer's own (saved with the run); its own stays when none is named."""
    if spec.template:
        tokenizer.chat_template = template_of(spec.template, None, spec.base)


def renderer(tokenizer: Any, template: str) -> Render:
    """``template`` applied by the tokenizer, as text (no messages: nothing, as before a first turn)."""

    def render(messages: Sequence[Mapping[str, str]], prompt: bool) -> str:
        if not messages:
            return ""
        return tokenizer.apply_chat_template(list(messages), chat_template=template, tokenize=False,
                                             add_generation_prompt=prompt)

    return render


def conversation(batch: Mapping[str, list[Any]], columns: Sequence[str | None], i: int) -> list[dict[str, str]]:
    """Row ``i`` as messages: its messages column, or its prompt and completion as a user turn and its answer."""
    if len(columns) == 2 and columns[1]:
        return [{"role": "user", "content": batch[columns[0]][i]}, {"role": "assistant", "content": batch[columns[1]][i]}]
    return [{"role": m["role"], "content": m["content"]} for m in batch[columns[0]][i]]


def answer_spans(messages: Sequence[Mapping[str, str]], render: Render) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant turn in it: what rendering through
    the turn adds to rendering up to it with the generation prompt (its text and end-of-turn marker).
    `ValueError` where a rendering is not a prefix of the next."""
    whole = render(messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt, through = render(messages[:i], True), render(messages[: i + 1], False)
        if not (through.startswith(prompt) and whole.startswith(through)):
            raise ValueError(
                f"the template renders turn {i + 1} otherwise alone than in the conversation ({prompt[-40:]!r} is not "
                f"where {through[-40:]!r} starts); answers cannot be found, nor prompted as trained"
            )
        spans.append((len(prompt), len(through)))
    return whole, spans


def trained(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """Which tokens are in the loss: those that start inside an answer span (a token the tokenizer added,
    with an empty offset, never)."""
    return [end > start and any(a <= start < b for a, b in spans) for start, end in offsets]


def _encode(batch, columns, tokenizer, maxlength, spec, labels, indices):
    template = template_of(spec.template, getattr(tokenizer, "chat_template", None), spec.base)
    render = renderer(tokenizer, template)
    stop = stop_token(tokenizer, template)
    found: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": [], "answers": [], "cut": [],
                                   "stops": [], "shortened": []}
    for i in range(len(batch[columns[0]])):
        messages = conversation(batch, columns, i)
        try:
            text, spans = answer_spans(messages, render)
        except ValueError as e:
            raise DataError(f"template: {e}") from None
        tokens = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)  # cut below
        offsets = tokens["offset_mapping"]
        ids, mask = tokens["input_ids"], trained(offsets, spans)
        firsts = [next((k for k, (s, _) in enumerate(offsets) if mask[k] and a <= s < b), len(ids)) for a, b in spans]
        dropped = max(len(ids) - maxlength, 0)  # the prompt's start goes first; the last answer stays
        if dropped and spec.truncation == "drop":
            continue
        ids, mask = ids[dropped:], mask[dropped:]
        found["input_ids"].append(ids)
        found["attention_mask"].append([1] * len(ids))
        found["labels"].append([t if m or spec.train_on == "all" else -100 for t, m in zip(ids, mask)])
        found["answers"].append(len(spans))
        found["cut"].append(sum(1 for first in firsts if first < dropped))
        found["stops"].append(sum(1 for t, m in zip(ids, mask) if m and t == stop))
        found["shortened"].append(int(dropped > 0))
    return found


def _check(dataset: Any, columns: tuple[str | None, ...], field: str) -> list[str]:
    """Every row a conversation with an answer: messages with known roles and text, an assistant turn; or a
    prompt and a completion that are text."""
    if len(columns) == 2 and columns[1]:
        bad = [i for i, row in enumerate(zip(dataset[columns[0]], dataset[columns[1]]))
               if not all(isinstance(t, str) and t.strip() for t in row)]
        return [f"{field}: columns {columns[0]!r}, {columns[1]!r}: {rows(bad)} without a prompt or a completion "
                f"(got {list(dataset[bad[0]].values())!r}); fill or drop them"] if bad else []
    problems = []
    for i, messages in enumerate(dataset[columns[0]]):
        wrong = _wrong_messages(messages)
        if wrong:
            problems.append(f"{field}: column {columns[0]!r}: {rows([i])}: {wrong}")
    return problems[:20]


def _wrong_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return f"expected a list of {{role, content}} messages (got {messages!r})"
    for j, m in enumerate(messages):
        if not isinstance(m, Mapping) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return (f"message {j + 1} must be {{role: one of {', '.join(ROLES)}, content: text}} (got {m!r}); "
                    "fix or drop the row")
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant message: nothing to learn; add the answer or drop the row"
    return None


def summary(encoded: Any, field: str) -> tuple[list[str], list[str]]:
    """What a split trains on, as notes, and its problems: rows, trained tokens and their share, answers cut
    by maxlength, rows with no trained token (each named)."""
    labels = encoded["labels"]
    counts = [sum(1 for t in row if t != -100) for row in labels]
    total = sum(len(row) for row in labels)
    trained_tokens = sum(counts)
    cut, answers, stops = sum(encoded["cut"]), sum(encoded["answers"]), sum(encoded["stops"])
    notes = [f"{field}: {len(labels)} conversations, {trained_tokens:,} of {total:,} tokens trained "
             f"({trained_tokens / max(total, 1):.1%}); {sum(encoded['shortened'])} over maxlength lost their start, "
             f"{cut} of {answers} answers cut; the end-of-turn marker trained after {stops} of {answers} answers"]
    empty = [i for i, c in enumerate(counts) if c == 0]
    problems = [f"{field}: {rows(empty)} have no trained token (the answer was cut away by maxlength); raise "
                "maxlength, set truncation: drop, or drop the rows"] if empty else []
    return notes, problems


def reply(items: list[Any], kit: Kit) -> list[dict[str, Any]]:
    """The model's answer to each input (a question, or a conversation: messages, or a row with them), prompted
    with the template it trained with: greedy, stopping at the end-of-turn marker, within the length it trained
    at (a long conversation loses its start, as in training). A conversation that ends with an answer is asked
    again, the answer kept as ``expected``."""
    template = template_of(kit.document.get("template"), getattr(kit.tokenizer, "chat_template", None), "the run")
    render, stop_ids = renderer(kit.tokenizer, template), stops(kit.tokenizer, template)
    options = {"max_new_tokens": REPLY_TOKENS, "do_sample": False} | kit.generation
    found = []
    for item in items:
        messages = [{"role": "user", "content": item}] if isinstance(item, str) else list(item)
        expected = messages.pop()["content"] if messages and messages[-1]["role"] == "assistant" else None
        batch = kit.tokenize(render(messages, True), add_special_tokens=False, truncation=False)
        room = max(kit.length - min(options["max_new_tokens"], kit.length // 2), 1)
        prompt = {key: batch[key][:, -room:] for key in ("input_ids", "attention_mask")}
        new_tokens = min(options["max_new_tokens"], kit.length - prompt["input_ids"].shape[1])
        out = kit.model.generate(**prompt, **(options | {"max_new_tokens": new_tokens}),
                                 eos_token_id=stop_ids, pad_token_id=kit.tokenizer.pad_token_id)
        answer = kit.tokenizer.decode(out[0][prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        found.append({"input": item, "text": answer} | ({"expected": expected} if expected is not None else {}))
    return found


def _said(prediction: dict[str, Any]) -> str:
    """A reply as a line: the question (a conversation's last user turn), the reply, what was expected."""
    given = prediction["input"]
    question = given if isinstance(given, str) else [m["content"] for m in given if m["role"] == "user"][-1]
    expected = f"  (expected: {prediction['expected']})" if "expected" in prediction else ""
    return f"{question}  ->  {prediction['text']}{expected}"


def end_marker(tokenizer: Any, template: str) -> str:
    """What the template puts after an answer's text (its end-of-turn marker), whitespace stripped."""
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ANSWER"}]
    text = renderer(tokenizer, template)(messages, False)
    return text[text.rindex("ANSWER") + len("ANSWER"):].strip()


def stop_token(tokenizer: Any, template: str) -> int | None:
    """The end-of-turn marker's token id: what a generation stops at. `DataError` where the tokenizer splits
    the marker (it would never stop); ``None`` for a template that puts nothing after an answer."""
    marker = end_marker(tokenizer, template)
    if not marker:
        return None
    ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise DataError(
            f"template: its end-of-turn marker {marker!r} is {len(ids)} tokens for this tokenizer, so a generation "
            "cannot stop on it; add it to the tokenizer as a special token, or choose a template whose markers the "
            f"tokenizer has (built in: {', '.join(TEMPLATES)})"
        )
    return ids[0]


def stops(tokenizer: Any, template: str) -> list[int]:
    """The token ids generation stops at: the end-of-turn marker's and the EOS."""
    marker = stop_token(tokenizer, template)
    return [t for t in (marker, tokenizer.eos_token_id) if t is not None]


TASK = Task(
    name="chat",
    model_class="AutoModelForCausalLM",
    lora_task="CAUSAL_LM",
    collator="DataCollatorForSeq2Seq (labels padded with -100)",
    columns=("messages",),
    column_counts=(1, 2),
    metrics="perplexity of the answers",
    metric_names=("perplexity",),
    distillation="KL of softmax(logits/T) over the vocabulary per trained (answer) token",
    encode=_encode,
    collate=lambda library, tokenizer, model, seed: library.DataCollatorForSeq2Seq(tokenizer, padding=True),
    distill=distill,
    predict=reply,
    said=_said,
    check=_check,
    language_model=True,
    token_loss=True,
    vocabulary=True,
    fields=frozenset({"template", "train_on", "truncation", "packing"}),
    scored_columns=("answers", "cut", "stops", "shortened"),
    prepare_tokenizer=_adopt,
    summary=summary,
    perplexity=True,
    hub_tag="text-generation",
)
