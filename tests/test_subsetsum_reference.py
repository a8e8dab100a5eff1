"""MIP references against brute force, required_n, and the ``slth bench subsetsum`` command; the input
validation of the references and of the n estimates (required_n, required_n_table, sample_values)."""

import types

import numpy as np
import pytest

from slth.subsetsum import reference, required_n
from slth.subsetsum.core import MAX_N
from slth.subsetsum.probability import required_n_table, sample_values
from slth.subsetsum.reference import BRUTE_FORCE_MAX_N, available_mip_solvers, brute_force, solve_mip

V = np.array([[0.5, -0.25, 0.125]])
T = np.array([0.3])


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
        (dict(distribution="normal"), r"unknown target distribution 'normal'; valid: \['uniform'"),
        (dict(eps=1e-9, n_max=2), r"n_max=2 values do not reach P\(error <= 1e-09\) >= 0.9; raise n_max or eps"),
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


# -- refusals of the references and the n estimates --------------------------------------------------


def test_unknown_value_distribution():
    with pytest.raises(ValueError, match=r"unknown value distribution 'normal'; valid: \['product'"):
        sample_values(np.random.default_rng(0), (2,), "normal")


@pytest.mark.parametrize("samples", [[], [0.1, float("nan")]])
def test_target_samples_must_be_finite_and_non_empty(samples):
    with pytest.raises(ValueError, match=r"target samples must be a non-empty array of finite numbers"):
        required_n(0.1, 0.9, samples, trials=10, n_max=4)


@pytest.mark.parametrize("kwargs, match", [
    ({"eps_values": [0.0]}, r"eps must be a positive finite number, got 0\.0"),
    ({"eps_values": [float("nan")]}, r"eps must be a positive finite number, got nan"),
    ({"p_values": [1.0]}, r"p must be in \(0, 1\), got 1\.0"),
    ({"n_max": 0}, rf"n_max must be between 1 and {MAX_N}, got 0"),
    ({"trials": 0}, r"trials must be >= 1"),
    ({"values": "normal"}, r"unknown value distribution 'normal'; valid: \['product'"),
])
def test_required_n_table_validates_its_arguments(kwargs, match):
    args = {"eps_values": [0.1], "p_values": [0.9], "trials": 10, "n_max": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        required_n_table(**args)


def test_brute_force_refuses_large_n():
    n = BRUTE_FORCE_MAX_N + 1
    with pytest.raises(ValueError, match=rf"brute force is limited to n <= {BRUTE_FORCE_MAX_N}, got {n}"):
        brute_force(np.full((1, n), 0.01), T)


def test_solve_mip_without_any_solver(monkeypatch):
    monkeypatch.setattr(reference, "available_mip_solvers", lambda: [])
    with pytest.raises(RuntimeError, match=r"no MIP solver installed: pip install 'slth\[mip\]'"):
        solve_mip(V, T)


def test_solve_mip_unknown_solver():
    with pytest.raises(ValueError, match=r"unknown MIP solver 'cplex'; valid: 'gurobi', 'cp-sat'"):
        solve_mip(V, T, solver="cplex")


def test_solve_mip_solver_not_installed(monkeypatch):
    monkeypatch.setattr(reference, "available_mip_solvers", lambda: [])
    with pytest.raises(RuntimeError, match=r"MIP solver 'cp-sat' is not installed"):
        solve_mip(V, T, solver="cp-sat")


def test_cpsat_without_a_solution(monkeypatch):
    cp_model = pytest.importorskip("ortools.sat.python.cp_model")

    class NoSolution:
        def __init__(self):
            self.parameters = types.SimpleNamespace()

        def Solve(self, model):
            return cp_model.INFEASIBLE

        def StatusName(self, status):
            return "INFEASIBLE"

    monkeypatch.setattr(reference, "available_mip_solvers", lambda: ["cp-sat"])
    monkeypatch.setattr(cp_model, "CpSolver", NoSolution)
    with pytest.raises(RuntimeError, match=r"CP-SAT found no solution \(status INFEASIBLE\)"):
        solve_mip(V, T, solver="cp-sat")


def test_value_distribution_is_checked_before_any_sampling():
    # sample_values would refuse "normal" too, but only after the targets were drawn: with a bad target
    # distribution as well, the up-front check is the one that answers
    with pytest.raises(ValueError, match=r"unknown value distribution 'normal'"):
        required_n_table([0.1], [0.9], "bogus", values="normal", trials=10, n_max=4)
