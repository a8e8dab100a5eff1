"""MIP references against brute force, required_n, and the ``slth bench subsetsum`` command."""

import numpy as np
import pytest

from slth.subsetsum import required_n
from slth.subsetsum.reference import available_mip_solvers, brute_force, solve_mip


def _small_instances():
    rng = np.random.default_rng(7)
    values = rng.uniform(-1, 1, (2, 9)) * rng.uniform(-1, 1, (2, 9))
    return values, rng.uniform(-1, 1, 2)


@pytest.mark.parametrize("solver", ["gurobi", "cp-sat"])
def test_mip_equals_brute_force(solver):
    if solver not in available_mip_solvers():
        pytest.skip(f"{solver} not installed")
    values, targets = _small_instances()
    ref = brute_force(values, targets)
    res = solve_mip(values, targets, solver=solver, threads=1, time_limit=60)
    # CP-SAT works on values rounded to 2^-40: its optimum can differ from the float one by ~1e-11
    np.testing.assert_allclose(res.solution.error, ref.error, atol=1e-10, rtol=0)
    assert res.seconds > 0 and res.solver == solver


def test_unknown_mip_solver():
    with pytest.raises(ValueError, match="solver"):
        solve_mip(np.zeros((1, 3)), np.zeros(1), solver="cplex")


def test_required_n_is_monotone():
    kw = dict(trials=1500, n_max=24)
    assert required_n(1e-1, 0.9, **kw) <= required_n(1e-2, 0.9, **kw) <= required_n(1e-3, 0.9, **kw)
    assert required_n(1e-2, 0.5, **kw) <= required_n(1e-2, 0.9, **kw) <= required_n(1e-2, 0.99, **kw)
    assert required_n(1e-2, 0.9, "uniform-half", **kw) <= required_n(1e-2, 0.9, "uniform", **kw)
    # targets as samples: a degenerate distribution at 0 needs a single value (the empty set is exact)
    assert required_n(1e-2, 0.9, np.zeros(5), **kw) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eps=0.0), "eps"),
        (dict(eps=np.inf), "eps"),
        (dict(p=1.0), "p must"),
        (dict(p=0.0), "p must"),
        (dict(n_max=0), "n_max"),
        (dict(n_max=99), "n_max"),
        (dict(trials=0), "trials"),
        (dict(values="gaussian"), "value distribution"),
        (dict(distribution="normal"), "target distribution"),
        (dict(eps=1e-9, n_max=4), "raise n_max"),
    ],
)
def test_required_n_rejects_bad_arguments(kwargs, message):
    args = dict(eps=1e-2, p=0.9, trials=200, n_max=12) | kwargs
    with pytest.raises(ValueError, match=message):
        required_n(args.pop("eps"), args.pop("p"), **args)


def test_bench_command_runs(monkeypatch):
    from typer.testing import CliRunner

    from slth.cli import app

    out = CliRunner().invoke(app, ["bench", "subsetsum", "--n", "4", "6", "--batch", "50", "--threads", "1",
                                   "--repeats", "1", "--markdown"])
    assert out.exit_code == 0, out.output
    assert "| 4 | 50 | 1 |" in out.output and "| 6 | 50 | 1 |" in out.output
