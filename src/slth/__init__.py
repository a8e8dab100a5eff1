"""slth: strong lottery tickets -- construct them, learn them, measure them.

Public entry points (imported on first use, so that ``import slth`` and ``slth --help`` stay fast):

* :func:`slth.construct` -- trained network -> ticket (seed + masks over a seeded random network);
  the machinery lives in :mod:`slth.construction`.
* :class:`slth.Ticket` -- a constructed ticket: ``Ticket.load(path)``, ``to_module()``, ``save(path)``.
* :mod:`slth.subsetsum` -- exact batched SubsetSum engine (numba, torch).
* :mod:`slth.supermask` -- learning by pruning (edge-popup and successors).

No subpackage shares a name with an exported function or class, so ``slth.construct`` is the function
whatever was imported before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # what a type checker sees of the lazy exports below (nothing is imported at run time)
    from .construction.api import construct
    from .construction.ticket import Ticket

# exported name -> module that defines it
_EXPORTS = {
    "construct": "slth.construction.api",
    "Ticket": "slth.construction.ticket",
}

__all__ = ["construct", "Ticket", "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups are plain attribute reads
        return value
    raise AttributeError(f"module 'slth' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
