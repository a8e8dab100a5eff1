"""Data sets: one registry, :data:`DATASETS`, that the trainer reads.

Every loader reads local files only (nothing is downloaded at run time). A missing or malformed file
raises an error that names the file that was expected.

*In memory* (the fast path): ``load_dataset(name, data_dir)`` returns a :class:`Dataset` of float32
images in [0, 1], shape (N, C, H, W), and int64 labels; the trainer moves it to the device once.
*Streamed*: ``open_dataset(name, data_dir)`` returns a :class:`slth.data.streamed.Streamed` whose
images are decoded and augmented one by one in DataLoader worker processes (``slth train --workers``).

==============  ======  =====================================================  ==============================
name            kind    files (in ``data_dir``)                                shape
==============  ======  =====================================================  ==============================
digits          memory  none (scikit-learn's embedded copy)                    (1, 8, 8), split 1437 / 360
mnist           memory  ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``  (1, 28, 28)
fashion-mnist   memory  same names as mnist                                    (1, 28, 28)
cifar10         memory  ``data_batch_1..5``, ``test_batch`` (python pickle;    (3, 32, 32)
                        also under ``cifar-10-batches-py/``)
cifar100        stream  ``train``, ``test`` (python pickle, fine labels; also  (3, 32, 32), 100 classes
                        under ``cifar-100-python/``)
image-folder    stream  ``train/<class>/*.png|jpg``, ``val/<class>/...``       (3, S, S), S = image_size (224)
pystdlib-chars  memory  none (the Python standard library's ``*.py`` files)    token ids (context,), 98 tokens
==============  ======  =====================================================  ==============================

``pystdlib-chars`` (:mod:`slth.data.text`) is a character-level language-modelling set: a sample is a window of
``context`` token ids and its next-token targets (int64, same shape); it reports the Python version and a
SHA-256 of its corpus in ``info``. It takes options (``open_dataset(name, context=32)``; ``slth train
--data-arg context=32``): ``context`` (64), ``max_bytes`` (3,000,000) and ``test_every`` (10).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ._dataset import Dataset
from .cifar import load_cifar10, load_cifar100
from .digits import load_digits
from .idx import load_idx_dataset, read_idx
from .streamed import Streamed, load_image_folder
from .text import TokenDataset, load_pystdlib_chars

__all__ = ["Dataset", "DataSource", "DATASETS", "Streamed", "TokenDataset", "check_data_args", "load_dataset",
           "open_dataset", "read_idx"]


@dataclass(frozen=True)
class DataSource:
    """A registry entry: ``load(data_dir, image_size)`` gives a :class:`Dataset` (``streamed`` False) or a
    :class:`Streamed`; ``augment`` is the trainer's default; ``image_size`` the default side of the square
    crops where the data set has that option (None: fixed by the files); ``options`` the further keyword
    arguments ``load`` takes, with their defaults (their types are the types of the values given)."""

    load: Callable[..., Dataset | Streamed | TokenDataset]
    streamed: bool = False
    augment: bool = False
    image_size: int | None = None
    options: tuple[tuple[str, object], ...] = ()


DATASETS: dict[str, DataSource] = {
    "digits": DataSource(lambda data_dir, size: load_digits()),
    "mnist": DataSource(lambda data_dir, size: load_idx_dataset("mnist", data_dir)),
    "fashion-mnist": DataSource(lambda data_dir, size: load_idx_dataset("fashion-mnist", data_dir)),
    "cifar10": DataSource(lambda data_dir, size: load_cifar10(data_dir), augment=True),
    "cifar100": DataSource(load_cifar100, streamed=True, augment=True),
    "image-folder": DataSource(load_image_folder, streamed=True, augment=True, image_size=224),
    "pystdlib-chars": DataSource(lambda data_dir, size, **options: load_pystdlib_chars(**options),
                                 options=(("context", 64), ("max_bytes", 3_000_000), ("test_every", 10))),
}


def _source(name: str) -> DataSource:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def check_data_args(name: str, args) -> tuple:
    """Options of data set ``name`` (a mapping or (key, value) pairs; a value may be the string the command
    line gives), checked against its registry entry and converted to the type of each default: a sorted
    tuple of (key, value) pairs. Raises ``ValueError`` naming an unknown key, a repeated one or a bad value."""
    from ..models import _convert

    defaults = dict(_source(name).options)
    out: dict[str, object] = {}
    for key, value in (args.items() if hasattr(args, "items") else args):
        if key not in defaults:
            raise ValueError(f"unknown option {key!r} of data set {name}; its options: "
                             f"{', '.join(sorted(defaults)) or 'none'}")
        if key in out:
            raise ValueError(f"data set option {key!r} given twice")
        try:
            out[key] = _convert(f"data set {name}", key, value, type(defaults[key]))
        except ValueError as exc:
            raise ValueError(str(exc).replace("model argument", "option", 1)) from None
    return tuple(sorted(out.items()))


def open_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 image_size: int | None = None, **options) -> Dataset | Streamed | TokenDataset:
    """Data set ``name`` from ``data_dir``: in memory or streamed, as the registry says; ``options`` are the
    data set's own (``context=32`` for pystdlib-chars)."""
    source = _source(name)
    if image_size is not None and source.image_size is None:
        raise ValueError(f"image_size applies to image-folder data sets, not to {name!r}")
    return source.load(data_dir, image_size, **dict(check_data_args(name, options)))


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, **options) -> Dataset | TokenDataset:
    """Load in-memory dataset ``name`` from ``data_dir`` (not needed for ``digits`` and ``pystdlib-chars``)."""
    source = _source(name)
    if source.streamed:
        raise ValueError(f"dataset {name!r} is streamed, not held in memory as tensors: open it with "
                         f"slth.data.open_dataset, or train on it with slth train")
    return source.load(data_dir, None, **dict(check_data_args(name, options)))
