"""Reference SubsetSum solvers for tests and comparison: brute force and MIP (CP-SAT, Gurobi).

These are deliberately simple and slow; the fast engine is tested against them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .core import Solution, _validate

BRUTE_FORCE_MAX_N = 20


def _all_subsets(n: int) -> np.ndarray:
    idx = np.arange(1 << n, dtype=np.int64)
    return ((idx[:, None] >> np.arange(n)) & 1).astype(bool)  # (2^n, n), row k = bits of k


def brute_force(values, targets, eps=None) -> Solution:
    """Enumerate all 2^n subsets (n <= 20). Without ``eps``: minimal error, ties -> fewest elements.
    With ``eps``: fewest elements with error <= eps, ties -> smallest error (infeasible rows: minimal
    error). Sums are accumulated left to right in float64."""
    values, targets = _validate(values, targets)
    rows, n = targets.shape[0], values.shape[-1]
    if n > BRUTE_FORCE_MAX_N:
        raise ValueError(f"brute force is limited to n <= {BRUTE_FORCE_MAX_N}, got {n}")
    if values.ndim == 1:
        values = np.broadcast_to(values, (rows, n))
    subsets = _all_subsets(n)
    counts = subsets.sum(axis=1)
    mask = np.zeros((rows, n), dtype=bool)
    error = np.zeros(rows)
    total = np.zeros(rows)
    feasible = np.ones(rows, dtype=bool)
    eps_arr = None if eps is None else np.broadcast_to(np.asarray(eps, dtype=np.float64), (rows,))
    for r in range(rows):
        sums = np.zeros(1 << n)
        for e in range(n):  # left-to-right accumulation
            sums = np.where(subsets[:, e], sums + values[r, e], sums)
        err = np.abs(sums - targets[r])
        best = np.lexsort((counts, err))[0]  # min error, then fewest
        if eps_arr is not None:
            ok = err <= eps_arr[r]
            if ok.any():
                cand = np.flatnonzero(ok)
                best = cand[np.lexsort((err[cand], counts[cand]))[0]]  # fewest, then min error
            else:
                feasible[r] = False
        mask[r] = subsets[best]
        error[r] = err[best]
        total[r] = sums[best]
    return Solution(mask=mask, error=error, sum=total, feasible=feasible)


@dataclass(frozen=True)
class MipResult:
    solution: Solution
    seconds: float
    solver: str


def available_mip_solvers() -> list[str]:
    out = []
    try:
        import gurobipy  # noqa: F401

        out.append("gurobi")
    except ImportError:
        pass
    try:
        from ortools.sat.python import cp_model  # noqa: F401

        out.append("cp-sat")
    except ImportError:
        pass
    return out


def solve_mip(values, targets, *, solver: str | None = None, threads: int = 1, time_limit: float = 60.0) -> MipResult:
    """Minimal-error SubsetSum by MIP, one model per row (what Pensia et al.'s code did with Gurobi).

    ``solver``: "gurobi" (gurobipy, tolerances tightened: IntFeasTol 1e-9, FeasibilityTol 1e-9,
    MIPGap 0, MIPGapAbs 0, NumericFocus 3 -- the defaults return wrong subsets at n >= 20) or "cp-sat"
    (OR-Tools; integer-only, so values are scaled by 2^40 and rounded: the rounding error of a sum of n
    values is <= n * 2^-41, below 1e-11 for n <= 40; the reported error is recomputed in float64).
    Default: Gurobi when installed, else CP-SAT.
    """
    values, targets = _validate(values, targets)
    rows, n = targets.shape[0], values.shape[-1]
    if values.ndim == 1:
        values = np.broadcast_to(values, (rows, n))
    choices = available_mip_solvers()
    if solver is None:
        if not choices:
            raise RuntimeError("no MIP solver installed: pip install 'slth[mip]' (OR-Tools) or gurobipy")
        solver = choices[0]
    if solver not in ("gurobi", "cp-sat"):
        raise ValueError(f"unknown MIP solver {solver!r}; valid: 'gurobi', 'cp-sat'")
    if solver not in choices:
        raise RuntimeError(f"MIP solver {solver!r} is not installed")
    mask = np.zeros((rows, n), dtype=bool)
    start = time.perf_counter()
    for r in range(rows):
        mask[r] = (_gurobi_row if solver == "gurobi" else _cpsat_row)(values[r], targets[r], threads, time_limit)
    seconds = time.perf_counter() - start
    total = np.zeros(rows)
    for e in range(n):  # left-to-right, as the engine reports sums
        total = np.where(mask[:, e], total + values[:, e], total)
    error = np.abs(total - targets)
    return MipResult(Solution(mask=mask, error=error, sum=total, feasible=np.ones(rows, dtype=bool)), seconds, solver)


def _gurobi_row(v: np.ndarray, t: float, threads: int, time_limit: float) -> np.ndarray:
    import gurobipy as gp

    env = _gurobi_env()
    with gp.Model(env=env) as model:
        model.Params.Threads = threads
        model.Params.TimeLimit = time_limit
        model.Params.IntFeasTol = 1e-9
        model.Params.FeasibilityTol = 1e-9
        model.Params.OptimalityTol = 1e-9
        model.Params.MIPGap = 0.0
        model.Params.MIPGapAbs = 0.0
        model.Params.NumericFocus = 3
        x = model.addMVar(v.shape[0], vtype=gp.GRB.BINARY)
        z = model.addVar(lb=0.0)
        expr = v @ x
        model.addConstr(expr - t <= z)
        model.addConstr(t - expr <= z)
        model.setObjective(z, gp.GRB.MINIMIZE)
        model.optimize()
        return np.asarray(x.X) > 0.5


_GUROBI_ENV = None


def _gurobi_env():
    global _GUROBI_ENV  # one quiet environment per process: creating one per model costs ~10 ms
    if _GUROBI_ENV is None:
        import gurobipy as gp

        env = gp.Env(empty=True)
        env.setParam("OutputFlag", 0)
        env.start()
        _GUROBI_ENV = env
    return _GUROBI_ENV


def _cpsat_row(v: np.ndarray, t: float, threads: int, time_limit: float) -> np.ndarray:
    from ortools.sat.python import cp_model

    scale = float(1 << 40)
    iv = [int(round(x * scale)) for x in v]
    it = int(round(t * scale))
    bound = sum(abs(x) for x in iv) + abs(it)
    model = cp_model.CpModel()
    x = [model.NewBoolVar(f"x{i}") for i in range(len(iv))]
    z = model.NewIntVar(0, bound, "z")
    s = sum(c * xi for c, xi in zip(iv, x))
    model.Add(s - it <= z)
    model.Add(it - s <= z)
    model.Minimize(z)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = threads
    solver.parameters.max_time_in_seconds = time_limit
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RuntimeError(f"CP-SAT found no solution (status {solver.StatusName(status)})")
    return np.array([solver.Value(xi) == 1 for xi in x])
