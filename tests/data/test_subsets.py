"""The one subset sampler: proportional per class (largest remainders), seeded, uniform within
a class."""

from __future__ import annotations

import pytest
import torch

from fastrobust.data.subsets import class_allocation, sample_split, stratified_subset
from fastrobust.errors import ConfigError

# class-sorted like an image folder: 50 of class 0, 30 of class 1, 20 of class 2
SORTED = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)


def test_allocation_is_proportional_with_largest_remainders():
    assert class_allocation(SORTED, 10) == {0: 5, 1: 3, 2: 2}
    # quotas 3.5, 2.1, 1.4: floors 3+2+1 = 6, the 7th goes to the largest remainder (class 0)
    assert class_allocation(SORTED, 7) == {0: 4, 1: 2, 2: 1}
    # quotas 0.5, 0.3, 0.2: the one image goes to class 0
    assert class_allocation(SORTED, 1) == {0: 1, 1: 0, 2: 0}
    # equal remainders go to the lower class index
    assert class_allocation(torch.tensor([0, 1, 2, 3]), 2) == {0: 1, 1: 1, 2: 0, 3: 0}
    for n in range(101):
        assert sum(class_allocation(SORTED, n).values()) == n


def test_every_class_in_proportion_not_the_first_ones():
    idx = stratified_subset(SORTED, 20, seed=0)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    assert torch.equal(idx, idx.sort().values)
    assert torch.bincount(SORTED[idx]).tolist() == [10, 6, 4]


def test_same_seed_same_subset_other_seed_other_subset():
    a = stratified_subset(SORTED, 20, seed=0)
    assert torch.equal(a, stratified_subset(SORTED, 20, seed=0))
    b = stratified_subset(SORTED, 20, seed=1)
    assert not torch.equal(a, b)
    assert torch.bincount(SORTED[b]).tolist() == [10, 6, 4]


def test_uniform_within_a_class():
    """Over many seeds every image of a class is picked about equally often (n_c / N_c)."""
    hits = torch.zeros(len(SORTED))
    seeds = 400
    for seed in range(seeds):
        hits[stratified_subset(SORTED, 10, seed)] += 1
    # class 0: 5 of 50 per draw -> each image picked with probability 0.1 (40 of 400 draws)
    assert hits[:50].sum() == 5 * seeds and hits[50:80].sum() == 3 * seeds
    assert 15 < hits[:50].min() and hits[:50].max() < 70


def test_whole_split_and_empty_and_bad_n():
    assert torch.equal(stratified_subset(SORTED, 100, 0), torch.arange(100))
    assert torch.equal(stratified_subset(SORTED, 500, 0), torch.arange(100))
    assert stratified_subset(SORTED, 0, 0).numel() == 0
    with pytest.raises(ConfigError):
        stratified_subset(SORTED, -1, 0)


def test_record_describes_and_redraws_the_subset():
    record = sample_split(SORTED, 20, 5, split="test")
    assert record.index_tensor().tolist() == stratified_subset(SORTED, 20, 5).tolist()
    assert record.per_class == {0: 10, 1: 6, 2: 4}
    assert record.describe() == "a class-stratified sample of 20 of 100 test points (seed 5)"
    compact = record.to_dict(with_indices=False)
    assert compact == {
        "split": "test",
        "rule": "stratified",
        "seed": 5,
        "n": 20,
        "n_available": 100,
        "per_class": {"0": 10, "1": 6, "2": 4},
    }
    whole = sample_split(SORTED, None, 5, split="test")
    assert whole.is_whole_split and whole.indices is None and whole.n == 100
    assert whole.describe() == "all 100 test points"
    assert torch.equal(whole.index_tensor(), torch.arange(100))


def test_rules_of_runs_recorded_before_stratified_subsets():
    first = sample_split(SORTED, 20, 5, split="test", rule="first")
    assert first.index_tensor().tolist() == list(range(20)) and first.per_class == {0: 20}
    assert first.describe() == "the first 20 of 100 test points"
    randomly = sample_split(SORTED, 20, 5, split="train", rule="random")
    want = torch.randperm(100, generator=torch.Generator().manual_seed(5))[:20]
    assert randomly.index_tensor().tolist() == want.tolist()  # permutation order kept
    with pytest.raises(ConfigError, match="subset rule"):
        sample_split(SORTED, 20, 5, split="test", rule="last")
