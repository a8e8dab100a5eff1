"""The result type of every SubsetSum solver (numba, torch, references)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Solution:
    """SubsetSum results for a batch of B instances over n values.

    mask:     (B, n) bool -- the chosen subset of each row.
    error:    (B,) float64 -- |sum - target|.
    sum:      (B,) float64 -- the sum of the chosen values (left to right within each half).
    feasible: (B,) bool -- error <= eps (``solve_sparsest``); all True for ``solve``.
    """

    mask: np.ndarray
    error: np.ndarray
    sum: np.ndarray
    feasible: np.ndarray

    @property
    def count(self) -> np.ndarray:
        """Number of chosen elements per row."""
        return self.mask.sum(axis=1)

    def __len__(self) -> int:
        return self.mask.shape[0]
