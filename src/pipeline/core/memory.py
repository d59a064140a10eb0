"""How much memory a run needs, estimated purely from the model's ``config.json`` and the plan.

Pure: plain dicts and numbers in, bytes out; no torch, no files (`files.model_config`
reads the config, `derive.plan` calls `memory` with it). The formula, per part:

- **weights**: parameters x bytes of the training dtype; 4-bit (NF4/FP4) linear layers
  take half a byte per weight plus their block constants (one float32 per 64 weights,
  or with double quantization one byte per 64 plus a float32 per 256 blocks); embeddings,
  norms, heads and ``llm_int8_skip_modules`` stay unquantized (k-bit preparation makes
  them float32).
- **loading**: what loading holds beyond the weights: on a CPU, quantizing maps and
  reads the whole float checkpoint.
- **adapters**: LoRA's ``r x (in + out)`` per adapted linear layer, in float32.
- **gradients** and **optimizer** state of the trainable parameters, by ``optim``:
  AdamW 2 states of the parameter's size, 8-bit AdamW 2 bytes, SGD none, Adafactor a row
  and a column per matrix.
- **activations**: what autograd keeps per layer, per token: a multiple of the hidden
  and intermediate widths (more with dropout, which keeps masks; LoRA dropout one byte
  per input value of each adapted linear), plus the heads x
  tokens attention matrix with the eager implementation (SDPA keeps none); with gradient
  checkpointing one layer's input per layer and one whole layer being recomputed.
- **logits**: batch x tokens x vocabulary for language models (the output, its float32
  log-softmax kept for the loss, and its gradient); a few floats per example otherwise.
- **overhead**: the framework's fixed cost on the device (CUDA context and allocator
  cache on a GPU; on a CPU the data, the Trainer and the allocator's slack).
- **teacher** (distillation only): the frozen teacher's weights (4-bit when the model is),
  and for language models its logits with the float32 copies the distillation term takes.

The peak is weights + adapters + optimizer state (+ teacher) + the larger of what the forward and
backward pass hold (activations and logits) and what the optimizer step holds (all
gradients): gradients are freed after each step, and fill as activations are freed.
Loading peaks apart from training (weights + loading), and counts when it is higher.
The constants are measured on real runs: ``bench/MEMORY.md`` holds the comparison.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import computed_field

from pipeline.core.frozen import Frozen, FrozenDict, FrozenMapping
from pipeline.tasks import TASKS

__all__ = ["Memory", "Setup", "Shape", "Suggestion", "memory", "shape"]

MiB, GiB = 2**20, 2**30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
GATED = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "gemma", "gemma2", "gemma3_text", "phi3",
         "olmo", "olmo2", "granite", "cohere", "starcoder2", "stablelm", "smollm3"}
"""Model types whose MLP is gated (gate, up and down projections)."""
OVERHEAD = {"cpu": 48 * MiB, "cuda": 1 * GiB, "mps": 512 * MiB, "xpu": 1 * GiB}
"""Fixed cost per device kind: the data and Trainer on a CPU; CUDA context and allocator cache on a GPU."""
LIVE_PARAMETERS = 10**9
"""DeepSpeed's default stage3_max_live_parameters: the most parameters ZeRO-3 keeps gathered per process."""


