from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Dataset:
    """Train and test split in memory: images float32 in [0, 1], (N, C, H, W); labels int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, of the training images (for optional normalisation)
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (images of this data set) minus the training mean, over the training std, per channel; ``x``
        itself for a data set without statistics (empty ``mean``)."""
        if not self.mean:
            return x
        return (x - torch.tensor(self.mean).view(1, -1, 1, 1)) / torch.tensor(self.std).view(1, -1, 1, 1)

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.float32 or x.ndim != 4:
                raise ValueError(f"{self.name} {split}: images must be float32 (N, C, H, W), "
                                 f"got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"{self.name} {split}: labels must be int64 of length {x.shape[0]}, "
                                 f"got {y.dtype} {tuple(y.shape)}")


def from_uint8(name: str, x_train, y_train, x_test, y_test, num_classes: int, scale: float = 255.0) -> Dataset:
    """Build a :class:`Dataset` from numpy images (N, C, H, W) and labels; pixel / ``scale`` -> [0, 1]."""
    import numpy as np

    # np.require copies read-only buffers (np.frombuffer) so torch never aliases immutable memory
    xt = torch.from_numpy(np.require(x_train, requirements=("C", "W"))).to(torch.float32).div_(scale)
    xs = torch.from_numpy(np.require(x_test, requirements=("C", "W"))).to(torch.float32).div_(scale)
    mean = tuple(float(m) for m in xt.mean(dim=(0, 2, 3), dtype=torch.float64))
    std = tuple(float(s) for s in xt.to(torch.float64).std(dim=(0, 2, 3)))
    return Dataset(
        name=name,
        x_train=xt,
        y_train=torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
        x_test=xs,
        y_test=torch.from_numpy(np.asarray(y_test, dtype=np.int64)),
        num_classes=num_classes,
        mean=mean,
        std=std,
    )


def require_dir(name: str, data_dir: str | os.PathLike | None, expected: list[str]) -> Path:
    if data_dir is None:
        raise FileNotFoundError(f"dataset {name!r} needs data_dir, a directory holding: {', '.join(expected)}")
    path = Path(data_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {name!r}: data directory {path} does not exist "
                                f"(expected files: {', '.join(expected)})")
    return path
