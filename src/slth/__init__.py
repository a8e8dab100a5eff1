"""slth: strong lottery tickets -- construct them, learn them, measure them.

Public entry points (imported lazily so that ``import slth`` stays fast):

* :mod:`slth.subsetsum` -- exact batched SubsetSum engine (numba, torch).
* :func:`slth.construct` -- trained ReLU network -> ticket over a seeded random network.
* :mod:`slth.supermask` -- learning by pruning (edge-popup and successors).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["construct", "Ticket", "__version__"]


def __getattr__(name: str):
    if name in ("construct", "Ticket"):
        from . import construct as _construct

        return getattr(_construct, name)
    raise AttributeError(f"module 'slth' has no attribute {name!r}")