def _first(config: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        value = config.get(name)
        if value is not None:
            return value
    return default


class Shape(Frozen):
    """A model's dimensions, as its ``config.json`` gives them (no weights read)."""

    family: str
    vocab: int
    hidden: int
    layers: int
    """Transformer blocks in all (encoder and decoder)."""
    cross: int = 0
    """Blocks with cross-attention (a seq2seq decoder's)."""
    heads: int
    kv_heads: int
    intermediate: int
    positions: int | None = None
    gated: bool = False
    tied: bool = True
    dropout: bool = False
    """The model applies dropout in training (it keeps masks for the backward pass)."""
    dtype: str = "float32"
    """The checkpoint's dtype: what transformers loads it in."""
    extra_embeddings: int = 0
    """Embedding rows beyond the vocabulary (learned positions, token types)."""
    head_size: int | None = None
    """``head_dim`` where the config gives one (Gemma, Qwen3: not hidden / heads)."""
    experts: int = 0
    """Mixture of experts: experts per layer (0: a dense MLP)."""
    active_experts: int = 0
    """Experts each token runs through."""
    expert_intermediate: int | None = None
    """An expert's MLP width (``moe_intermediate_size``; else ``intermediate``)."""
    shared_intermediate: int = 0
    """A shared expert's MLP width beside the routed ones (Qwen-MoE, DeepSeek)."""

    @property
    def head_dim(self) -> int:
        return self.head_size or self.hidden // self.heads

    @property
    def active_intermediate(self) -> int:
        """The MLP width one token runs through: its experts' and a shared expert's, else the MLP's."""
        if not self.experts:
            return self.intermediate
        return self.active_experts * (self.expert_intermediate or self.intermediate) + self.shared_intermediate

    def linears(self) -> dict[str, tuple[int, int, int]]:
        """The linear layers inside the blocks: name -> (in, out, how many). Experts' MLPs count once per
        expert; a mixture's router is ``router``, a shared expert's MLP ``shared_*``."""
        kv, attention = self.kv_heads * self.head_dim, self.heads * self.head_dim
        found = {
            "q": (self.hidden, attention, self.layers + self.cross),
            "k": (self.hidden, kv, self.layers + self.cross),
            "v": (self.hidden, kv, self.layers + self.cross),
            "o": (attention, self.hidden, self.layers + self.cross),
        }
        width, copies = (self.expert_intermediate or self.intermediate, self.experts) if self.experts else (
            self.intermediate, 1)
        found["up"] = (self.hidden, width, self.layers * copies)
        found["down"] = (width, self.hidden, self.layers * copies)
        if self.gated:
            found["gate"] = (self.hidden, width, self.layers * copies)
        if self.experts:
            found["router"] = (self.hidden, self.experts, self.layers)
        if self.shared_intermediate:
            found["shared_up"] = (self.hidden, self.shared_intermediate, self.layers)
            found["shared_down"] = (self.shared_intermediate, self.hidden, self.layers)
            if self.gated:
                found["shared_gate"] = (self.hidden, self.shared_intermediate, self.layers)
        return found

    def block_parameters(self) -> int:
        """Weights of the linear layers inside the blocks (what 4-bit quantization stores in 4 bits)."""
        return sum(i * o * n for i, o, n in self.linears().values())

    def embedding_parameters(self) -> int:
        return (self.vocab + self.extra_embeddings) * self.hidden

    def other_parameters(self) -> int:
        """Norms and biases inside the blocks (small)."""
        return (self.layers + self.cross) * 6 * self.hidden


def shape(config: Mapping[str, Any]) -> Shape:
    """The `Shape` of a model from its ``config.json`` as a dict.

    >>> s = shape({"model_type": "llama", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2,
    ...            "num_attention_heads": 4, "intermediate_size": 128})
    >>> s.gated, s.kv_heads, s.block_parameters()
    (True, 4, 81920)
    """
    config = dict(config.get("text_config") or config)  # multimodal configs keep the language model's inside
    family = str(config.get("model_type", ""))
    hidden = int(_first(config, "hidden_size", "d_model", "n_embd", "dim", default=0))
    encoder = _first(config, "encoder_layers", "num_layers")
    decoder = _first(config, "decoder_layers", "num_decoder_layers")
    if encoder and decoder:
        layers, cross = int(encoder) + int(decoder), int(decoder)
    else:
        layers, cross = int(_first(config, "num_hidden_layers", "n_layer", "num_layers", default=0)), 0
    heads = int(_first(config, "num_attention_heads", "n_head", "encoder_attention_heads", "num_heads", default=1))
    intermediate = _first(config, "intermediate_size", "n_inner", "encoder_ffn_dim", "d_ff", "ffn_dim")
    dropouts = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout", "resid_pdrop",
                "dropout_rate", "hidden_dropout")
    positions = _first(config, "max_position_embeddings", "n_positions", "max_seq_len")
    learned = family in ("bert", "roberta", "electra", "distilbert", "gpt2", "bart", "opt", "xlm-roberta", "mpnet")
    activation = str(_first(config, "hidden_act", "activation_function", "feed_forward_proj", default=""))
    if not hidden or not layers:
        raise ValueError("config.json names no hidden size or layer count (hidden_size, num_hidden_layers)")
    experts = _first(config, "num_local_experts", "num_experts", "n_routed_experts")
    expert_width = _first(config, "moe_intermediate_size", "expert_intermediate_size")
    shared = _first(config, "shared_expert_intermediate_size") or (
        int(config.get("n_shared_experts") or 0) * int(expert_width or 0))
    return Shape(
        family=family,
        vocab=int(_first(config, "vocab_size", default=0)),
        hidden=hidden,
        layers=layers,
        cross=cross,
        heads=heads,
        kv_heads=int(_first(config, "num_key_value_heads", default=heads)),
        intermediate=int(intermediate or 4 * hidden),
        positions=int(positions) if positions else None,
        gated=family in GATED or activation in ("silu", "swiglu") or activation.startswith("gated"),
        tied=bool(config.get("tie_word_embeddings", True)),
        dropout=any(float(config.get(name) or 0) > 0 for name in dropouts),
        dtype=str(_first(config, "dtype", "torch_dtype", default="float32")).removeprefix("torch."),
        extra_embeddings=(int(positions or 0) if learned else 0) + int(config.get("type_vocab_size") or 0),
        head_size=int(config["head_dim"]) if config.get("head_dim") else None,
        experts=int(experts or 0),
        active_experts=int(_first(config, "num_experts_per_tok", "moe_topk", default=1 if experts else 0)),
        expert_intermediate=int(expert_width) if experts and expert_width else None,
        shared_intermediate=int(shared or 0) if experts else 0,
    )


