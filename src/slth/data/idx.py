"""MNIST-style IDX files (optionally gzip-compressed), read with numpy in one pass."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ._dataset import Dataset, from_uint8, require_dir

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_MAGIC = {0x0803: 3, 0x0801: 1}  # uint8 data: images (3 dims), labels (1 dim)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file of unsigned bytes (``.gz`` decompressed by name); raises ValueError if malformed."""
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: cannot decompress ({exc})") from None
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _MAGIC:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes "
                         f"(magic {magic:#010x}, expected 0x00000803 or 0x00000801)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) != header + int(np.prod(dims)):
        raise ValueError(f"{path}: truncated or padded IDX file (header says {dims}, {len(data) - header} data bytes)")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def load_idx_dataset(name: str, data_dir: str | os.PathLike | None) -> Dataset:
    """MNIST or Fashion-MNIST (same file names) from ``data_dir``."""
    expected = [f"{stem}[.gz]" for stem in IDX_FILES.values()]
    directory = require_dir(name, data_dir, expected)
    paths = {key: _find(directory, stem) for key, stem in IDX_FILES.items()}
    missing = [str(directory / f"{IDX_FILES[k]}.gz") for k, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(f"dataset {name!r}: missing file(s) {', '.join(missing)} (or the same without .gz)")
    arrays = {key: read_idx(path) for key, path in paths.items()}  # type: ignore[arg-type]
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"dataset {name!r}: {split} images {x.shape} and labels {y.shape} do not match "
                             f"(files {paths[f'x_{split}']}, {paths[f'y_{split}']})")
        if y.max(initial=0) > 9:
            raise ValueError(f"dataset {name!r}: labels above 9 in {paths[f'y_{split}']}")
    return from_uint8(name, arrays["x_train"][:, None], arrays["y_train"], arrays["x_test"][:, None],
                      arrays["y_test"], num_classes=10)
