"""slth._io: atomic writes leave either the old file or the new one, never a part."""

from __future__ import annotations

import os
import pickle

import pytest

from slth._io import atomic_torch_save, atomic_write, atomic_write_bytes, atomic_write_json


def test_missing_directory_is_refused_before_any_file_is_made(tmp_path):
    target = tmp_path / "no-such-dir" / "out.bin"
    with pytest.raises(FileNotFoundError, match="directory does not exist"):
        atomic_write_bytes(target, b"data")
    assert os.listdir(tmp_path) == []


def test_failing_write_leaves_no_temp_file_and_no_target(tmp_path):
    target = tmp_path / "out.bin"

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, write)
    assert os.listdir(tmp_path) == []


def test_failing_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    old = target.read_bytes()

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"{")
        raise KeyboardInterrupt  # BaseException too: the temp file goes

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert os.listdir(tmp_path) == ["out.json"]
    assert target.read_bytes() == old


def test_failing_torch_save_leaves_nothing(tmp_path):
    target = tmp_path / "state.pt"
    with pytest.raises((pickle.PicklingError, AttributeError)):  # (a local lambda: AttributeError)
        atomic_torch_save(target, {"f": lambda x: x})  # a lambda cannot be pickled
    assert os.listdir(tmp_path) == []


def test_successful_write_leaves_only_the_target(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"data")
    assert os.listdir(tmp_path) == ["out.bin"]
    assert target.read_bytes() == b"data"
