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
