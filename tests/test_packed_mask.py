"""Masks held as bits (slth.ticketfile.PackedMask): packing in pieces, counting, digests and files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slth import ticketfile
from slth.ticketfile import BitPacker, PackedMask


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=6), st.integers(0, 2**31 - 1))
def test_bitpacker_matches_packbits_of_the_whole(piece_rows, seed):
    rng = np.random.default_rng(seed)
    pieces = [rng.random((r, 3)) < 0.3 for r in piece_rows]
    whole = np.concatenate(pieces)
    packer = BitPacker(whole.shape)
    for p in pieces:
        packer.add(p)
    packed = packer.done()
    assert packed.shape == whole.shape
    assert np.array_equal(packed.bits, np.packbits(whole.reshape(-1), bitorder="little"))
    assert np.array_equal(packed.unpack(), whole)
    assert packed.count() == int(whole.sum())
    assert np.array_equal(packed.big_endian_bits(), np.packbits(whole.reshape(-1)))


def test_bitpacker_refuses_a_wrong_number_of_entries():
    packer = BitPacker((4, 3))
    packer.add(np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="packed 9 entries for a mask of shape"):
        packer.done()


def test_packed_mask_refuses_wrong_sizes_and_stray_padding_bits():
    with pytest.raises(ValueError, match="needs 2 uint8 bytes"):
        PackedMask(np.zeros(1, np.uint8), (3, 3))
    with pytest.raises(ValueError, match="bits set past its last entry"):
        PackedMask(np.array([0, 0b10], np.uint8), (3, 3))  # 9 entries: bit 9 is padding
    assert PackedMask(np.array([0, 0b1], np.uint8), (3, 3)).count() == 1


def test_a_file_with_padding_bits_set_is_refused(tmp_path):
    # a writer that left a stray padding bit (under a valid checksum): the reader names the mask
    bad = _stray(PackedMask.pack(np.ones(5, bool)))
    path = ticketfile.save(tmp_path / "t.slth", ticketfile.TicketFile(seed=1, config={"kind": "x"}, masks={"m": bad}))
    with pytest.raises(ticketfile.TicketFileError, match="mask 'm' is corrupted .*past its last entry"):
        ticketfile.load(path)


def _stray(p: PackedMask) -> PackedMask:
    """``p`` with its last padding bit set, built past the constructor's check."""
    bits = p.bits.copy()
    bits[-1] |= 0x80
    out = object.__new__(PackedMask)
    object.__setattr__(out, "bits", bits)
    object.__setattr__(out, "shape", p.shape)
    return out


def test_load_keeps_masks_packed_on_request(tmp_path):
    m = np.random.default_rng(0).random((7, 5)) < 0.5
    path = ticketfile.save(tmp_path / "t.slth", ticketfile.TicketFile(seed=3, config={"kind": "x"}, masks={"m": m}))
    packed = ticketfile.load(path, packed_masks=True).masks["m"]
    assert isinstance(packed, PackedMask) and packed.shape == (7, 5)
    assert np.array_equal(packed.unpack(), m)
    assert np.array_equal(ticketfile.load(path).masks["m"], m)


def test_gpt2_small_target_and_a_ticket_held_as_bits(tmp_path):
    """The zoo's GPT-2-small shape has GPT-2's parameter count (bias-free) and init; a narrow, short one
    constructs, its ticket holds bits (1/8 of a byte per random weight) and round-trips bit for bit."""
    import torch

    from slth.construction import Ticket, construct
    from slth.models.zoo import build_target

    torch.manual_seed(0)
    full = build_target("gpt2-small", (1024,), 50257)
    assert sum(p.numel() for p in full.parameters()) == 124_337_664
    std = full.tok.weight.std().item()
    assert 0.019 < std < 0.021  # GPT-2's N(0, 0.02), not nn.Embedding's N(0, 1)
    del full
    target = build_target("gpt2-small", (4,), 11, width=1 / 32).eval()  # d 24, 12 heads of 2
    ticket = construct(target, 0.05, seed=1)
    assert all(isinstance(m, PackedMask) for m in ticket.packed.values())
    assert sum(m.count() for m in ticket.packed.values()) == ticket.stats["kept_params"]
    loaded = Ticket.load(ticket.save(tmp_path / "g.slth"))
    assert loaded.digest() == ticket.digest()
    x = torch.randint(0, 11, (3, 4))
    assert torch.equal(loaded.to_module()(x), ticket.to_module()(x))
