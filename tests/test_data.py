"""slth.data: the embedded digits split, IDX and CIFAR-10 pickle loaders, and their errors."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from slth.data import DATASETS, Dataset, load_dataset, read_idx

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    magic = 0x0803 if array.ndim == 3 else 0x0801
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def _fake_mnist(directory: Path, n_train=20, n_test=10, compress=True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for stem, arr in arrays.items():
        _write_idx(directory / (stem + (".gz" if compress else "")), arr, compress)
    return arrays


def test_digits_is_deterministic_split_in_unit_range():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert isinstance(a, Dataset)
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert float(a.x_train.min()) == 0.0 and float(a.x_train.max()) == 1.0
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert len(a.mean) == len(a.std) == 1 and 0 < a.mean[0] < 1


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(err.value)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_roundtrip(tmp_path, compress):
    arrays = _fake_mnist(tmp_path, compress=compress)
    ds = load_dataset("mnist", tmp_path)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32) / 255.0)
    assert torch.equal(ds.x_train[:, 0], expected)
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_missing_files_are_all_named(tmp_path):
    _fake_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashion-mnist", tmp_path)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in str(err.value)
    assert str(tmp_path / "train-labels-idx1-ubyte.gz") in str(err.value)
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_dataset("mnist")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nowhere")


def test_malformed_idx_is_rejected(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x09\x03" + b"\x00" * 20))
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    truncated = tmp_path / "t"
    _write_idx(truncated, np.zeros((3, 28, 28)), compress=False)
    truncated.write_bytes(truncated.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(truncated)
    notgz = tmp_path / "n.gz"
    notgz.write_bytes(b"plain bytes")
    with pytest.raises(ValueError, match="decompress"):
        read_idx(notgz)


def _fake_cifar(directory: Path, per_batch=4) -> None:
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * per_batch}
        with open(directory / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)


def test_cifar10_from_synthetic_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    _fake_cifar(root)
    for directory in (root, tmp_path):  # the batch directory or its parent
        ds = load_dataset("cifar10", directory)
        assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
        assert len(ds.mean) == 3 and ds.y_train.dtype == torch.int64
    with open(root / "test_batch", "rb") as fh:
        raw = pickle.load(fh)
    first = torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.equal(ds.x_test[0], first)


def test_cifar10_errors(tmp_path):
    _fake_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)
    with open(tmp_path / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(ValueError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(print))  # a foreign global: refused, never called
    with pytest.raises(ValueError, match="not allowed"):
        load_dataset("cifar10", tmp_path)


def test_idx_too_short_for_a_magic_number(tmp_path):
    short = tmp_path / "s"
    short.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match=r"s: not an IDX file \(only 2 bytes\)"):
        read_idx(short)


def test_idx_images_and_labels_of_different_lengths_are_refused(tmp_path):
    arrays = _fake_mnist(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", arrays["train-labels-idx1-ubyte"][:-1], compress=True)
    with pytest.raises(ValueError, match=r"dataset 'mnist': train images \(20, 28, 28\) and labels \(19,\) do not"):
        load_dataset("mnist", tmp_path)


def test_idx_labels_above_9_are_refused_when_loading(tmp_path):  # not as a device assert in training
    arrays = _fake_mnist(tmp_path)
    labels = arrays["t10k-labels-idx1-ubyte"].copy()
    labels[3] = 10
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels, compress=True)
    with pytest.raises(ValueError, match="dataset 'mnist': labels above 9 in .*t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path)


def test_cifar10_batch_that_is_not_a_batch_dict(tmp_path):
    _fake_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump([1, 2, 3], fh)
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 python batch \(expected a dict, got list\)"):
        load_dataset("cifar10", tmp_path)
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]}, fh)
    with pytest.raises(ValueError, match=r"test_batch: CIFAR-10 batch lacks 'data' or 'labels' \(has \['data', "):
        load_dataset("cifar10", tmp_path)


def test_dataset_refuses_images_or_labels_of_the_wrong_type():
    x, y = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64)
    Dataset("d", x, y, x, y, 10, (0.0,), (1.0,))
    with pytest.raises(ValueError, match=r"d test: images must be float32 \(N, C, H, W\), got torch.float64"):
        Dataset("d", x, y, x.double(), y, 10, (0.0,), (1.0,))
    with pytest.raises(ValueError, match=r"d train: labels must be int64 of length 4, got torch.int64 \(3,\)"):
        Dataset("d", x, y[:3], x, y, 10, (0.0,), (1.0,))


def test_data_set_options_are_converted_once_or_refused():
    from slth.data import check_data_args

    assert check_data_args("pystdlib-chars", [("context", "8")]) == (("context", 8),)
    with pytest.raises(ValueError, match="data set option 'context' given twice"):  # not: the last one wins
        check_data_args("pystdlib-chars", [("context", "8"), ("context", "9")])
    with pytest.raises(ValueError, match="option context='abc' of data set pystdlib-chars: expected int"):
        check_data_args("pystdlib-chars", {"context": "abc"})  # not: the default used
    with pytest.raises(ValueError, match="unknown option 'ctx' of data set pystdlib-chars; its options: context"):
        check_data_args("pystdlib-chars", {"ctx": 8})


@pytest.mark.parametrize("option,value,message", [
    ("context", 0, "context must be >= 1, got 0"), ("max_bytes", 0, "max_bytes must be >= 1, got 0"),
    ("test_every", 1, "test_every must be >= 2, got 1"),
])
def test_pystdlib_chars_refuses_each_bad_option_by_name(option, value, message):
    from slth.data.text import load_pystdlib_chars

    with pytest.raises(ValueError, match=f"pystdlib-chars: {message}$"):
        load_pystdlib_chars(**{option: value})


def test_pystdlib_chars_refuses_a_test_split_shorter_than_the_context():
    from slth.data.text import load_pystdlib_chars

    with pytest.raises(ValueError, match=r"pystdlib-chars: the test split \(0 characters of 0 files under .*\) is too "
                                         r"small for a context of 8; raise max_bytes"):
        load_pystdlib_chars(context=8, max_bytes=1, test_every=2)  # one file, in the train split


def test_token_dataset_refuses_windows_of_the_wrong_type_or_none():
    from slth.data import TokenDataset

    x = torch.zeros(3, 5, dtype=torch.int64)
    TokenDataset("t", x, x, x, x, 98)
    with pytest.raises(ValueError, match=r"t train: inputs and targets must be int64 \(N, context\) of one shape"):
        TokenDataset("t", x.float(), x, x, x, 98)
    with pytest.raises(ValueError, match=r"t test: no windows \(the corpus is too small for the context\)"):
        TokenDataset("t", x, x, x[:0], x[:0], 98)


@pytest.mark.data
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_idx_data(name):
    directory = SHARED / name
    if not directory.is_dir():
        pytest.skip(f"{directory} not present")
    ds = load_dataset(name, directory)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_test).tolist()[:2] == ([980, 1135] if name == "mnist" else [1000, 1000])


def test_normalized_subtracts_the_training_mean_and_divides_by_the_std_per_channel():
    ds = load_dataset("digits")
    x = ds.x_test[:16]
    want = (x - ds.mean[0]) / ds.std[0]  # one channel
    assert torch.allclose(ds.normalized(x), want, rtol=0, atol=1e-6)
    assert ds.normalized(x).mean(dim=(0, 2, 3)).abs().max() < 0.5
    plain = Dataset("plain", ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.num_classes, (), ())
    assert plain.normalized(x) is x  # no statistics: the images as they are
