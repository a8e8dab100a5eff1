"""Streamed data sets (CIFAR-100 pickles, image folders): loading, transforms, errors, and training on them."""

from __future__ import annotations

import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slth.data import DATASETS, Streamed, load_dataset, open_dataset

torch.set_num_threads(1)


def make_cifar100(directory: Path, n_train=24, n_test=12, nested=True) -> Path:
    rng = np.random.default_rng(2)
    root = directory / "cifar-100-python" if nested else directory
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {b"filenames": [b"x.png"] * n, b"batch_label": name.encode(),
                 b"fine_labels": rng.integers(0, 100, n).tolist(), b"coarse_labels": rng.integers(0, 20, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"c%d" % i for i in range(100)]}, protocol=2))
    return root


def make_image_folder(directory: Path, classes=("cat", "dog", "fox"), per_class=(6, 3), size=(40, 30)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(3)
    for split, count in zip(("train", "val"), per_class):
        for c, name in enumerate(classes):
            d = directory / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                array[..., c % 3] = 255  # each class is tinted: learnable
                suffix = ".png" if i % 2 else ".jpg"
                Image.fromarray(array).save(d / f"{i}{suffix}")
    (directory / "train" / "cat" / "notes.txt").write_text("not an image")
    return directory


def test_registry_kinds():
    assert {n for n, s in DATASETS.items() if s.streamed} == {"cifar100", "image-folder"}
    with pytest.raises(ValueError, match="streamed"):
        load_dataset("cifar100", "/nowhere")


@pytest.mark.parametrize("nested", [True, False])
def test_cifar100_from_pickles(tmp_path, nested):
    root = make_cifar100(tmp_path, nested=nested)
    data = open_dataset("cifar100", tmp_path)
    assert isinstance(data, Streamed) and data.num_classes == 100 and data.input_shape == (3, 32, 32)
    test = data.split("test", normalize=False)
    x, y = test[0]
    with open(root / "test", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    assert torch.equal(x, torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32).astype(np.float32) / 255))
    assert y == raw[b"fine_labels"][0]
    train = data.split("train", augment=True)
    a, b = train[(5, 123)], train[(5, 123)]
    assert torch.equal(a[0], b[0]) and a[0].shape == (3, 32, 32)  # the seed fixes the augmentation
    assert len(data.mean) == 3 and all(0 < s for s in data.std)


def test_cifar100_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="test"):
        (tmp_path / "train").write_bytes(b"")
        open_dataset("cifar100", tmp_path)
    root = make_cifar100(tmp_path / "c", nested=False)
    batch = pickle.loads((root / "train").read_bytes())
    batch[b"fine_labels"][0] = 100
    (root / "train").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match="0..99"):
        open_dataset("cifar100", root)
    (root / "train").write_bytes(pickle.dumps(print))
    with pytest.raises(ValueError, match="not allowed"):
        open_dataset("cifar100", root)


def test_image_folder(tmp_path):
    make_image_folder(tmp_path)
    data = open_dataset("image-folder", tmp_path, image_size=16)
    assert data.num_classes == 3 and data.input_shape == (3, 16, 16)
    assert len(data.train) == 18 and len(data.test) == 9
    train, val = data.split("train", augment=True), data.split("test")
    x, y = train[(0, 7)]
    assert x.shape == (3, 16, 16) and y == 0 and torch.equal(x, train[(0, 7)][0])
    assert not torch.equal(x, train[(0, 8)][0])  # another seed, another crop
    v, _ = val[4]
    assert v.shape == (3, 16, 16) and torch.equal(v, val[(4, 99)][0])  # evaluation: no randomness
    assert open_dataset("image-folder", tmp_path).input_shape == (3, 224, 224)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset 'image-folder': no directory .*train \(expected"):
        open_dataset("image-folder", tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="dataset 'image-folder': .*train has no class sub-directories"):
        open_dataset("image-folder", tmp_path)
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match=r"no \.png/\.jpg/\.jpeg images under .*train/<class>/"):
        open_dataset("image-folder", tmp_path)
    (tmp_path / "val").rmdir()
    make_image_folder(tmp_path / "noval")
    shutil.rmtree(tmp_path / "noval" / "val")
    with pytest.raises(FileNotFoundError, match=r"dataset 'image-folder': no directory .*noval/val \(expected"):
        open_dataset("image-folder", tmp_path / "noval")
    shutil.rmtree(tmp_path / "train")
    make_image_folder(tmp_path)
    (tmp_path / "val" / "wolf").mkdir()
    with pytest.raises(ValueError, match="wolf"):
        open_dataset("image-folder", tmp_path)
    with pytest.raises(ValueError, match="image-folder"):
        open_dataset("cifar100", tmp_path, image_size=32)


def test_image_folder_without_pillow_says_how_to_install_it(monkeypatch):
    from slth.data.streamed import _pillow

    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL raises ImportError
    with pytest.raises(ModuleNotFoundError, match="image-folder data sets are decoded with Pillow: pip install pillow"):
        _pillow()


def test_training_on_cifar100_does_not_depend_on_workers(tmp_path):
    from slth.train import TrainConfig, train

    make_cifar100(tmp_path / "data")
    base = dict(method="edge-popup", model="fc", data="cifar100", data_dir=str(tmp_path / "data"), hidden=(16,),
                epochs=2, batch_size=8, seed=1)
    a = train(TrainConfig(**base, workers=0), tmp_path / "a", quiet=True)
    b = train(TrainConfig(**base, workers=2), tmp_path / "b", quiet=True)
    assert a.metrics["config"]["augment"] is True and a.metrics["finished"]
    assert a.metrics["train_loss"] == b.metrics["train_loss"]
    assert a.metrics["test_accuracy_per_epoch"] == b.metrics["test_accuracy_per_epoch"]
    assert (tmp_path / "b" / "ticket.slth").exists()


def test_cli_trains_on_an_image_folder(tmp_path):
    import json

    from typer.testing import CliRunner

    from slth.cli import app

    make_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--method", "biprop", "--model", "conv2", "--width", "0.25",
                                      "--data", "image-folder", "--data-dir", str(tmp_path / "data"),
                                      "--image-size", "16", "--workers", "1", "--epochs", "2", "--batch-size", "6",
                                      "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["image_size"] == 16 and metrics["finished"]
    from slth.supermask import from_ticket

    assert from_ticket(out / "ticket.slth")(torch.zeros(1, 3, 16, 16)).shape == (1, 3)
