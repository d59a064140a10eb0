"""LoRA dropout that keeps no copies: the same dropout, recomputed in the backward pass.

peft computes ``lora_B(lora_A(dropout(x)))``; autograd then keeps, for every adapted
linear layer, the dropped-out copy of its input (and a mask) until the backward pass:
q, k and v each keep their own copy of the same input. With the seed's ``lora_dropout``
that made LoRA peak above a full fine-tune on our own benchmark (bench/MEMORY.md).
`DropoutLinear` fuses dropout into ``lora_A``: it keeps the input itself (shared by the
layers that read it) and the seed of its mask, and draws the mask again when the
gradient is needed. Same distribution of masks, same gradients for a given mask.

Imports torch: only the stages import this module.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["DropoutLinear", "lean_dropout"]


def _mask(like: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """The dropout mask for ``seed``: 0 or 1/(1-p) per element, in ``like``'s dtype and device.

    Uniforms below 1 - p (a float32 comparison, exact for any p) are Bernoulli(1 - p): the
    same distribution as ``bernoulli_``, drawn 1.7x faster on a CPU, which matters since the
    mask is drawn twice (forward and backward).
    """
    generator = torch.Generator(device=like.device).manual_seed(seed)
    keep = torch.rand(like.shape, device=like.device, generator=generator).lt_(1 - p).div_(1 - p)
    return keep if keep.dtype == like.dtype else keep.to(like.dtype)


class _Fused(torch.autograd.Function):
    """``linear(dropout(x), weight)``, saving ``x`` and the mask's seed instead of the dropped-out copy."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.p, ctx.seed = p, seed
        return torch.nn.functional.linear(x * _mask(x, p, seed), weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, weight = ctx.saved_tensors
        mask = _mask(x, ctx.p, ctx.seed)
        # Under autocast the forward ran in lower precision: compute in the gradient's dtype.
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight.to(grad.dtype)).to(x.dtype) * mask
        if ctx.needs_input_grad[1]:
            flat = grad.reshape(-1, grad.shape[-1])
            dropped = (x * mask).reshape(-1, x.shape[-1]).to(grad.dtype)
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
            return super().forward(x)
        seed = int(torch.randint(0, 2**62, (1,)))  # from the global generator: set_seed makes runs repeat
        return _Fused.apply(x, self.weight, self.p, seed)

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
                fused += 1
    return fused
