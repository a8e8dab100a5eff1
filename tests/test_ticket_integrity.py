"""The ticket file's checksum: every tampering that still parses is refused by the checksum alone.

Each case below writes a well-formed file (valid safetensors, valid zlib, valid JSON) whose content no
longer matches the checksum stored with it, so only the checksum can catch it; the test fails if the
checksum comparison is removed from ``slth.ticketfile.from_bytes``.
"""

import json
import zlib

import numpy as np
import pytest
import torch
from safetensors.numpy import load, save

from slth import ticketfile
from slth.construction import construct, mlp


@pytest.fixture(scope="module")
def ticket_bytes(tmp_path_factory):
    torch.manual_seed(0)
    ticket = construct(mlp([6, 5, 3], bias=True), 0.05, seed=3)
    return ticket.save(tmp_path_factory.mktemp("t") / "t.slth").read_bytes()


def _metadata(data: bytes) -> dict:
    import struct

    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n])["__metadata__"]


def _rewrite(data: bytes, *, tensors=None, **meta_changes) -> bytes:
    meta = {**_metadata(data), **meta_changes}
    return save(load(data) if tensors is None else tensors, metadata=meta)


def test_untampered_file_loads(ticket_bytes):
    assert ticketfile.from_bytes(ticket_bytes).seed == 3


def test_flipped_mask_bit_is_caught_by_the_checksum(ticket_bytes):
    tensors = load(ticket_bytes)
    name = next(k for k in tensors if k.startswith("mask/"))
    packed = bytearray(zlib.decompress(tensors[name].tobytes()))
    packed[0] ^= 0x01  # one kept weight becomes pruned, or the other way round
    tensors[name] = np.frombuffer(zlib.compress(bytes(packed), 6), dtype=np.uint8)
    with pytest.raises(ticketfile.TicketFileError, match="checksum mismatch"):
        ticketfile.from_bytes(_rewrite(ticket_bytes, tensors=tensors))


def test_changed_seed_is_caught_by_the_checksum(ticket_bytes):
    with pytest.raises(ticketfile.TicketFileError, match="checksum mismatch"):
        ticketfile.from_bytes(_rewrite(ticket_bytes, seed="4"))


def test_changed_config_is_caught_by_the_checksum(ticket_bytes):
    config = json.loads(_metadata(ticket_bytes)["config"])
    config["eps"] = config["eps"] * 2
    with pytest.raises(ticketfile.TicketFileError, match="checksum mismatch"):
        ticketfile.from_bytes(_rewrite(ticket_bytes, config=json.dumps(config, sort_keys=True)))


def _craft(data: bytes, tensors=None, **meta_changes) -> bytes:
    """A file with the given tensors/metadata and a checksum that matches them (so later checks must act)."""
    tensors = load(data) if tensors is None else tensors
    meta = {**_metadata(data), **meta_changes}
    meta["checksum"] = ticketfile._checksum(int(meta["seed"]), meta["config"], tensors)
    return save(tensors, metadata=meta)


def _first_mask(data):
    tensors = load(data)
    return tensors, next(k for k in tensors if k.startswith("mask/"))


@pytest.mark.parametrize("case, message", [
    ("short", "too short for a header"),
    ("header-len", "header claims"),
    ("header-json", "header is not JSON"),
    ("version", "unsupported ticket format version"),
    ("no-format", "not a slth ticket \\(no 'slth-ticket' format tag in the metadata\\)"),
    ("tensor-data", "truncated or corrupted tensor data"),
    ("no-seed", "incomplete or malformed"),
    ("no-shape", "has no shape in the metadata"),
    ("not-zlib", "is corrupted"),
    ("too-short", "is too short for shape"),
    ("unexpected", "unexpected tensor"),
    ("missing", "listed in the metadata are missing"),
])
def test_each_structural_check_names_the_problem(ticket_bytes, case, message):
    import struct

    data = ticket_bytes
    if case == "short":
        bad = data[:5]
    elif case == "header-len":
        bad = struct.pack("<Q", len(data)) + data[8:]
    elif case == "header-json":
        (n,) = struct.unpack("<Q", data[:8])
        bad = data[:8] + b"{" + b" " * (n - 1) + data[8 + n:]
    elif case == "no-format":
        bad = _craft(data, format="other-ticket")
    elif case == "version":
        bad = _craft(data, format_version="999")
    elif case == "tensor-data":
        bad = data[:-7]
    elif case == "no-seed":
        meta = _metadata(data)
        del meta["seed"]
        bad = save(load(data), metadata=meta)
    elif case == "no-shape":
        shapes = json.loads(_metadata(data)["shapes"])
        shapes.pop(next(iter(shapes)))
        bad = _craft(data, shapes=json.dumps(shapes))
    elif case == "not-zlib":
        tensors, name = _first_mask(data)
        tensors[name] = np.frombuffer(b"definitely not zlib", dtype=np.uint8)
        bad = _craft(data, tensors)
    elif case == "too-short":
        tensors, name = _first_mask(data)
        tensors[name] = np.frombuffer(zlib.compress(b"\x01", 6), dtype=np.uint8)
        bad = _craft(data, tensors)
    elif case == "unexpected":
        tensors = load(data)
        tensors["weights/w"] = np.zeros(3, np.float32)
        bad = _craft(data, tensors)
    elif case == "missing":
        tensors, name = _first_mask(data)
        del tensors[name]
        bad = _craft(data, tensors)
    with pytest.raises(ticketfile.TicketFileError, match=message):
        ticketfile.from_bytes(bad)


def test_bad_masks_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="0/1 or bool"):
        ticketfile.to_bytes(ticketfile.TicketFile(seed=0, config={}, masks={"m": np.array([0, 2])}))
    with pytest.raises(ValueError, match="unknown ticket format version 99"):
        ticketfile.to_bytes(ticketfile.TicketFile(seed=0, config={}, masks={}, format_version=99))
    for seed, kind in [(1.5, "float"), (True, "bool"), ("3", "str")]:
        with pytest.raises(ValueError, match=f"seed must be an int, got {kind}"):
            ticketfile.to_bytes(ticketfile.TicketFile(seed=seed, config={}, masks={}))
    with pytest.raises(FileNotFoundError, match="no such ticket file"):
        ticketfile.load(tmp_path / "none.slth")
