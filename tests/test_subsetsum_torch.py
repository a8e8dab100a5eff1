"""The PyTorch SubsetSum (``solve(..., device=...)``) gives the numba kernel's results, bit for bit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from slth.subsetsum import solve

torch = pytest.importorskip("torch")


def _same(a, b):
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.error, b.error)
    np.testing.assert_array_equal(a.sum, b.sum)


@pytest.mark.parametrize("n", [1, 2, 5, 9, 14, 18])
def test_identical_masks_on_random_products(n):
    rng = np.random.default_rng(n)
    values = rng.uniform(-1, 1, (64, n)) * rng.uniform(-1, 1, (64, n))
    targets = rng.uniform(-1, 1, 64)
    _same(solve(values, targets), solve(values, targets, device="cpu"))


def test_shared_values_and_chunking(monkeypatch):
    from slth.subsetsum import _torch

    rng = np.random.default_rng(1)
    values = rng.uniform(-1, 1, 11)
    targets = rng.uniform(-2, 2, 40)
    ref = solve(values, targets)
    monkeypatch.setattr(_torch, "_PAIRS_PER_CHUNK", 1 << 8)  # forces 40 rows into several chunks
    _same(ref, solve(values, targets, device="cpu"))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 10).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.float64, (4, n), elements=st.integers(-16, 16).map(lambda k: k / 16)),
            hnp.arrays(np.float64, (4,), elements=st.integers(-40, 40).map(lambda k: k / 16)),
        )
    )
)
def test_dyadic_ties_match(inst):
    values, targets = inst  # exact sums: real ties, broken the same way
    a, b = solve(values, targets), solve(values, targets, device="cpu")
    np.testing.assert_array_equal(a.error, b.error)
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_array_equal(a.mask, b.mask)


def test_invalid_input_is_rejected_before_the_device():
    with pytest.raises(ValueError, match="NaN"):
        solve(np.array([[np.nan]]), np.zeros(1), device="cpu")
