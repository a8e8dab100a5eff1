"""SubsetSum engine benchmark: time per instance per core, errors, and the MIP baseline on the same instances.

Used by ``slth bench subsetsum``. Per-core time is
``wall seconds x threads / instances`` (the kernel is parallel over rows, so this is what one core
spends on one instance); the MIP solvers run one instance at a time on one thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class MipRow:
    solver: str
    instances: int
    seconds_per_instance: float
    median_error: float
    engine_not_worse: int  # instances where the engine's error <= the MIP's error
    speed_ratio: float  # MIP seconds per instance / engine seconds per instance per core


@dataclass(frozen=True)
class BenchRow:
    n: int
    batch: int
    threads: int
    us_per_instance_per_core: float
    cpu_us_per_instance: float  # process CPU time / instances: robust when other jobs share the cores
    instances_per_second: float
    median_error: float
    p99_error: float
    mip: list[MipRow] = field(default_factory=list)
    compile_seconds: float = 0.0  # numba's one-time compile (or cache load) before this row, not in its timings


def instances(n: int, batch: int, seed: int, values: str = "product") -> tuple[np.ndarray, np.ndarray]:
    """``batch`` random instances: n values from ``values`` (see ``sample_values``), targets U[-1,1]."""
    from ..subsetsum.probability import sample_values

    rng = np.random.default_rng([seed, n])
    vals = sample_values(rng, (batch, n), values)
    return vals, rng.uniform(-1.0, 1.0, batch)


def _left_to_right(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    total = np.zeros(values.shape[0])
    for e in range(values.shape[1]):
        total = np.where(mask[:, e], total + values[:, e], total)
    return total


def run(ns, batch: int, *, threads: int | None = None, seed: int = 0, repeats: int = 3, mip: bool = False,
        mip_batch: int = 3, mip_solvers=None, mip_time_limit: float = 600.0,
        sparsest_eps: float | None = None) -> list[BenchRow]:
    """Benchmark ``solve`` (or ``solve_sparsest`` with ``sparsest_eps``) at each n; best wall time of ``repeats``."""
    import numba

    from .._jit import warm_up
    from ..subsetsum import compile_kernels, solve, solve_sparsest
    from ..subsetsum.reference import available_mip_solvers, solve_mip

    threads = threads or numba.config.NUMBA_NUM_THREADS
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        rows = []
        for n in ns:
            vals, targets = instances(n, batch, seed)
            call = ((lambda v, t: solve(v, t)) if sparsest_eps is None
                    else (lambda v, t: solve_sparsest(v, t, sparsest_eps)))
            compile_seconds = warm_up(compile_kernels)  # compile / load the cache outside the timing
            call(vals[:4], targets[:4])  # (and the 1-D kernel never runs here)
            best = best_cpu = np.inf
            for _ in range(repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                sol = call(vals, targets)
                best = min(best, time.perf_counter() - start)
                best_cpu = min(best_cpu, time.process_time() - start_cpu)
            per_core = best * threads / batch
            mips = []
            if mip:
                k = min(mip_batch, batch)
                # compare like with like: the engine's subsets re-summed left to right over all n, as
                # solve_mip sums its subsets (the engine adds two half sums, which can differ by an ulp)
                engine_err = np.abs(_left_to_right(vals[:k], sol.mask[:k]) - targets[:k])
                for solver in mip_solvers or available_mip_solvers():
                    res = solve_mip(vals[:k], targets[:k], solver=solver, threads=1, time_limit=mip_time_limit)
                    per = res.seconds / k
                    mips.append(MipRow(
                        solver=solver,
                        instances=k,
                        seconds_per_instance=per,
                        median_error=float(np.median(res.solution.error)),
                        engine_not_worse=int((engine_err <= res.solution.error).sum()),
                        speed_ratio=per / per_core,
                    ))
            rows.append(BenchRow(
                n=n,
                batch=batch,
                threads=threads,
                us_per_instance_per_core=per_core * 1e6,
                cpu_us_per_instance=best_cpu / batch * 1e6,
                instances_per_second=batch / best,
                median_error=float(np.median(sol.error)),
                p99_error=float(np.quantile(sol.error, 0.99)),
                mip=mips,
                compile_seconds=compile_seconds,
            ))
        return rows
    finally:
        numba.set_num_threads(previous)


def markdown(rows: list[BenchRow]) -> str:
    """The table for docs/benchmarks.md."""
    lines = [
        "| n | batch | threads | µs / instance / core | CPU µs / instance | instances / s | median error | p99 error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.n} | {r.batch} | {r.threads} | {r.us_per_instance_per_core:.2f} | "
                     f"{r.cpu_us_per_instance:.2f} | "
                     f"{r.instances_per_second:,.0f} | {r.median_error:.2e} | {r.p99_error:.2e} |")
    mips = [(r, m) for r in rows for m in r.mip]
    if mips:
        lines += ["", "| n | MIP solver (1 thread) | instances | s / instance | median error | engine error ≤ MIP "
                      "| speed ratio |",
                  "|---|---|---|---|---|---|---|"]
        for r, m in mips:
            lines.append(f"| {r.n} | {m.solver} | {m.instances} | {m.seconds_per_instance:.3g} | "
                         f"{m.median_error:.2e} | "
                         f"{m.engine_not_worse}/{m.instances} | {m.speed_ratio:,.0f}× |")
    return "\n".join(lines)
