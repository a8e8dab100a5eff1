"""``slth bench <name>``: dispatch to :mod:`slth.bench` (results go to docs/benchmarks.md).

``subsetsum`` and ``supermask-step`` have typed options here; every other benchmark of
:data:`slth.bench.BENCHMARKS` parses its own (``slth bench <name> --help``). numba, numpy, torch and the
solvers are imported inside the commands so that ``slth --help`` stays fast.
"""

from __future__ import annotations

import json

import typer

from ..bench import BENCHMARKS
from ._common import CommandError, ints
from ._common import threads as set_threads

app = typer.Typer(help="Benchmarks (results go to docs/benchmarks.md).", no_args_is_help=True)


def _register(name: str, summary: str) -> None:
    """``slth bench <name> [options]``: the options (``--help`` too) go to the benchmark's own parser."""

    @app.command(name, help=summary, add_help_option=False,
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def command(ctx: typer.Context) -> None:
        from ..bench import run

        raise typer.Exit(run(name, list(ctx.args)))



# ``--n 12 16 20`` (several values after one flag) is not a click idiom: the values after the first
# arrive as extra arguments and are parsed here.
@app.command("subsetsum", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def bench_subsetsum(
    ctx: typer.Context,
    n: list[int] = typer.Option([12, 16, 20, 24], "--n", help="values per instance: --n 12 16 20 24"),
    batch: int = typer.Option(20_000, help="instances per n"),
    threads: int | None = typer.Option(None, help="numba threads (default: all)"),
    seed: int = typer.Option(0),
    repeats: int = typer.Option(3, help="timed repetitions; the fastest counts"),
    mip: bool = typer.Option(False, "--mip", help="also solve the first --mip-batch instances by MIP (1 thread)"),
    mip_batch: int = typer.Option(3, help="instances per n for the MIP baseline (Gurobi takes seconds each at n=20)"),
    mip_solver: list[str] | None = typer.Option(None, help="gurobi and/or cp-sat (default: every installed one)"),
    mip_time_limit: float = typer.Option(600.0, help="seconds per MIP instance"),
    sparsest_eps: float | None = typer.Option(None, help="benchmark solve_sparsest with this eps instead of solve"),
    markdown: bool = typer.Option(False, help="print markdown (for docs/benchmarks.md) instead of a rich table"),
) -> None:
    """Time per instance per core (= wall x threads / batch), CPU time per instance, instances/s, errors.

    The CPU column (process CPU seconds / batch) does not count time the threads wait for a core, so
    it is the better number on a shared machine; on an idle one the two agree.
    """
    from rich.console import Console
    from rich.table import Table

    from ..bench import subsetsum as bench

    try:
        n = list(n) + [int(extra) for extra in ctx.args]
    except ValueError:
        raise CommandError(f"unexpected arguments {ctx.args}; --n takes integers") from None
    if batch < 1 or any(k < 1 for k in n):
        raise CommandError("--batch and --n must be positive")
    rows = bench.run(n, batch, threads=threads, seed=seed, repeats=repeats, mip=mip, mip_batch=mip_batch,
                     mip_solvers=mip_solver, mip_time_limit=mip_time_limit, sparsest_eps=sparsest_eps)
    if markdown:
        typer.echo(bench.markdown(rows))
        typer.echo(f"\nnumba compile or cache load before the timings: {sum(r.compile_seconds for r in rows):.1f} s")
        return
    what = "solve" if sparsest_eps is None else f"solve_sparsest(eps={sparsest_eps:g})"
    table = Table(title=f"SubsetSum {what}: values U[-1,1]·U[-1,1], targets U[-1,1], {rows[0].threads} thread(s)")
    for col in ("n", "batch", "µs/inst/core", "CPU µs/inst", "inst/s", "median err", "p99 err"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r.n), str(r.batch), f"{r.us_per_instance_per_core:.2f}",
                      f"{r.cpu_us_per_instance:.2f}", f"{r.instances_per_second:,.0f}",
                      f"{r.median_error:.2e}", f"{r.p99_error:.2e}")
    console = Console()
    console.print(table)
    compiled = sum(r.compile_seconds for r in rows)
    console.print(f"numba compile or cache load before the timings: {compiled:.1f} s (not in the table)")
    if mip:
        mt = Table(title="MIP baseline on the same instances (1 thread each)")
        for col in ("n", "solver", "instances", "s/inst", "median err", "engine err ≤ MIP", "speed ratio"):
            mt.add_column(col, justify="right")
        for r in rows:
            for m in r.mip:
                mt.add_row(str(r.n), m.solver, str(m.instances), f"{m.seconds_per_instance:.3g}",
                           f"{m.median_error:.2e}", f"{m.engine_not_worse}/{m.instances}", f"{m.speed_ratio:,.0f}×")
        console.print(mt)


@app.command("supermask-step")
def bench_supermask_step_command(
    model: str = typer.Option("fc"),
    method: str = typer.Option("edge-popup"),
    width: float = typer.Option(1.0),
    density: float = typer.Option(0.5),
    batch_size: int = typer.Option(128),
    steps: int = typer.Option(50),
    input_shape: str = typer.Option("1,28,28"),
    batches: int = typer.Option(1, help="distinct random batches the steps cycle through (1: the same batch)"),
    threads: int | None = typer.Option(None),
    source: str = typer.Option("dense", help="the supermask's random source: dense | erdos-renyi | partially-frozen"),
    source_density: float = typer.Option(1.0, help="fraction of the weights present in the source"),
    peer: bool | None = typer.Option(None, "--peer/--no-peer",
                                        help="also time the reference implementation's edge-popup (hidden-networks' "
                                             "GetSubnet: a full sort per forward); default: on for edge-popup"),
) -> None:
    """Time a supermask training step against the dense step at the same width (one process); for edge-popup
    also the reference implementation's step (``speedup`` = its step / slth's)."""
    from ..bench.supermask import step_times

    if peer and method != "edge-popup":
        raise CommandError(f"--peer times the reference implementation's edge-popup; got --method {method}")
    set_threads(threads)
    result = step_times(model, method, width=width, density=density, batch_size=batch_size, steps=steps,
                        input_shape=tuple(ints(input_shape, "--input-shape")), batches=batches,
                        peer=(method == "edge-popup" and source == "dense") if peer is None else peer, source=source,
                        source_density=source_density)
    result.pop("samples")
    result.pop("speedup_rounds", None)
    typer.echo(json.dumps(result, indent=2))


# the benchmarks with their own parsers, after subsetsum and supermask-step
for _b in BENCHMARKS.values():
    _register(_b.name, _b.summary)
