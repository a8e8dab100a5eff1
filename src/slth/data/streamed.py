"""Data sets served image by image through ``torch.utils.data.DataLoader`` (worker processes decode and
augment), for data that does not fit in memory as float tensors.

An item is asked for as ``(index, seed)``: the augmentation of that image is drawn from a generator seeded
with ``seed`` (the trainer derives it from the run seed, the epoch and the index), so the augmented epoch
does not depend on how many workers or processes serve it. ``index`` alone (or seed ``None``) gives the
evaluation transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .augment import center_crop_box, random_crop_flip, random_resized_crop_box

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the usual ImageNet channel statistics, for image folders
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
EVAL_CROP_FRACTION = 0.875  # validation: resize the shorter side to size / 0.875, centre crop size (224 of 256)


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), in [0, 1] units."""
    c = images.shape[1]
    total, squares, count = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 2, 3))
        squares += (x * x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean * mean, 0.0) * count / max(count - 1, 1))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


class ArrayImages:
    """Images held as uint8 (N, C, H, W); augmentation: zero-pad 4, random crop, random flip."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int, gen: torch.Generator | None) -> torch.Tensor:
        x = torch.from_numpy(np.array(self.images[i], dtype=np.float32)).div_(255.0)
        return random_crop_flip(x[None], gen)[0] if gen is not None else x


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ModuleNotFoundError("image-folder data sets are decoded with Pillow: pip install pillow") from None
    return Image


class FolderImages:
    """Image files decoded with Pillow to RGB. Training: random resized crop to ``size`` and random flip;
    evaluation: resize the shorter side to ``size / 0.875``, centre crop ``size``."""

    def __init__(self, files: list[str], labels: list[int], size: int):
        self.files = list(files)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int, gen: torch.Generator | None) -> torch.Tensor:
        Image = _pillow()
        with Image.open(self.files[i]) as im:
            im = im.convert("RGB")
            size = self.size
            if gen is not None:
                box = random_resized_crop_box(im.width, im.height, gen)
                im = im.resize((size, size), Image.BILINEAR, box=box)
                if float(torch.rand((), generator=gen)) < 0.5:
                    im = im.transpose(Image.FLIP_LEFT_RIGHT)
            else:
                short = int(round(size / EVAL_CROP_FRACTION))
                w, h = im.width, im.height
                scale = short / min(w, h)
                im = im.resize((max(size, int(round(w * scale))), max(size, int(round(h * scale)))), Image.BILINEAR)
                im = im.crop(center_crop_box(im.width, im.height, size))
            array = np.asarray(im, dtype=np.uint8)
        return torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32)).div_(255.0)


class Split(torch.utils.data.Dataset):
    """One split of a streamed data set as a map-style dataset of ``(index, seed)`` keys (see the module)."""

    def __init__(self, source, augment: bool, mean=None, std=None):
        self.source, self.augment = source, bool(augment)
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        gen = torch.Generator().manual_seed(int(seed)) if self.augment and seed is not None else None
        x = self.source.image(int(i), gen)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x, int(self.source.labels[i])


@dataclass
class Streamed:
    """A data set served through a DataLoader: ``train`` / ``test`` sources of images, labels int64."""

    name: str
    train: object
    test: object
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def split(self, which: str, augment: bool = False, normalize: bool = True) -> Split:
        source = {"train": self.train, "test": self.test}[which]
        return Split(source, augment and which == "train", *((self.mean, self.std) if normalize else (None, None)))


def _images(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(data_dir, image_size: int | None = None) -> Streamed:
    """``DIR/train/<class>/*.png|jpg|jpeg`` and ``DIR/val/<class>/...`` (ImageNet's layout); the classes
    are the sorted sub-directories of ``train``, and every ``val`` class must be one of them."""
    from ._dataset import require_dir

    expected = ["train/<class>/*.png|jpg", "val/<class>/*.png|jpg"]
    root = require_dir("image-folder", data_dir, expected)
    size = 224 if image_size is None else int(image_size)
    splits = {}
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"dataset 'image-folder': no directory {root / split} "
                                    f"(expected {', '.join(expected)})")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"dataset 'image-folder': {root / 'train'} has no class sub-directories")
    index = {c: i for i, c in enumerate(classes)}
    for split in ("train", "val"):
        files, labels = [], []
        for d in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            if d.name not in index:
                raise ValueError(f"dataset 'image-folder': class {d.name!r} of {root / split} is not a class of "
                                 f"{root / 'train'}")
            found = _images(d)
            files += [str(f) for f in found]
            labels += [index[d.name]] * len(found)
        if not files:
            raise FileNotFoundError(f"dataset 'image-folder': no .png/.jpg/.jpeg images under {root / split}/<class>/")
        splits[split] = FolderImages(files, labels, size)
    return Streamed(name="image-folder", train=splits["train"], test=splits["val"], num_classes=len(classes),
                    input_shape=(3, size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD)
