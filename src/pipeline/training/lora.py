"""LoRA dropout that keeps no dropped-out copies: a one-byte mask instead.

peft computes ``lora_B(lora_A(dropout(x)))``; autograd then keeps, for every adapted
linear layer, the dropped-out copy of its input (and a mask) until the backward pass:
q, k and v each keep their own copy of the same input. With the seed's ``lora_dropout``
that made LoRA peak above a full fine-tune on our own benchmark (bench/MEMORY.md).
`DropoutLinear` fuses dropout into ``lora_A``: it keeps the input itself (shared by the
layers that read it) and a boolean mask (1 byte a value, where the copy took 4), and
applies the mask again in the backward pass. Same distribution of masks, same gradients
for a given mask. (Drawing the mask a second time from a seed instead of keeping it
saved that byte but cost about a seventh of the step time of MiniLM on a CPU: bench/RESULTS.md.)

Imports torch: only the stages import this module.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["DropoutLinear", "lean_dropout"]


def _keep(like: torch.Tensor, p: float) -> torch.Tensor:
    """Which values dropout keeps: True with probability 1 - p, from the global generator (so `set_seed`
    repeats a run, and gradient checkpointing, which restores the generator, recomputes the same mask).

    Uniforms at or above p: the distribution of ``bernoulli_(1 - p)``, drawn 1.7x faster on a CPU.
    """
    return torch.rand(like.shape, device=like.device).ge_(p).bool()


class _Fused(torch.autograd.Function):
    """``linear(dropout(x), weight)`` for a given ``keep`` mask, saving ``x`` and the mask, not the dropped-out copy."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
        ctx.save_for_backward(x, weight, keep)  # x as it came: a bf16 model's bf16 input, shared with its layer
        ctx.p = p
        return torch.nn.functional.linear((x * keep / (1 - p)).to(weight.dtype), weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, weight, keep = ctx.saved_tensors
        scale = 1 / (1 - ctx.p)
        # Under autocast the forward ran in lower precision: compute in the gradient's dtype.
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight.to(grad.dtype)).to(x.dtype) * keep * scale
        if ctx.needs_input_grad[1]:
            flat = grad.reshape(-1, grad.shape[-1])
            dropped = (x * keep * scale).reshape(-1, x.shape[-1]).to(grad.dtype)
            grad_w = (flat.T @ dropped).to(weight.dtype)
        return grad_x, grad_w, None, None


class DropoutLinear(torch.nn.Linear):
    """``lora_A`` with its dropout inside: what ``Linear(Dropout(p)(x))`` computes, lighter on memory."""

    def __init__(self, linear: torch.nn.Linear, p: float):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias, self.p = linear.weight, None, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return super().forward(x.to(self.weight.dtype))
        return _Fused.apply(x, self.weight, _keep(x, self.p), self.p)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout={self.p}"


def lean_dropout(model: torch.nn.Module) -> int:
    """Fuse each plain LoRA layer's dropout into its ``lora_A`` (in place); returns how many.

    Layers with a LoRA variant (DoRA and the like), a bias on ``lora_A`` or no dropout
    are left as peft made them.
    """
    fused = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            lora_a = module.lora_A[name]
            plain = name not in getattr(module, "lora_variant", {}) and type(lora_a) is torch.nn.Linear
            if plain and isinstance(dropout, torch.nn.Dropout) and dropout.p > 0 and lora_a.bias is None:
                module.lora_A[name] = DropoutLinear(lora_a, dropout.p)
                dropouts[name] = torch.nn.Identity()
                # peft would cast a bf16 input to lora_A's float32 first: a float32 copy of it kept for the
                # backward pass in every adapted layer (+41% activations on a bf16 Llama). DropoutLinear
                # casts after saving, so the layers keep the input they share, in its own dtype.
                module.cast_input_dtype_enabled = False
                fused += 1
    return fused
