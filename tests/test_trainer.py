"""_trainer.py: batches from length buckets in an order owned by (seed, epoch); Optuna pruning."""

import pytest
import torch

from pipeline.training.trainer import SHORT, LengthBuckets, Pruning, bucket


def cut(order, size=16):
    """The sampler's stream cut into batches by count, as the data loader cuts it."""
    return [order[i : i + size] for i in range(0, len(order), size)]


@pytest.mark.parametrize("size", [640, 600])  # 600: a remainder batch of 8, which must come last
def test_batches_hold_one_length_bucket_longest_first_remainder_last(size):
    lengths = [1 + (i * 37) % 400 for i in range(size)]
    sampler = LengthBuckets(lengths, 16, seed=42)
    order = list(sampler)
    batches = cut(order)
    assert sorted(order) == list(range(size))  # every example once
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest batch first: out of memory early
    if size % 16:
        assert len(batches[-1]) == size % 16
    one_bucket = [b for b in batches if len({bucket(lengths[i]) for i in b}) == 1]
    assert len(one_bucket) >= len(batches) - 4  # only the leftovers of the 4 buckets mix


def test_short_texts_are_batched_at_random_not_by_length():
    """Texts up to SHORT tokens share one bucket: a batch is a random draw, whatever goes with length."""
    lengths = [8 + i % 40 for i in range(320)]
    assert max(lengths) <= SHORT
    batches = cut(list(LengthBuckets(lengths, 16, seed=1)))
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert sum(spreads) / len(spreads) > 25  # a sort would give spreads of about 2


def test_the_order_is_a_function_of_seed_and_epoch_alone():
    lengths = [1 + (i * 7) % 300 for i in range(200)]
    first = LengthBuckets(lengths, 16, seed=42)
    torch.manual_seed(0)
    epoch_0 = list(first)
    torch.manual_seed(1)  # the global generator plays no part
    assert list(LengthBuckets(lengths, 16, seed=42)) == epoch_0
    first.set_epoch(1)
    epoch_1 = list(first)
    assert epoch_1 != epoch_0 and sorted(epoch_1) == sorted(epoch_0)
    other = LengthBuckets(lengths, 16, seed=43)
    assert list(other) != epoch_0


@pytest.mark.parametrize("size", [1, 15, 16, 17, 33])
def test_small_sets_give_every_example_once_longest_batch_first_remainder_last(size):
    lengths = [1 + (i * 53) % 200 for i in range(size)]
    order = list(LengthBuckets(lengths, 16, seed=0))
    assert sorted(order) == list(range(size))
    assert max(lengths[i] for i in order[:16]) == max(lengths)
    if size > 16 and size % 16:
        assert len(cut(order)[-1]) == size % 16


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


def test_pruning_reports_a_step_once_without_optunas_warning():
    """The final evaluation after the last epoch's lands on the same step: reported once, no UserWarning."""
    import warnings

    import optuna
    from transformers import TrainerControl, TrainerState

    trial = optuna.create_study().ask()
    pruning, state = Pruning(trial, "eval_loss"), TrainerState(global_step=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for loss in (0.7, 0.6):
            pruning.on_evaluate(None, state, TrainerControl(), metrics={"eval_loss": loss})
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {4: 0.7}


def test_token_detection_takes_a_batch_in_which_nothing_was_masked(models):
    """A batch of short texts may draw no mask: the discriminator then sees the input as it is (all original);
    sampling replacements from none failed (a test's evaluation hit it, depending on the suite's order)."""
    import torch
    import transformers

    from pipeline.training.detection import TokenDetection

    generator = transformers.ElectraForMaskedLM.from_pretrained(f"{models['electra']}/generator")
    discriminator = transformers.ElectraForPreTraining.from_pretrained(models["electra"])
    ids = torch.tensor([[2, 10, 11, 3]])
    out = TokenDetection(generator, discriminator)(input_ids=ids, labels=torch.full_like(ids, -100), parts=True)
    assert torch.equal(out.replaced, ids) and torch.isfinite(out.loss)
