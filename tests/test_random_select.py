"""The random baseline: the kept samples are the first of a seeded random order, and `random_rank` records
each sample's place in that order."""

import types

import pytest
import torch

from explorer.methods.random_select import RandomConfig, RandomSelect

pytestmark = pytest.mark.unit


class _Batch:
    def __init__(self, n):
        self.input_ids = torch.zeros(n, 3, dtype=torch.long)

    def __len__(self):
        return len(self.input_ids)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_rank_is_each_samples_rank_and_the_kept_come_first(seed):
    method = RandomSelect(RandomConfig(keep=0.25, scope="batch"))
    ctx = types.SimpleNamespace(generator=torch.Generator().manual_seed(seed), batch_offset=0, global_batch_size=8)
    d = method.decide(_Batch(8), ctx)
    rank, kept = d.scores["random_rank"], d.weights > 0
    assert sorted(rank.tolist()) == list(range(1, 9))  # ranks 1..B, each once
    assert int(kept.sum()) == 2
    assert sorted(rank[kept].tolist()) == [1.0, 2.0]  # the kept are ranked first ...
    assert rank[~kept].min() == 3  # ... and every dropped sample after them
    # the rank is the place in the generator's random order
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(seed))
    assert [int(rank[i]) for i in perm] == list(range(1, 9))