@dataclass(frozen=True)
class Setup:
    """What a run does with the model, in the numbers the estimate needs (from the plan)."""

    task: str
    batch: int
    tokens: int
    """Tokens per example (maxlength)."""
    device: str = "cpu"
    lora_r: int | None = None
    lora_targets: tuple[str, ...] | str = "all-linear"
    quantized_bits: int | None = None
    double_quant: bool = True
    checkpointing: bool | None = None
    """Gradient checkpointing; ``None``: the default, on for a quantized model (k-bit preparation)."""
    optimizer: str = "adamw_torch_fused"
    dtype: str | None = None
    """The weights' dtype as loaded (``None``: the checkpoint's)."""
    mixed_precision: bool = False
    """bf16/fp16 autocast: activations in 2 bytes."""
    language_model: bool = False
    labels: int = 2
    attention: str = "sdpa"
    accumulation: int = 1
    """Gradient accumulation steps (a smaller batch with more of them keeps the effective batch)."""
    models: int = 1
    """Models trained together (token detection: generator and discriminator)."""
    lora_dropout: float = 0.0
    """LoRA's dropout: above 0 each adapted linear keeps a one-byte mask of its input."""
    teacher: Shape | None = None
    """A frozen teacher run beside the model (knowledge distillation), loaded in ``dtype`` too."""
    trainable: int | None = None
    """Trainable parameters of all the models together, counted on the meta device by the shell (what the run
    reports); ``None``: from the formula (blocks, adapted linears, the task's head)."""
    zero: int | None = None
    """DeepSpeed ZeRO stage: 1 shards the optimizer state over ``shards`` processes, 2 the gradients too, 3 the
    weights too; with mixed precision the weights and gradients are 16-bit, the float32 master copy is the
    optimizer's (the ZeRO paper's 2 + 2 + 12 bytes per parameter for Adam)."""
    offload: str | None = None
    """With ``zero``: ``optimizer`` state, or also the ``parameters``, in CPU memory instead of the device's."""
    shards: int = 1
    """Processes ZeRO shards over."""
    cached: int | None = None
    """Where each example is scored against the others of its batch (embeddings' in-batch negatives): the texts a
    step holds at once with the loss's cached form, which scores the same batch; ``None`` elsewhere. A smaller
    batch there is not the same training (fewer candidates), so the advice offers the cached loss instead."""


