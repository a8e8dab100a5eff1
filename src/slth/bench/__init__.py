"""Benchmarks, one home: the measurements behind ``slth bench ...`` and the scripts in ``benchmarks/``
(results go to docs/benchmarks.md with the machine and date).

* :mod:`slth.bench.subsetsum` -- the SubsetSum engine against the MIP references (``slth bench subsetsum``).
* :mod:`slth.bench.supermask` -- a supermask training step against a dense one, and a peer edge-popup in the
  style of the reference code (``slth bench supermask-step``).

The package sits above the trainer (it times training steps); the CLI only dispatches to it.
"""
