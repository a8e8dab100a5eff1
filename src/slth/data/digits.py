"""scikit-learn's 8x8 digits (1797 images, shipped with scikit-learn): the offline default."""

from __future__ import annotations

import numpy as np

from ._dataset import Dataset, from_uint8

SPLIT_SEED = 0  # fixed: the split is part of the dataset's definition, not of a run
TEST_SIZE = 360


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = bunch.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    return from_uint8("digits", images[train], labels[train], images[test], labels[test], num_classes=10, scale=16.0)
