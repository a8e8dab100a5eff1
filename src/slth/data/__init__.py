"""Data sets: one registry, :data:`DATASETS`, that the trainer reads.

Every loader reads local files only (nothing is downloaded at run time). A missing or malformed file
raises an error that names the file that was expected.

*In memory* (the fast path): ``load_dataset(name, data_dir)`` returns a :class:`Dataset` of float32
images in [0, 1], shape (N, C, H, W), and int64 labels; the trainer moves it to the device once.
*Streamed*: ``open_dataset(name, data_dir)`` returns a :class:`slth.data.streamed.Streamed` whose
images are decoded and augmented one by one in DataLoader worker processes (``slth train --workers``).

=============  ======  =====================================================  ==============================
name           kind    files (in ``data_dir``)                                shape
=============  ======  =====================================================  ==============================
digits         memory  none (scikit-learn's embedded copy)                    (1, 8, 8), split 1437 / 360
mnist          memory  ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``  (1, 28, 28)
fashion-mnist  memory  same names as mnist                                    (1, 28, 28)
cifar10        memory  ``data_batch_1..5``, ``test_batch`` (python pickle;    (3, 32, 32)
                       also under ``cifar-10-batches-py/``)
cifar100       stream  ``train``, ``test`` (python pickle, fine labels; also  (3, 32, 32), 100 classes
                       under ``cifar-100-python/``)
image-folder   stream  ``train/<class>/*.png|jpg``, ``val/<class>/...``       (3, S, S), S = image_size (224)
=============  ======  =====================================================  ==============================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from ._dataset import Dataset
from .cifar import load_cifar10, load_cifar100
from .digits import load_digits
from .idx import load_idx_dataset, read_idx
from .streamed import Streamed, load_image_folder

__all__ = ["Dataset", "DataSource", "DATASETS", "Streamed", "load_dataset", "open_dataset", "read_idx"]


@dataclass(frozen=True)
class DataSource:
    """A registry entry: ``load(data_dir, image_size)`` gives a :class:`Dataset` (``streamed`` False) or a
    :class:`Streamed`; ``augment`` is the trainer's default; ``image_size`` the default side of the square
    crops where the data set has that option (None: fixed by the files)."""

    load: Callable[["str | os.PathLike | None", "int | None"], "Dataset | Streamed"]
    streamed: bool = False
    augment: bool = False
    image_size: int | None = None


DATASETS: dict[str, DataSource] = {
    "digits": DataSource(lambda data_dir, size: load_digits()),
    "mnist": DataSource(lambda data_dir, size: load_idx_dataset("mnist", data_dir)),
    "fashion-mnist": DataSource(lambda data_dir, size: load_idx_dataset("fashion-mnist", data_dir)),
    "cifar10": DataSource(lambda data_dir, size: load_cifar10(data_dir), augment=True),
    "cifar100": DataSource(load_cifar100, streamed=True, augment=True),
    "image-folder": DataSource(load_image_folder, streamed=True, augment=True, image_size=224),
}


def _source(name: str) -> DataSource:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def open_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 image_size: int | None = None) -> "Dataset | Streamed":
    """Data set ``name`` from ``data_dir``: in memory or streamed, as the registry says."""
    source = _source(name)
    if image_size is not None and source.image_size is None:
        raise ValueError(f"image_size applies to image-folder data sets, not to {name!r}")
    return source.load(data_dir, image_size)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load in-memory dataset ``name`` from ``data_dir`` (not needed for ``digits``)."""
    source = _source(name)
    if source.streamed:
        raise ValueError(f"dataset {name!r} is streamed, not held in memory as tensors: open it with "
                         f"slth.data.open_dataset, or train on it with slth train")
    return source.load(data_dir, None)
