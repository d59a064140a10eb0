"""_trainer.py: length-grouped batches come in shuffled order, not as a long-to-short curriculum."""

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from pipeline._trainer import ShuffledBatches


def test_batches_keep_their_length_groups_but_not_their_descending_order():
    torch.manual_seed(0)
    lengths = [1 + (i * 37) % 200 for i in range(640)]
    grouped = LengthGroupedSampler(16, lengths=lengths)
    torch.manual_seed(1)
    reference = list(grouped)
    torch.manual_seed(1)
    shuffled = list(ShuffledBatches(grouped, 16))

    def batches(indices):
        return [indices[i : i + 16] for i in range(0, len(indices), 16)]

    assert sorted(shuffled) == list(range(640))
    assert sorted(map(sorted, batches(shuffled))) == sorted(map(sorted, batches(reference)))
    assert max(lengths[i] for i in batches(shuffled)[0]) == max(lengths)  # the longest batch still first
    longest = [max(lengths[i] for i in b) for b in batches(shuffled)]
    runs_down = sum(a >= b for a, b in zip(longest, longest[1:]))
    assert runs_down < 0.75 * (len(longest) - 1)  # mega-batch order would be nearly all descending
    within = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches(shuffled)]
    assert sum(within) / len(within) < 40  # still grouped: little padding inside a batch
