"""Datasets as in-memory tensors: ``load_dataset(name, data_dir)``.

Every loader reads local files only (nothing is downloaded at run time) and returns a :class:`Dataset`
of float32 images in [0, 1], shape (N, C, H, W), and int64 labels. A missing or malformed file raises
an error that names the file that was expected.

=============  ===========================================  ==============================
name           files (in ``data_dir``)                      shape
=============  ===========================================  ==============================
digits         none (scikit-learn's embedded copy)          (1, 8, 8), split 1437 / 360
mnist          ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``   (1, 28, 28)
fashion-mnist  same names as mnist                          (1, 28, 28)
cifar10        ``data_batch_1..5``, ``test_batch`` (python pickle; also under
               ``cifar-10-batches-py/``)                    (3, 32, 32)
=============  ===========================================  ==============================
"""

from __future__ import annotations

import os
from typing import Callable

from ._dataset import Dataset
from .cifar import load_cifar10
from .digits import load_digits
from .idx import load_idx_dataset, read_idx

__all__ = ["Dataset", "DATASETS", "load_dataset", "read_idx"]

Loader = Callable[["str | os.PathLike | None"], Dataset]

DATASETS: dict[str, Loader] = {
    "digits": lambda data_dir: load_digits(),
    "mnist": lambda data_dir: load_idx_dataset("mnist", data_dir),
    "fashion-mnist": lambda data_dir: load_idx_dataset("fashion-mnist", data_dir),
    "cifar10": lambda data_dir: load_cifar10(data_dir),
}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load dataset ``name`` from ``data_dir`` (not needed for ``digits``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](data_dir)
