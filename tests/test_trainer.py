"""_trainer.py: length-grouped batches come in shuffled order, not as a long-to-short curriculum."""

import pytest
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from pipeline._trainer import Pruning, ShuffledBatches


@pytest.mark.parametrize("size", [640, 600])  # 600: a remainder batch of 8, which must come last
def test_batches_are_sorted_by_length_over_the_whole_set_in_shuffled_order(size):
    lengths = [1 + (i * 37) % 200 for i in range(size)]
    grouped = LengthGroupedSampler(16, lengths=lengths)
    torch.manual_seed(1)
    shuffled = list(ShuffledBatches(grouped, 16))
    batches = [shuffled[i : i + 16] for i in range(0, len(shuffled), 16)]  # as the data loader cuts them

    assert sorted(shuffled) == list(range(size))  # every example once
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest batch first: out of memory early
    ranges = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(ranges, ranges[1:]))  # whole-set sort: no overlap
    longest = [max(lengths[i] for i in b) for b in batches]
    runs_down = sum(a >= b for a, b in zip(longest, longest[1:]))
    assert runs_down < 0.75 * (len(longest) - 1)  # shuffled, not long to short
    torch.manual_seed(2)
    again = list(ShuffledBatches(grouped, 16))
    assert again != shuffled and sorted(again) == sorted(shuffled)  # another epoch, another order

@pytest.mark.parametrize("size", [1, 15, 16, 17, 33])
def test_small_sets_give_every_example_once_longest_batch_first_remainder_last(size):
    lengths = [1 + (i * 7) % 20 for i in range(size)]
    shuffled = list(ShuffledBatches(LengthGroupedSampler(16, lengths=lengths), 16))
    assert sorted(shuffled) == list(range(size))
    assert lengths[shuffled[0]] == max(lengths)
    remainder = shuffled[size // 16 * 16 :]
    assert sorted(lengths[i] for i in remainder) == sorted(lengths)[: size % 16]


def test_pruning_stops_a_trial_worse_than_the_median_of_earlier_ones_at_the_same_step():
    import optuna
    from transformers import TrainerControl, TrainerState

    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for loss in (1.0, 2.0):  # two finished trials, each evaluated at step 10
        trial = study.ask()
        trial.report(loss, 10)
        study.tell(trial, loss)
    state = TrainerState(global_step=10)
    better, worse = Pruning(study.ask(), "eval_loss"), Pruning(study.ask(), "eval_loss")
    for pruning, loss in ((better, 0.5), (worse, 3.0)):
        control = TrainerControl()
        pruning.on_evaluate(None, state, control, metrics={"eval_loss": loss, "epoch": 1.0})
        assert pruning.pruned == control.should_training_stop == (pruning is worse)
