"""Safety checks of slth.subsetsum: input validation of the solvers, the n estimates and the references."""

from __future__ import annotations

import types

import numpy as np
import pytest

from slth.subsetsum import reference
from slth.subsetsum.core import MAX_N, solve, solve_sparsest
from slth.subsetsum.probability import required_n, required_n_table, sample_values
from slth.subsetsum.reference import BRUTE_FORCE_MAX_N, brute_force, solve_mip

V = np.array([[0.5, -0.25, 0.125]])
T = np.array([0.3])


@pytest.mark.parametrize("values, targets, match", [
    (np.array([[True, False]]), T, r"values must be real numbers castable to float64, got dtype bool"),
    (V, np.array(["0.3"]), r"targets must be real numbers castable to float64, got dtype <U3"),
    (np.array([[0.5, np.nan]]), T, r"values contains NaN; SubsetSum needs finite numbers"),
    (V, np.array([np.inf]), r"targets contains inf; SubsetSum needs finite numbers"),
    (np.zeros((1, 1, 3)), T, r"values must have shape \(B, n\) or \(n,\), got \(1, 1, 3\)"),
    (V, np.zeros((1, 1)), r"targets must have shape \(B,\), got \(1, 1\)"),
    (np.zeros((1, 0)), T, rf"n \(values per instance\) must be between 1 and {MAX_N}, got 0"),
    (np.zeros((2, 3)), T, r"shape mismatch: values has 2 rows but targets has 1"),
])
def test_solve_validates_its_inputs(values, targets, match):
    with pytest.raises(ValueError, match=match):
        solve(values, targets)


def test_solve_sparsest_eps_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"eps must be a scalar or have shape \(1,\), got \(2,\)"):
        solve_sparsest(V, T, np.array([0.1, 0.1]))


def test_solve_sparsest_negative_eps():
    with pytest.raises(ValueError, match=r"eps must be >= 0"):
        solve_sparsest(V, T, -0.1)


def test_unknown_value_distribution():
    with pytest.raises(ValueError, match=r"unknown value distribution 'normal'; valid: \['product'"):
        sample_values(np.random.default_rng(0), (2,), "normal")


def test_unknown_target_distribution():
    with pytest.raises(ValueError, match=r"unknown target distribution 'normal'; valid: \['uniform'"):
        required_n(0.1, 0.9, "normal", trials=10, n_max=4)


@pytest.mark.parametrize("samples", [[], [0.1, float("nan")]])
def test_target_samples_must_be_finite_and_non_empty(samples):
    with pytest.raises(ValueError, match=r"target samples must be a non-empty array of finite numbers"):
        required_n(0.1, 0.9, samples, trials=10, n_max=4)


def test_required_n_that_n_max_does_not_reach():
    with pytest.raises(ValueError, match=r"n_max=2 values do not reach P\(error <= 1e-09\) >= 0.9; raise n_max or eps"):
        required_n(1e-9, 0.9, trials=10, n_max=2)


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