class Memory(Frozen):
    """Estimated peak memory of one training process, by part, with the inputs of each part's formula.

    ``parts`` maps a part (weights, adapters, gradients, optimizer, activations, logits,
    overhead) to bytes; ``inputs`` says what each was computed from; ``available`` is
    the hardware's memory for this process (``None``: unknown).
    """

    parts: FrozenMapping
    inputs: FrozenMapping
    available: int | None = None
    suggestions: tuple[Suggestion, ...] = ()
    trainable: int = 0
    """Trainable parameters, all models together: what the gradients and optimizer parts count."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> int:
        """The estimated peak: weights, adapters, optimizer, overhead, DDP's buckets and a teacher, plus the
        larger of (activations + logits + the weights ZeRO-3 gathers) and gradients; or the loading peak, when
        that is higher."""
        p = self.parts
        steady = p["weights"] + p["adapters"] + p["optimizer"] + p["overhead"] + p.get("teacher", 0)
        steady += p.get("buckets", 0)
        training = steady + max(p["activations"] + p["logits"] + p.get("gathered", 0), p["gradients"])
        return max(training, p["weights"] + p["loading"] + p["overhead"])

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fits(self) -> bool | None:
        """Whether the estimate is within the available memory (``None`` when that is unknown)."""
        return None if self.available is None else self.total <= self.available

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tight(self) -> bool | None:
        """It fits with less room than the estimate's error (`HEADROOM`): it may not, measured."""
        return None if self.available is None else self.total <= self.available < self.total * (1 + HEADROOM)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def margin(self) -> int | None:
        """Available minus estimated bytes (negative: short by that much)."""
        return None if self.available is None else self.available - self.total

    def summary(self) -> str:
        """One line: the total and whether it fits."""
        total = f"about {_size(self.total)}"
        if self.available is None:
            return f"{total} (available memory unknown)"
        if self.tight:
            return (f"{total} of {_size(self.available)}: tight ({_size(self.margin)} to spare, within the "
                    f"estimate's +-{HEADROOM:.0%} error)")
        if self.fits:
            return f"{total} of {_size(self.available)}: fits ({_size(self.margin)} to spare)"
        return f"{total} of {_size(self.available)}: does not fit ({_size(-self.margin)} short)"

    def lines(self) -> list[str]:
        """The estimate as text: total, parts with their inputs, suggestions."""
        lines = [f"memory  {self.summary()}"]
        width = max(len(name) for name in self.parts)
        for name, size in self.parts.items():
            lines.append(f"  {name:<{width}}  {_size(size):>9}  {self.inputs.get(name, '')}".rstrip())
        if self.suggestions:
            goal = "to fit" if self.fits is False else f"for {HEADROOM:.0%} room" if self.tight else "changes"
            lines.append(f"  {goal}{', any one of' if len(self.suggestions) > 1 else ''}:")
            lines += [f"    {s}" for s in self.suggestions]
        return lines


class Suggestion(Frozen):
    """A change to the spec (as ``--set`` settings) and the estimate with it."""

    settings: FrozenMapping
    total: int
    why: str

    def __str__(self) -> str:
        sets = " ".join(f"--set {k}={_yaml(v)}" for k, v in self.settings.items())
        return f"{sets}  -> about {_size(self.total)} ({self.why})"


Memory.model_rebuild()


