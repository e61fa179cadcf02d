"""bench.linear_variants' full-rank solves: the plain variant is the fit the linear tower
makes at full rank, and each changed choice changes the solution as it says."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from bench.linear_variants import Variant, solve
from model.linear import fit_dlae


def _bags() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = (rng.random((40, 25)) < 0.2).astype(np.float64)
    x[:, 0] = 1.0
    return x


def test_plain_variant_is_the_towers_full_rank_fit() -> None:
    x = _bags()
    fit = fit_dlae(sp.csr_array(x), 25, 5.0, 0.3)
    np.testing.assert_allclose(solve(x, Variant("plain"), 5.0, 0.3), fit.w[:25] @ fit.v.T,
                               atol=1e-9)  # fmt: skip


def test_constant_input_adds_a_row_and_user_weights_change_the_fit() -> None:
    x = _bags()
    plain = solve(x, Variant("plain"), 5.0, 0.3)
    with_constant = solve(x, Variant("c", constant=True), 5.0, 0.3)
    assert with_constant.shape == (26, 25) and np.abs(with_constant[25]).max() > 1e-3
    # Equal bags weigh the same whatever the exponent; uneven ones do not.
    even = np.zeros((10, 6))
    even[np.arange(10), np.arange(10) % 6] = 1.0
    np.testing.assert_allclose(solve(even, Variant("w", user_weight=0.5), 1.0, 0.2),
                               solve(even, Variant("p"), 1.0, 0.2), atol=1e-12)  # fmt: skip
    assert not np.allclose(solve(x, Variant("w", user_weight=0.5), 5.0, 0.3), plain)
