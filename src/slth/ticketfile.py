"""The one on-disk format for tickets (constructed or learned): seed + config + packed masks.

A ticket file is a safetensors file. Its tensors are

* ``mask/<name>``  -- uint8, the boolean mask of parameter ``<name>`` packed with ``np.packbits``
  (little bit order) and then zlib-compressed (tickets are sparse, so this is several times smaller
  than the packed bits); the unpacked shape is in the metadata;
* ``extra/<name>`` -- optional small numeric arrays a producer needs (float64/float32/int64...).

Its ``__metadata__`` holds ``format = "slth-ticket"``, ``format_version`` (1; 2 for constructed tickets
whose config uses what version 1 cannot describe: ops such as ``shift`` or an ``input_range``; 3 for those
using the product-attention ops ``qk_scores`` / ``vo_mix`` of ``construct(..., attention="product")``; 4 for those
built by module replacement, whose masks name modules of a model class rather than a construction graph; the file
layout is the same, so an older reader refuses them cleanly instead of misreading them), ``seed``, ``config``
(JSON), ``shapes`` (JSON) and ``checksum``: SHA-256 over the config, the seed and every tensor's
name, dtype, shape and bytes. Loading parses the header itself, never unpickles, and raises
:class:`TicketFileError` (a ``ValueError``) naming the problem for a foreign, truncated or
corrupted file. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_write_bytes

FORMAT = "slth-ticket"
FORMAT_VERSION = 4  # the newest version this code reads and writes
READABLE_VERSIONS = (1, 2, 3, 4)


class TicketFileError(ValueError):
    """A file is not a valid slth ticket (foreign, truncated, corrupted or of an unknown version)."""


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_REVERSED = np.array([int(f"{i:08b}"[::-1], 2) for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True, eq=False)
class PackedMask:
    """A boolean mask held as its bits, ``np.packbits`` of the flattened mask in little bit order (the
    layout of a ticket file): one eighth of a bool array's memory, so a construction with billions of
    random weights (a GPT-2-small-sized target) keeps its masks in memory and writes them without
    unpacking."""

    bits: np.ndarray  # uint8, ceil(size / 8) bytes; the padding bits of the last byte are 0
    shape: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.bits.dtype != np.uint8 or self.bits.ndim != 1 or self.bits.size != (self.size + 7) // 8:
            raise ValueError(f"packed mask of shape {self.shape} needs {(self.size + 7) // 8} uint8 bytes, "
                             f"got {self.bits.size} of {self.bits.dtype}")
        if self.size % 8 and int(self.bits[-1]) >> (self.size % 8):
            raise ValueError(f"packed mask of shape {self.shape} has bits set past its last entry")

    @classmethod
    def pack(cls, mask: Any) -> PackedMask:
        arr = _as_bool_array(mask)
        return cls(np.packbits(arr.reshape(-1), bitorder="little"), arr.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def unpack(self) -> np.ndarray:
        """The bool array."""
        return np.unpackbits(self.bits, count=self.size, bitorder="little").astype(bool).reshape(self.shape)

    def count(self) -> int:
        """Number of True entries."""
        return int(_POPCOUNT[self.bits].sum(dtype=np.int64))

    def big_endian_bits(self) -> np.ndarray:
        """The same bits as ``np.packbits(mask.reshape(-1))`` (numpy's default, big bit order)."""
        return _REVERSED[self.bits]


class BitPacker:
    """Packs a mask from consecutive pieces of its flattened entries (row blocks of a layer, say) into a
    :class:`PackedMask` without ever holding the whole bool array."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(int(s) for s in shape)
        self._parts: list[np.ndarray] = []
        self._carry = np.zeros(0, dtype=bool)
        self._seen = 0

    def add(self, piece: np.ndarray) -> None:
        flat = np.concatenate([self._carry, _as_bool_array(piece).reshape(-1)])
        whole = flat.size - flat.size % 8
        self._parts.append(np.packbits(flat[:whole], bitorder="little"))
        self._carry = flat[whole:]
        self._seen += piece.size

    def done(self) -> PackedMask:
        size = int(np.prod(self.shape, dtype=np.int64))
        if self._seen != size:
            raise ValueError(f"packed {self._seen} entries for a mask of shape {self.shape} ({size} entries)")
        self._parts.append(np.packbits(self._carry, bitorder="little"))
        bits = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        self._parts, self._carry = [], np.zeros(0, dtype=bool)
        return PackedMask(bits, self.shape)


@dataclass
class TicketFile:
    seed: int
    config: dict[str, Any]
    masks: dict[str, np.ndarray | PackedMask]  # name -> bool array (or its bits); load(packed=True) gives bits
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    format_version: int = 1  # written as is: the lowest version that can describe the ticket


def _as_bool_array(mask: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError("mask values must be 0/1 or bool")
        arr = arr.astype(np.bool_)
    return arr


def _checksum(seed: int, config_json: str, tensors: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(FORMAT.encode())
    h.update(str(seed).encode())
    h.update(config_json.encode())
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        h.update(name.encode())
        h.update(arr.dtype.str.encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def to_bytes(ticket: TicketFile) -> bytes:
    from safetensors.numpy import save

    if ticket.format_version not in READABLE_VERSIONS:
        raise ValueError(f"unknown ticket format version {ticket.format_version!r}")
    if not isinstance(ticket.seed, (int, np.integer)) or isinstance(ticket.seed, bool):
        raise ValueError(f"seed must be an int, got {type(ticket.seed).__name__}")
    config_json = json.dumps(ticket.config, sort_keys=True)
    tensors: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    for name, mask in ticket.masks.items():
        packed = mask if isinstance(mask, PackedMask) else PackedMask.pack(mask)
        shapes[name] = list(packed.shape)
        tensors[f"mask/{name}"] = np.frombuffer(zlib.compress(packed.bits.tobytes(), 6), dtype=np.uint8)
    for name, arr in ticket.extras.items():
        tensors[f"extra/{name}"] = np.ascontiguousarray(np.asarray(arr))
    metadata = {
        "format": FORMAT,
        "format_version": str(int(ticket.format_version)),
        "seed": str(int(ticket.seed)),
        "config": config_json,
        "shapes": json.dumps(shapes, sort_keys=True),
        "checksum": _checksum(int(ticket.seed), config_json, tensors),
    }
    return save(tensors, metadata=metadata)


def save(path: str | os.PathLike, ticket: TicketFile) -> Path:
    """Write ``ticket`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, to_bytes(ticket))


def from_bytes(data: bytes, *, source: str = "<bytes>", packed_masks: bool = False) -> TicketFile:
    """Parse a ticket file's bytes; ``packed_masks=True`` keeps each mask as its bits (:class:`PackedMask`)."""
    from safetensors.numpy import load

    if len(data) < 8:
        raise TicketFileError(f"{source}: not a slth ticket (file is {len(data)} bytes, too short for a header)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8 or header_len > 100_000_000:
        raise TicketFileError(f"{source}: truncated or not a slth ticket (header claims {header_len} bytes)")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TicketFileError(f"{source}: not a slth ticket (header is not JSON: {exc})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TicketFileError(f"{source}: not a slth ticket (no '{FORMAT}' format tag in the metadata)")
    version = meta.get("format_version")
    if version not in [str(v) for v in READABLE_VERSIONS]:
        raise TicketFileError(f"{source}: unsupported ticket format version {version!r} (this slth reads "
                              f"{', '.join(map(str, READABLE_VERSIONS))})")
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise TicketFileError(f"{source}: truncated or corrupted tensor data ({exc})") from None
    try:
        seed = int(meta["seed"])
        config_json = meta["config"]
        config = json.loads(config_json)
        shapes = json.loads(meta["shapes"])
        checksum = meta["checksum"]
    except (KeyError, ValueError) as exc:
        raise TicketFileError(f"{source}: ticket metadata is incomplete or malformed ({exc})") from None
    if _checksum(seed, config_json, tensors) != checksum:
        raise TicketFileError(f"{source}: checksum mismatch, the ticket file is corrupted")
    masks: dict[str, np.ndarray] = {}
    extras: dict[str, np.ndarray] = {}
    for key, arr in tensors.items():
        kind, _, name = key.partition("/")
        if kind == "mask":
            if name not in shapes:
                raise TicketFileError(f"{source}: mask {name!r} has no shape in the metadata")
            shape = tuple(int(s) for s in shapes[name])
            count = int(np.prod(shape, dtype=np.int64))
            try:
                packed = np.frombuffer(zlib.decompress(np.ascontiguousarray(arr).tobytes()), dtype=np.uint8)
            except zlib.error as exc:
                raise TicketFileError(f"{source}: mask {name!r} is corrupted ({exc})") from None
            if arr.dtype != np.uint8 or packed.size * 8 < count:
                raise TicketFileError(f"{source}: mask {name!r} is too short for shape {shape}")
            try:
                bits = PackedMask(packed[: (count + 7) // 8], shape)
            except ValueError as exc:
                raise TicketFileError(f"{source}: mask {name!r} is corrupted ({exc})") from None
            masks[name] = bits if packed_masks else bits.unpack()
        elif kind == "extra":
            extras[name] = arr
        else:
            raise TicketFileError(f"{source}: unexpected tensor {key!r}")
    if set(shapes) != set(masks):
        raise TicketFileError(f"{source}: masks listed in the metadata are missing: {sorted(set(shapes) - set(masks))}")
    return TicketFile(seed=seed, config=config, masks=masks, extras=extras, format_version=int(version))


def load(path: str | os.PathLike, *, packed_masks: bool = False) -> TicketFile:
    """Read a ticket file written by :func:`save`; raises :class:`TicketFileError` if it is not one.
    ``packed_masks=True`` keeps each mask as its bits (:class:`PackedMask`), for tickets too big to unpack."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such ticket file: {path}")
    return from_bytes(path.read_bytes(), source=str(path), packed_masks=packed_masks)
