"""``model.ids``: ``isin_sorted`` agrees with ``np.isin`` wherever its precondition holds, and
``union_sorted`` with ``np.union1d``."""

from __future__ import annotations

import numpy as np
import pytest

from model.ids import isin_sorted


@pytest.mark.parametrize(
    ("ids", "sorted_ids"),
    [
        ([], []),
        ([1, 2], []),  # nothing to find in an empty set
        ([], [1, 2]),
        ([-1, 0, 3, 3, 7, 8, 2**40], [0, 3, 7]),  # below, equal, between, above, repeated
        ([5, 1, 9, 5], [1, 1, 5, 5]),  # unsorted probes, duplicates in the set
    ],
)
def test_matches_np_isin(ids: list[int], sorted_ids: list[int]) -> None:
    probe = np.array(ids, np.int64)
    held = np.array(sorted_ids, np.int64)
    got = isin_sorted(probe, held)
    assert got.dtype == np.bool_ and got.shape == probe.shape
    np.testing.assert_array_equal(got, np.isin(probe, held))


def test_matches_np_isin_on_random_sets() -> None:
    rng = np.random.default_rng(0)
    held = np.unique(rng.integers(0, 1000, 300))
    probe = rng.integers(-10, 1010, 2000)
    np.testing.assert_array_equal(isin_sorted(probe, held), np.isin(probe, held))


def test_union_sorted_equals_np_union1d() -> None:
    """``union_sorted`` (insertion of a short array into a sorted unique one) gives
    ``np.union1d``'s answer, repeats and IDs already present included."""
    from model.ids import union_sorted

    rng = np.random.default_rng(7)
    for _ in range(300):
        big = np.unique(rng.integers(-500, 1000, int(rng.integers(0, 400))))
        small = rng.integers(-600, 1200, int(rng.integers(0, 40)))
        assert np.array_equal(union_sorted(big, small), np.union1d(big, small))
