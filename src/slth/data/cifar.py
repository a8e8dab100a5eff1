"""CIFAR-10 and CIFAR-100 from the "python version" pickle batches.

CIFAR-10: ``data_batch_1..5``, ``test_batch`` (labels ``labels``), loaded into memory as float tensors.
CIFAR-100: ``train``, ``test`` (and ``meta``), fine labels ``fine_labels``; kept as uint8 and served per
image through a DataLoader (:class:`slth.data.streamed.ArrayImages`).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from ._dataset import Dataset, from_uint8, require_dir

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The batches hold only dicts, bytes, lists and numpy arrays: refuse any other global."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _read_batch(path: Path, labels_key: str = "labels", num_classes: int = 10,
                what: str = "CIFAR-10") -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    except Exception as exc:
        raise ValueError(f"{path}: not a {what} python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a {what} python batch (expected a dict, got {type(batch).__name__})")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or labels_key not in batch:
        raise ValueError(f"{path}: {what} batch lacks 'data' or '{labels_key}' (has {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[labels_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{path}: {what} batch must hold uint8 data (N, 3072) and N labels, "
                         f"got {data.dtype} {data.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > num_classes - 1):
        raise ValueError(f"{path}: {what} labels must lie in 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: str | os.PathLike | None) -> Dataset:
    names = TRAIN_BATCHES + [TEST_BATCH]
    directory = require_dir("cifar10", data_dir, names)
    if not (directory / TEST_BATCH).is_file() and (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    missing = [str(directory / n) for n in names if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(f"dataset 'cifar10': missing file(s) {', '.join(missing)}")
    train = [_read_batch(directory / n) for n in TRAIN_BATCHES]
    x_test, y_test = _read_batch(directory / TEST_BATCH)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return from_uint8("cifar10", x_train, y_train, x_test, y_test, num_classes=10)


CIFAR100_FILES = ["train", "test"]


def load_cifar100(data_dir: str | os.PathLike | None, image_size: int | None = None):
    """CIFAR-100 (fine labels) as a :class:`slth.data.streamed.Streamed` of uint8 arrays."""
    from .streamed import ArrayImages, Streamed, channel_stats

    directory = require_dir("cifar100", data_dir, CIFAR100_FILES)
    if not (directory / "test").is_file() and (directory / "cifar-100-python").is_dir():
        directory = directory / "cifar-100-python"
    missing = [str(directory / n) for n in CIFAR100_FILES if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(f"dataset 'cifar100': missing file(s) {', '.join(missing)}")
    x_train, y_train = _read_batch(directory / "train", "fine_labels", 100, "CIFAR-100")
    x_test, y_test = _read_batch(directory / "test", "fine_labels", 100, "CIFAR-100")
    mean, std = channel_stats(x_train)
    return Streamed(name="cifar100", train=ArrayImages(x_train, y_train), test=ArrayImages(x_test, y_test),
                    num_classes=100, input_shape=(3, 32, 32), mean=mean, std=std)
