"""Seeds for every random draw slth makes: one ``torch.Generator`` per (run seed, key).

Weight init, supermask scores and mask sampling (:mod:`slth.supermask`) and the trainer's data order and
augmentation (:mod:`slth.train`) each draw from ``generator(seed, *keys)``, keyed by what is drawn
(``"weight"`` and a layer name, ``"data-order"`` and an epoch, ...). A draw therefore depends on neither
torch's global RNG, nor the order in which things are built, nor any other draw. (Construction draws its
random source network from numpy ``SeedSequence`` keys instead: :mod:`slth.construction.network`.)
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from ``seed`` and ``keys``: stable across runs, platforms and Python versions."""
    text = "/".join([str(int(seed)), *(str(k) for k in keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU generator seeded by :func:`derive_seed` (``seed``, ``keys``)."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))
