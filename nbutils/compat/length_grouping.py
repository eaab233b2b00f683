"""Exact resume of length-grouped batches (transformers 5.19, ``train_sampling_strategy: group_by_length``).

transformers' ``LengthGroupedSampler`` shuffles with the global torch RNG at the start of each epoch.
A run resumed in the middle of its second (or a later) epoch rebuilds that epoch's order before the
checkpoint's RNG state is loaded, so it trains on other batches than the run it continues (measured on
the tiny preset: 0.01 on the losses of the steps after the resume). The trainer's random sampler draws
its order from ``seed + epoch`` instead; the sampler here does the same for the length-grouped order.
"""
from __future__ import annotations


def epoch_seeded_sampler(lengths: list[int], batch_size: int, seed: int):
    """transformers' length-grouped order (random mega-batches, each sorted by length), drawn from
    ``seed + epoch``; the trainer calls ``set_epoch`` before each epoch."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            generator = torch.Generator().manual_seed(seed + self.epoch)
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))

    return EpochSeededLengthGroupedSampler(batch_size, lengths=list(lengths))


def seed_length_grouping(trainer) -> None:
    """Give ``trainer`` (a transformers ``Trainer``) the epoch-seeded sampler wherever it would build
    a ``LengthGroupedSampler`` for training."""
    from transformers.trainer_pt_utils import LengthGroupedSampler
    build = trainer._get_train_sampler

    def _get_train_sampler(train_dataset=None):
        sampler = build(train_dataset)
        if type(sampler) is not LengthGroupedSampler:
            return sampler
        args = trainer.args
        return epoch_seeded_sampler(sampler.lengths, sampler.batch_size,
                                    args.data_seed if args.data_seed is not None else args.seed)

    trainer._get_train_sampler = _get_train_sampler
