"""Replaced-token detection (ELECTRA): a generator fills masked tokens, a discriminator spots them.

Imports torch: only the stages import this module.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers.modeling_outputs import ModelOutput


class TokenDetection(torch.nn.Module):
    """Generator (masked LM) and discriminator trained together; the discriminator is the result.

    ``save_pretrained`` writes the discriminator to the folder and the generator to
    ``generator/`` inside it, each loadable with plain transformers.
    """

    def __init__(self, generator: Any, discriminator: Any, weight: float = 50.0):
        super().__init__()
        self.generator, self.discriminator, self.weight = generator, discriminator, weight
        self.config = discriminator.config

    def forward(self, input_ids, attention_mask=None, labels=None, token_type_ids=None, parts=False):
        """The joint loss and the discriminator's logits; with ``parts``, also each model's loss and the
        ``replaced`` input the discriminator saw (what distillation shows the teacher)."""
        generated = self.generator(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        with torch.no_grad():
            masked = labels != -100
            original = torch.where(masked, labels, input_ids)
            replaced = input_ids.clone()
            if masked.any():  # a batch of short texts can draw no mask at all: nothing to replace then
                replaced[masked] = torch.distributions.Categorical(logits=generated.logits[masked].float()).sample()
            targets = (replaced != original).long()
        detected = self.discriminator(input_ids=replaced, attention_mask=attention_mask, labels=targets)
        # the generator's mean over no masked token is NaN: it learns nothing from such a batch
        generator_loss = generated.loss if masked.any() else generated.logits.sum() * 0.0
        loss = generator_loss + self.weight * detected.loss
        if parts:
            return ModelOutput(
                loss=loss, logits=detected.logits, replaced=replaced,
                generator_loss=generator_loss, discriminator_loss=detected.loss,
            )
        return ModelOutput(loss=loss, logits=detected.logits)

    def save_pretrained(self, path: str | os.PathLike, **kwargs: Any) -> None:
        self.discriminator.save_pretrained(path, **kwargs)
        self.generator.save_pretrained(os.path.join(path, "generator"), **kwargs)
