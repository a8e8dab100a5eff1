"""Python front end of the SubsetSum engine: validation and shape handling once per batch."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any

import numpy as np

from ._kernels import MAX_N
from .solution import Solution

__all__ = ["Solution", "solve", "solve_sparsest", "MAX_N"]


def _as_float64(x: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be real numbers castable to float64, got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float64, order="C")
    if not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "inf"
        raise ValueError(f"{name} contains {bad}; SubsetSum needs finite numbers")
    return arr


def _validate(values: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    values = _as_float64(values, "values")
    targets = _as_float64(targets, "targets")
    if values.ndim not in (1, 2):
        raise ValueError(f"values must have shape (B, n) or (n,), got {values.shape}")
    if targets.ndim != 1:
        raise ValueError(f"targets must have shape (B,), got {targets.shape}")
    n = values.shape[-1]
    if n < 1 or n > MAX_N:
        raise ValueError(f"n (values per instance) must be between 1 and {MAX_N}, got {n}")
    if values.ndim == 2 and values.shape[0] != targets.shape[0]:
        raise ValueError(f"shape mismatch: values has {values.shape[0]} rows but targets has {targets.shape[0]}")
    return values, targets


@contextmanager
def _keep_torch_threads():
    """numba's OpenMP threading layer shares libgomp with PyTorch's CPU build: starting numba's thread pool
    resets the OpenMP thread count PyTorch reads, so a ``torch.set_num_threads(1)`` made before a solve was
    silently undone after it (found through an experiment's records). Restore it around every kernel call."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if before is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _chunks(rows: int) -> int:
    import numba

    # a few chunks per thread balance the load; each chunk allocates its scratch once
    return max(1, min(rows, 4 * numba.get_num_threads()))


_NO_EPS = np.zeros(0)  # solve_batch's eps when it runs the minimal-error search (not read)


def _empty(rows: int, n: int) -> Solution:
    return Solution(
        mask=np.zeros((rows, n), dtype=bool),
        error=np.zeros(rows),
        sum=np.zeros(rows),
        feasible=np.ones(rows, dtype=bool),
    )


def solve(values: Any, targets: Any, *, device: Any = None) -> Solution:
    """Exactly minimal-error subset per row (ties -> fewest elements).

    ``values``: (B, n) float64, or (n,) shared by all rows; ``targets``: (B,). n from 1 to ``MAX_N``.
    With ``device`` (e.g. ``"cuda"`` or ``"cpu"``) the batched PyTorch implementation runs on that
    device instead of the numba kernel; results are identical.
    """
    values, targets = _validate(values, targets)
    if device is not None:
        from ._torch import solve_torch

        return solve_torch(values, targets, device=device)
    from . import _kernels

    rows, n = targets.shape[0], values.shape[-1]
    out = _empty(rows, n)
    if rows == 0:
        return out
    with _keep_torch_threads():
        if values.ndim == 1:
            _kernels.solve_shared(values, targets, _chunks(rows), out.mask, out.error, out.sum)
        else:
            _kernels.solve_batch(values, targets, _NO_EPS, False, _chunks(rows), out.mask, out.error, out.sum,
                                 out.feasible)
    return out


def solve_sparsest(values: Any, targets: Any, eps: Any) -> Solution:
    """Per row, a fewest-element subset with error <= eps (ties -> smallest error).

    ``eps`` is a scalar or (B,). Rows with no such subset have ``feasible = False`` and carry the
    minimal-error subset (as :func:`solve` returns it).
    """
    values, targets = _validate(values, targets)
    rows, n = targets.shape[0], values.shape[-1]
    eps_arr = _as_float64(eps, "eps")
    if eps_arr.ndim == 0:
        eps_arr = np.full(rows, float(eps_arr))
    if eps_arr.shape != (rows,):
        raise ValueError(f"eps must be a scalar or have shape ({rows},), got {eps_arr.shape}")
    if (eps_arr < 0).any():
        raise ValueError("eps must be >= 0")
    if values.ndim == 1:
        values = np.broadcast_to(values, (rows, n))
    values = np.ascontiguousarray(values)
    out = _empty(rows, n)
    if rows == 0:
        return out
    from . import _kernels

    with _keep_torch_threads():
        _kernels.solve_batch(values, targets, eps_arr, True, _chunks(rows), out.mask, out.error, out.sum,
                             out.feasible)
    return out


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the SubsetSum chunk kernel -- the minimal-error and sparsest
    searches, not the 1-D shared-values kernel -- with one tiny batch of the types the real calls use (the
    same specialisation). Pass it to :func:`slth._jit.warm_up` to keep the compile off a job's clock."""
    solve_sparsest(np.array([[0.5, -0.25]]), np.array([0.25]), 0.01)
