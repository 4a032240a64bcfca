from fastrobust.seeding import RunSeeds, derive_seed


def test_derived_streams_are_stable_distinct_and_in_range():
    a = derive_seed(0, 7, 1, 0)
    assert a == derive_seed(0, 7, 1, 0)  # the same on every process and run
    others = {derive_seed(0, 7, 2, 0), derive_seed(0, 7, 1, 1), derive_seed(1, 7, 1, 0)}
    others.add(derive_seed(0, 8, 1, 0))
    assert a not in others and len(others) == 4
    assert all(0 <= s < 2**63 for s in others | {a})


def test_run_streams_keep_the_seeds_recorded_runs_used():
    seeds = RunSeeds(3)
    assert seeds.weights() == seeds.sample_order() == 3
    assert seeds.between_epochs(2) == 3 * 7919 + 2
    assert seeds.augmentation(1).initial_seed() == 3 * 100_003 + 2
    assert seeds.legacy_overfit_batch() == 3 + 12_345 and seeds.subsets() == 3
    assert seeds.random_starts(1) != seeds.random_starts(2) != seeds.weights()
