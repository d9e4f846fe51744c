import pytest

from spinebench.data.splits import make_split
from spinebench.errors import ConfigError, DataError

IDS = [f"case_{i:03d}" for i in range(40)]


def split(labeled=0.1, seed=0, split_seed=0):
    return make_split(
        IDS,
        labeled=labeled,
        seed=seed,
        split_seed=split_seed,
        val_fraction=0.15,
        test_fraction=0.25,
    )


def test_split_is_deterministic_and_partitions_cases():
    a, b = split(), split()
    assert a == b
    parts = set(a.train) | set(a.val) | set(a.test)
    assert parts == set(IDS)
    assert not (set(a.train) & set(a.test)) and not (set(a.val) & set(a.test))
    assert set(a.labeled) <= set(a.train)
    assert set(a.unlabeled) == set(a.train) - set(a.labeled)


def test_test_cases_do_not_depend_on_run_seed_but_labeled_subset_does():
    a, b = split(seed=0), split(seed=1)
    assert a.test == b.test and a.val == b.val
    assert a.labeled != b.labeled


def test_labeled_subsets_are_nested_across_fractions():
    small, large = split(labeled=0.05), split(labeled=0.5)
    assert set(small.labeled) <= set(large.labeled)


def test_at_least_one_labeled_case_and_all_at_full():
    assert len(split(labeled=0.001).labeled) == 1
    full = split(labeled=1.0)
    assert full.labeled == full.train and full.unlabeled == ()


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, "x"])
def test_bad_fraction(bad):
    with pytest.raises(ConfigError, match="--labeled"):
        split(labeled=bad)


def test_too_few_cases():
    with pytest.raises(DataError, match="at least 3"):
        make_split(
            ["a", "b"], labeled=0.5, seed=0, split_seed=0, val_fraction=0.1, test_fraction=0.1
        )