def _yaml(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    if abs(n) >= GiB:
        return f"{n / GiB:.1f} GiB"
    return f"{n / MiB:.0f} MiB"


# -- the parts -------------------------------------------------------------------------------

ALIASES = {
    "q": ("q_proj", "query", "q", "q_lin", "c_attn", "qkv_proj", "Wqkv"),
    "k": ("k_proj", "key", "k", "k_lin", "c_attn", "qkv_proj", "Wqkv"),
    "v": ("v_proj", "value", "v", "v_lin", "c_attn", "qkv_proj", "Wqkv"),
    "o": ("o_proj", "dense", "out_proj", "o", "out_lin", "c_proj", "output.dense", "attention.output.dense"),
    "up": ("up_proj", "fc1", "wi", "wi_0", "lin1", "c_fc", "intermediate.dense", "gate_up_proj"),
    "gate": ("gate_proj", "wi_1", "w1", "gate_up_proj"),
    "down": ("down_proj", "fc2", "wo", "lin2", "c_proj", "output.dense", "dense"),
}


ALIASES.update({"shared_" + key: names for key, names in list(ALIASES.items()) if key in ("up", "gate", "down")})
ALIASES["router"] = ("gate", "router")

MODULE_PATHS = {
    "attention": ("model.layers.0.self_attn.{}", "model.decoder.layers.0.self_attn.{}", "transformer.h.0.attn.{}",
                  "bert.encoder.layer.0.attention.self.{}", "bert.encoder.layer.0.attention.{}"),
    "mlp": ("model.layers.0.mlp.{}", "model.layers.0.mlp.shared_expert.{}", "model.decoder.layers.0.{}",
            "transformer.h.0.mlp.{}", "bert.encoder.layer.0.{}"),
}
"""Where the usual architectures keep their block linears: what a regex ``target_modules`` is matched
against (peft matches it against each module's full name)."""


def _adapted(model: Shape, targets: tuple[str, ...] | str) -> dict[str, tuple[int, int, int]]:
    """The block linears LoRA adapts: for ``all-linear`` every ``nn.Linear`` (a mixture's experts and
    router are fused parameters in transformers 5, which peft leaves alone); for names those a target
    names; for any other string, those whose usual full names the regex matches as a whole, as peft does."""

    linears = model.linears()
    if model.experts:
        linears = {k: v for k, v in linears.items() if k in ("q", "k", "v", "o") or k.startswith("shared_")}
    if targets == "all-linear":
        return linears
    if isinstance(targets, str):
        paths = lambda key: MODULE_PATHS["attention" if key in ("q", "k", "v", "o") else "mlp"]  # noqa: E731
        return {key: shape for key, shape in linears.items()
                if any(re.fullmatch(targets, path.format(alias)) for alias in ALIASES[key] for path in paths(key))}
    names = {t.split(".")[-1] for t in targets} | set(targets)
    return {key: shape for key, shape in linears.items() if names & set(ALIASES[key])}


def _activations(model: Shape, setup: Setup, tokens: int) -> tuple[int, str]:
    """Bytes autograd keeps for the backward pass, and how they were counted."""
    size = _value_bytes(model, setup)
    h, i, kv = model.hidden, model.active_intermediate, model.kv_heads * model.head_dim
    # Per token per layer, in elements: the norms' inputs, the projections' inputs, q, k
    # and v, the attention output, and the MLP's inner activations (gated: gate, up, their
    # product and the activation function's output).
    per_token = (6 * h + 2 * kv + 4 * i) if model.gated else (8 * h + 2 * i)
    formula = "6 x hidden + 2 x kv + 4 x intermediate" if model.gated else "8 x hidden + 2 x intermediate"
    masks = 2 * h if model.dropout else 0  # one byte per element
    layer = tokens * (per_token * size + masks)
    # SDPA keeps no heads x tokens x tokens matrix, except on a CPU when the model drops
    # attention weights out (it falls back to the plain math there), and eager never does.
    matrix = setup.attention == "eager" or (setup.device == "cpu" and model.dropout)
    attention = ""
    if matrix:
        # scores, softmax; dropout's mask and output. A CPU's math path keeps them in float32 whatever
        # the weights' dtype (bf16 BERT, 8 x 512 tokens: 37% over an estimate in 2 bytes, bench/MEMORY.md).
        score = 4 if setup.device == "cpu" else size
        per_score = 2 * score + (score + 1 if model.dropout else 0)
        layer += setup.batch * model.heads * setup.tokens**2 * per_score
        attention = f" + heads {model.heads} x tokens^2 x {per_score} bytes (attention matrix)"
    blocks = model.layers + model.cross
    if _checkpointing(setup):
        total = blocks * tokens * h * size + layer
        how = f"checkpointing: {blocks} layer inputs x {tokens:,} tokens x hidden {h} x {size} bytes + one layer{attention}"
    else:
        total = blocks * layer
        how = f"{blocks} layers x {tokens:,} tokens x ({formula} = {per_token:,}) x {size} bytes{attention}"
    return total, how


def _value_bytes(model: Shape, setup: Setup) -> int:
    """Bytes per activation value: 2 under mixed precision, else the weights' dtype."""
    return 2 if setup.mixed_precision else DTYPE_BYTES.get(setup.dtype or model.dtype, 4)


def _checkpointing(setup: Setup) -> bool:
    return setup.checkpointing if setup.checkpointing is not None else bool(setup.quantized_bits)


def _logits(model: Shape, setup: Setup, tokens: int) -> tuple[int, str]:
    if not TASKS[setup.task].vocabulary:
        return setup.batch * 64 * 4, "a few floats per example"
    # The output in the training dtype, its float32 log-softmax kept for the loss, and its gradient.
    size = _value_bytes(model, setup)
    copies = 2 * 4 + size
    return tokens * model.vocab * copies, f"{tokens:,} tokens x vocabulary {model.vocab:,} x {copies} bytes"


def _optimizer_bytes(setup: Setup, trainable: int, matrices: list[tuple[int, int, int]], size: int) -> tuple[int, str]:
    name = setup.optimizer
    if "8bit" in name:
        return trainable * 2, f"{name}: 2 bytes x {trainable:,} trainable"
    if name.startswith("sgd") or name == "lomo":
        return 0, f"{name}: no state (momentum 0)"
    if "adafactor" in name:
        factored = sum(n * (i + o) for i, o, n in matrices) * 4
        return factored, f"{name}: a row and a column per matrix"
    return 2 * trainable * size, f"{name}: 2 states x {trainable:,} trainable x {size} bytes"


def memory(model: Shape, setup: Setup, available: int | None = None) -> Memory:
    """The estimated peak memory of one training process for ``setup`` on ``model``.

    ``available``: bytes the process may use (from `Hardware`); suggestions are made
    when the estimate exceeds it or leaves less than `HEADROOM` (tight).
    """
    parts, inputs, trainable = _parts(model, setup)
    estimate = Memory(parts=parts, inputs=inputs, available=available, trainable=trainable)
    if estimate.fits is False or estimate.tight:
        estimate = estimate.model_copy(update={"suggestions": _suggest(model, setup, available)})
    return estimate


def _parts(model: Shape, setup: Setup) -> tuple[dict[str, int], dict[str, str], int]:
    dtype, size = _dtype(model, setup)
    tokens = setup.batch * setup.tokens
    blocks, other, head = _counts(model, setup)
    parameters = blocks + other
    inputs: dict[str, str] = {}

    weights, inputs["weights"] = _weights(model, setup)
    loading, inputs["loading"] = 0, "held only while loading: nothing beyond the weights"
    if setup.quantized_bits and setup.device == "cpu":
        # Quantizing on a CPU maps the float checkpoint and reads all of it (resident pages).
        loading = parameters * size
        inputs["loading"] = f"the {dtype} checkpoint, mapped while it is quantized ({parameters:,} x {size} bytes)"

    matrices: list[tuple[int, int, int]]
    if setup.lora_r:
        adapted = _adapted(model, setup.lora_targets)
        lora = sum(n * setup.lora_r * (i + o) for i, o, n in adapted.values())
        trainable = lora + head  # peft trains the task's new head in full
        adapters = trainable * 4
        inputs["adapters"] = f"r {setup.lora_r} x (in + out) of {sum(n for *_, n in adapted.values())} linears, float32"
        grad_size = 4
        matrices = [(i, setup.lora_r, n) for i, _, n in adapted.values()]
    else:
        trainable, adapters, grad_size = parameters, 0, size
        inputs["adapters"] = "no LoRA"
        matrices = list(model.linears().values())
    counted = ""
    if setup.trainable is not None:  # the model's own count: heads, biases and norms as the architecture has them
        trainable, counted = setup.trainable // setup.models, " (counted)"
        adapters = trainable * 4 if setup.lora_r else 0
    gradients = trainable * grad_size
    inputs["gradients"] = f"{trainable:,} trainable{counted} x {grad_size} bytes"
    optimizer, inputs["optimizer"] = _optimizer_bytes(setup, trainable, matrices, grad_size)
    activations, inputs["activations"] = _activations(model, setup, tokens)
    if setup.lora_r and setup.lora_dropout:
        # LoRA dropout keeps a one-byte mask of each adapted linear's input (pipeline.training.lora); under
        # checkpointing only the layer being recomputed holds its masks.
        per_token = sum(n * i for i, _, n in _adapted(model, setup.lora_targets).values())
        masks = tokens * (per_token // model.layers if _checkpointing(setup) else per_token)
        activations += masks
        inputs["activations"] += f" + LoRA dropout masks {tokens:,} tokens x {per_token:,} bytes"
    held: dict[str, int] = {}
    if setup.zero:
        weights, gradients, optimizer, adapters, gathered = _sharded(setup, inputs, trainable, parameters, weights,
                                                                     gradients, optimizer, adapters)
        if gathered:
            held["gathered"] = gathered
    elif setup.shards > 1 and trainable:
        # DDP copies each gradient into its buckets to all-reduce them, and keeps the buckets
        held["buckets"] = gradients
        inputs["buckets"] = f"DDP over {setup.shards} processes: a copy of the gradients to all-reduce"
    logits, inputs["logits"] = _logits(model, setup, tokens)
    overhead = OVERHEAD.get(setup.device, OVERHEAD["cpu"])
    inputs["overhead"] = f"{setup.device}: fixed"
    parts = {
        "weights": weights,
        "loading": loading,
        "adapters": adapters,
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": activations,
        "logits": logits,
        "overhead": overhead,
        **held,
    }
    if setup.models > 1:
        parts = {k: v if k == "overhead" else v * setup.models for k, v in parts.items()}
        inputs["overhead"] += f"; the rest x {setup.models} models trained together"
    if setup.teacher is not None:
        parts["teacher"], inputs["teacher"] = _teacher(setup.teacher, setup, tokens)
    return parts, inputs, trainable * setup.models


def _sharded(setup: Setup, inputs: dict[str, str], trainable: int, parameters: int, *parts: int
             ) -> tuple[int, int, int, int, int]:
    """Weights, gradients, optimizer state and adapters per process under ZeRO (`Setup.zero`), and at stage 3
    the weights gathered while a step runs."""
    weights, gradients, optimizer, adapters = parts
    n, stage = setup.shards, setup.zero or 0
    if setup.mixed_precision and not setup.lora_r and not setup.quantized_bits:
        # DeepSpeed keeps the module and its gradients in 16 bits
        weights, gradients = parameters * 2, trainable * 2
        inputs["weights"] = f"{parameters:,} parameters x 2 bytes (16-bit module)"
        inputs["gradients"] = f"{trainable:,} trainable x 2 bytes"
    # and the optimizer steps a float32 copy of the process's shard, whatever the module's dtype (measured
    # on CPUs in float32: bench/MEMORY.md)
    optimizer += trainable * 4
    inputs["optimizer"] += f" + float32 master weights {trainable:,} x 4 bytes"
    gathered = 0
    if stage == 3:
        # A module's weights are gathered whole for its forward and backward and kept while DeepSpeed's limits
        # allow (stage3_max_live_parameters; max_reuse_distance keeps those the backward uses again): all of a
        # model up to that many parameters
        live = min(parameters, LIVE_PARAMETERS)
        gathered = weights * live // parameters
        inputs["gathered"] = (f"ZeRO-3: the weights gathered while a step runs, {live:,} parameters"
                              f"{' (stage3_max_live_parameters)' if live < parameters else ''}")
    shard = f" / {n} processes (ZeRO-{stage})"
    optimizer //= n
    inputs["optimizer"] += shard
    if setup.offload:
        optimizer, inputs["optimizer"] = 0, inputs["optimizer"] + ": in CPU memory (offload)"
    if stage >= 2:
        gradients //= n
        inputs["gradients"] += shard
    if stage == 3:
        weights, adapters = weights // n, adapters // n
        inputs["weights"] += shard
        if setup.offload == "parameters":
            weights, inputs["weights"] = 0, inputs["weights"] + ": in CPU memory (offload)"
        if not setup.offload:
            # its optimizer allocates the gradient shards in one buffer at the start and keeps them through the
            # step, where the unsharded gradients take the activations' place (measured: bench/MEMORY.md)
            optimizer += gradients
            inputs["optimizer"] += f" + the gradient shards ({_size(gradients)}, kept from the start)"
            gradients, inputs["gradients"] = 0, "ZeRO-3: with the optimizer's state"
    return weights, gradients, optimizer, adapters, gathered


def _dtype(model: Shape, setup: Setup) -> tuple[str, int]:
    dtype = setup.dtype or model.dtype
    dtype = dtype if dtype in DTYPE_BYTES else "float32"
    return dtype, DTYPE_BYTES[dtype]


def _counts(model: Shape, setup: Setup) -> tuple[int, int, int]:
    """Parameters in the blocks, elsewhere (embeddings, norms, heads), and in the task's head."""
    output = 0 if model.tied or not setup.language_model else model.vocab * model.hidden
    task = TASKS[setup.task]
    head = task.head(model.hidden, setup.labels) if task.head else 0
    return model.block_parameters(), model.other_parameters() + model.embedding_parameters() + output + head, head


def _weights(model: Shape, setup: Setup) -> tuple[int, str]:
    """The weights as loaded: in the dtype, or 4/8-bit blocks with the rest in float32."""
    dtype, size = _dtype(model, setup)
    blocks, other, _ = _counts(model, setup)
    if not setup.quantized_bits:
        return (blocks + other) * size, f"{blocks + other:,} parameters x {size} bytes ({dtype})"
    per_weight = setup.quantized_bits / 8 + ((1 + 4 / 256) / 64 if setup.double_quant else 4 / 64)
    return int(blocks * per_weight + other * 4), (
        f"{blocks:,} block weights x {per_weight:.3f} bytes ({setup.quantized_bits}-bit"
        f"{', double quant' if setup.double_quant else ''}) + {other:,} others (embeddings, norms, heads) x 4"
    )


def _teacher(teacher: Shape, setup: Setup, tokens: int) -> tuple[int, str]:
    """A frozen teacher, loaded as the student is (4-bit with it): its weights, and for language models
    its logits with the float32 copies the distillation term takes (its activations are freed layer by
    layer: no gradients)."""
    weights, why = _weights(teacher, setup)
    if not setup.language_model:
        return weights, why
    copies = _dtype(teacher, setup)[1] + 3 * 4  # its logits; both log-softmaxes and the divergence in float32
    return weights + tokens * teacher.vocab * copies, why + f" + {tokens:,} tokens x vocabulary x {copies} bytes"


def _total(model: Shape, setup: Setup) -> int:
    return Memory(parts=_parts(model, setup)[0], inputs={}).total


HEADROOM = 0.2
"""The estimate's error against measured peaks (bench/MEMORY.md: within about +-20%): a fit with less room than
this is tight, and the changes offered, and the defaults the plan chooses to fit, leave this much."""


def roomy(total: int, available: int) -> bool:
    """``total`` fits ``available`` with `HEADROOM` to spare."""
    return total * (1 + HEADROOM) <= available


def smaller_batches(setup: Setup) -> Iterator[tuple[int, int]]:
    """The batch halved down to 1, each with the accumulation steps that keep the effective batch (batch x
    steps; the nearest below where the halved batch does not divide it)."""
    effective, batch = setup.batch * setup.accumulation, setup.batch
    while batch > 1:
        batch //= 2
        yield batch, effective // batch


def _suggest(model: Shape, setup: Setup, available: int) -> tuple[Suggestion, ...]:
    """Single changes that make ``setup`` fit ``available`` with `HEADROOM` to spare (or, if none does, all of
    them together)."""
    fits = lambda **changes: roomy(_total(model, replace(setup, **changes)), available)  # noqa: E731
    options: list[tuple[dict[str, Any], dict[str, Any], str]] = []  # (settings, Setup changes, why)
    if not _checkpointing(setup):
        options.append(({"training.gradient_checkpointing": True}, {"checkpointing": True},
                        "recompute activations in the backward pass; about 20-30% slower"))
    if setup.cached is not None:
        options.append(({"loss": "cached"}, {"batch": setup.cached},
                        f"the same batch's negatives, embedded {setup.cached} texts at a time (GradCache; slower)"))
    for batch, steps in smaller_batches(setup) if setup.cached is None else ():
        if fits(batch=batch) or batch == 1:
            options.append(({"training.per_device_train_batch_size": batch,
                             "training.gradient_accumulation_steps": steps}, {"batch": batch},
                            f"the same effective batch of {setup.batch * setup.accumulation}"))
            break
    if setup.device == "cuda" and not setup.zero and not setup.quantized_bits:
        devices = next((n for n in (2, 4, 8, 16, 32, 64) if fits(zero=3, shards=n)), None)
        if devices:
            options.append(({"zero": 3}, {"zero": 3, "shards": devices},
                            f"ZeRO-3 over {devices} GPUs: weights, gradients and optimizer state sharded "
                            f"(torchrun --nproc_per_node {devices}; plan it with --processes {devices})"))
    if setup.device == "cuda" and not setup.quantized_bits:
        settings = {"quantize": True} if setup.lora_r else {"lora": True, "quantize": True}
        options.append((settings, {"quantized_bits": 4, "double_quant": True, "lora_r": setup.lora_r or 16,
                                   "trainable": setup.trainable if setup.lora_r else None},
                        "QLoRA: 4-bit base weights"))
    elif not setup.lora_r:
        options.append(({"lora": True}, {"lora_r": 16, "trainable": None}, "train adapters only: no gradients or optimizer state for the base"))
    length = setup.tokens
    while length > 64:
        length //= 2
        if fits(tokens=length) or length <= 64:
            options.append(({"maxlength": length}, {"tokens": length}, "longer texts are cut (or split into more blocks)"))
            break
    if "8bit" not in setup.optimizer and "adam" in setup.optimizer:
        options.append(({"training.optim": "adamw_bnb_8bit"}, {"optimizer": "adamw_bnb_8bit"},
                        "optimizer state in 8 bits (bitsandbytes)"))
    chosen = [(settings, changes, why) for settings, changes, why in options if fits(**changes)]
    if all("maxlength" in settings for settings, _, _ in chosen) and options:
        # none fits alone but cutting the texts: the others in turn until they do, the length cut last
        settings, changes = {}, {}
        for one_settings, one_changes, _ in options:
            if "maxlength" not in one_settings and not fits(**changes):
                settings |= one_settings
                changes |= one_changes
        length = setup.tokens
        while not fits(**changes) and length > 64:
            length //= 2
            settings["maxlength"], changes["tokens"] = length, length
        if settings not in [c[0] for c in chosen]:
            chosen.append((settings, changes, "these together"))
    suggestions = [
        Suggestion(settings=FrozenDict(settings), total=_total(model, replace(setup, **changes)), why=why)
        for settings, changes, why in chosen
    ]
    return tuple(sorted(suggestions, key=lambda suggestion: -suggestion.total))
