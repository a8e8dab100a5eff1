"""Exact batched random-SubsetSum engine.

* :func:`solve` -- minimal error per row (meet in the middle, numba; or PyTorch with ``device=``).
* :func:`solve_sparsest` -- fewest elements within eps per row (what makes tickets sparse).
* :func:`required_n` -- how many random values give P(error <= eps) >= p.
* :mod:`slth.subsetsum.reference` -- brute force and MIP (OR-Tools CP-SAT, Gurobi) references.
"""

from .core import MAX_N, Solution, compile_kernels, solve, solve_sparsest
from .probability import required_n, sample_values

__all__ = ["MAX_N", "Solution", "compile_kernels", "solve", "solve_sparsest", "required_n", "sample_values"]
