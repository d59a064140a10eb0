"""_trainer.py: length-grouped batches come in shuffled order, not as a long-to-short curriculum."""

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from pipeline._trainer import ShuffledBatches


def test_batches_are_sorted_by_length_over_the_whole_set_in_shuffled_order():
    lengths = [1 + (i * 37) % 200 for i in range(640)]
    grouped = LengthGroupedSampler(16, lengths=lengths)
    torch.manual_seed(1)
    shuffled = list(ShuffledBatches(grouped, 16))
    batches = [shuffled[i : i + 16] for i in range(0, len(shuffled), 16)]

    assert sorted(shuffled) == list(range(640))
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest batch first: out of memory early
    ranges = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(ranges, ranges[1:]))  # whole-set sort: no overlap
    longest = [max(lengths[i] for i in b) for b in batches]
    runs_down = sum(a >= b for a, b in zip(longest, longest[1:]))
    assert runs_down < 0.75 * (len(longest) - 1)  # shuffled, not long to short
    torch.manual_seed(2)
    again = list(ShuffledBatches(grouped, 16))
    assert again != shuffled and sorted(again) == sorted(shuffled)  # another epoch, another order