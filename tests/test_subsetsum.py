"""The SubsetSum engine against brute force (hypothesis), edge cases and input validation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from slth.subsetsum import MAX_N, solve, solve_sparsest
from slth.subsetsum.reference import brute_force

finite = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def instances(draw, max_n=14, max_rows=6, dyadic=False):
    n = draw(st.integers(1, max_n))
    rows = draw(st.integers(1, max_rows))
    if dyadic:  # values on a 1/16 grid: sums are exact, so ties are real ties
        elems = st.integers(-16, 16).map(lambda k: k / 16)
    else:
        elems = finite
    values = draw(hnp.arrays(np.float64, (rows, n), elements=elems))
    targets = draw(hnp.arrays(np.float64, (rows,), elements=elems if dyadic else finite))
    return values, targets


def _check_sum_and_error(sol, values, targets):
    chosen = np.where(sol.mask, values, 0.0).sum(axis=1)
    np.testing.assert_allclose(sol.sum, chosen, atol=1e-12)
    np.testing.assert_allclose(sol.error, np.abs(sol.sum - targets), atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(instances())
def test_solve_matches_brute_force(inst):
    values, targets = inst
    sol = solve(values, targets)
    ref = brute_force(values, targets)
    np.testing.assert_allclose(sol.error, ref.error, atol=1e-12, rtol=0)
    _check_sum_and_error(sol, values, targets)
    assert sol.feasible.all()


@settings(max_examples=150, deadline=None)
@given(instances(dyadic=True))
def test_solve_ties_take_fewest_elements(inst):
    values, targets = inst
    sol = solve(values, targets)
    ref = brute_force(values, targets)
    np.testing.assert_array_equal(sol.error, ref.error)
    np.testing.assert_array_equal(sol.count, ref.count)


@settings(max_examples=150, deadline=None)
@given(instances(), st.floats(0.0, 0.5))
def test_solve_sparsest_has_minimal_cardinality(inst, eps):
    values, targets = inst
    sol = solve_sparsest(values, targets, eps)
    ref = brute_force(values, targets, eps=eps)
    np.testing.assert_array_equal(sol.feasible, ref.feasible)
    feas = ref.feasible
    np.testing.assert_array_equal(sol.count[feas], ref.count[feas])
    assert (sol.error[feas] <= eps).all()
    np.testing.assert_allclose(sol.error[feas], ref.error[feas], atol=1e-12)
    # infeasible rows carry the minimal-error subset
    np.testing.assert_allclose(sol.error[~feas], ref.error[~feas], atol=1e-12)
    _check_sum_and_error(sol, values, targets)


@settings(max_examples=100, deadline=None)
@given(instances(dyadic=True), st.integers(0, 8).map(lambda k: k / 16))
def test_solve_sparsest_ties_exact(inst, eps):
    values, targets = inst
    sol = solve_sparsest(values, targets, eps)
    ref = brute_force(values, targets, eps=eps)
    np.testing.assert_array_equal(sol.count, ref.count)
    np.testing.assert_array_equal(sol.error, ref.error)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 12), elements=finite),
       hnp.arrays(np.float64, st.integers(0, 5), elements=finite))
def test_shared_values_equal_broadcast(values, targets):
    shared = solve(values, targets)
    full = solve(np.broadcast_to(values, (targets.shape[0], values.shape[0])).copy(), targets)
    np.testing.assert_array_equal(shared.mask, full.mask)
    np.testing.assert_array_equal(shared.error, full.error)


def test_n_equals_one():
    sol = solve(np.array([[0.5], [0.5]]), np.array([0.4, 0.1]))
    np.testing.assert_array_equal(sol.mask[:, 0], [True, False])
    np.testing.assert_allclose(sol.error, [0.1, 0.1])


def test_all_zero_values_choose_empty_set():
    sol = solve(np.zeros((3, 16)), np.array([0.0, 1.0, -2.0]))
    assert not sol.mask.any()
    np.testing.assert_array_equal(sol.error, [0.0, 1.0, 2.0])
    sp = solve_sparsest(np.zeros((1, 10)), np.array([0.0]), 0.0)
    assert sp.feasible.all() and not sp.mask.any()


def test_unreachable_target_takes_the_range_end():
    values = np.array([[0.1, 0.2, -0.05]])
    sol = solve(values, np.array([5.0]))
    np.testing.assert_array_equal(sol.mask, [[True, True, False]])
    np.testing.assert_allclose(sol.error, [5.0 - 0.3])
    sp = solve_sparsest(values, np.array([5.0]), 0.01)
    assert not sp.feasible[0]
    np.testing.assert_allclose(sp.error, sol.error)


def test_ties_prefer_fewer_elements():
    sol = solve(np.array([[0.25, 0.25, 0.5]]), np.array([0.5]))
    assert sol.count[0] == 1 and sol.mask[0, 2]


def test_empty_batch():
    sol = solve(np.zeros((0, 8)), np.zeros(0))
    assert sol.mask.shape == (0, 8) and sol.error.shape == (0,)
    sp = solve_sparsest(np.zeros((0, 8)), np.zeros(0), 0.1)
    assert len(sp) == 0


@pytest.mark.parametrize("n", [24, 32])
def test_large_n_is_exact_on_a_planted_subset(n):
    rng = np.random.default_rng(n)
    values = rng.uniform(-1, 1, (50, n)) * rng.uniform(-1, 1, (50, n))
    planted = rng.random((50, n)) < 0.5
    targets = np.where(planted, values, 0.0).sum(axis=1)
    sol = solve(values, targets)
    assert (sol.error <= 1e-12).all()


def test_sparsest_is_much_sparser_than_min_error():
    rng = np.random.default_rng(0)
    values = rng.uniform(-1, 1, (2000, 20)) * rng.uniform(0, 1, (2000, 20))
    targets = rng.uniform(-0.5, 0.5, 2000)
    dense = solve(values, targets)
    sparse = solve_sparsest(values, targets, 0.01)
    assert sparse.feasible.mean() > 0.99
    assert sparse.count.mean() < 0.5 * dense.count.mean()


V = np.array([[0.5, -0.25, 0.125]])
T = np.array([0.3])


@pytest.mark.parametrize(
    "values, targets, message",
    [
        (np.zeros((1, 0)), T, rf"n \(values per instance\) must be between 1 and {MAX_N}, got 0"),
        (np.zeros((2, MAX_N + 1)), np.zeros(2), "n"),
        (np.array([[0.5, np.nan]]), T, r"values contains NaN; SubsetSum needs finite numbers"),
        (np.array([[np.inf, 1.0]]), np.zeros(1), "inf"),
        (V, np.array([np.inf]), r"targets contains inf; SubsetSum needs finite numbers"),
        (np.zeros((2, 3)), np.array([np.nan, 0.0]), "targets"),
        (np.zeros((2, 3)), T, r"shape mismatch: values has 2 rows but targets has 1"),
        (np.zeros((1, 1, 3)), T, r"values must have shape \(B, n\) or \(n,\), got \(1, 1, 3\)"),
        (V, np.zeros((1, 1)), r"targets must have shape \(B,\), got \(1, 1\)"),
        (np.array([["a", "b"]]), np.zeros(1), "dtype"),
        (np.zeros((1, 2), dtype=complex), np.zeros(1), "dtype"),
        (np.array([[True, False]]), T, r"values must be real numbers castable to float64, got dtype bool"),
        (V, np.array(["0.3"]), r"targets must be real numbers castable to float64, got dtype <U3"),
    ],
)
def test_invalid_input_names_the_problem(values, targets, message):
    with pytest.raises(ValueError, match=message):
        solve(values, targets)


def test_invalid_eps():
    with pytest.raises(ValueError, match=r"eps must be >= 0"):
        solve_sparsest(V, T, -0.1)
    with pytest.raises(ValueError, match=r"eps must be a scalar or have shape \(1,\), got \(2,\)"):
        solve_sparsest(V, T, np.array([0.1, 0.1]))


def test_accepts_integer_and_torch_input():
    torch = pytest.importorskip("torch")
    a = solve(np.array([[1, 2, 3]]), np.array([4]))
    b = solve(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([4.0]))
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.error[0] == 0.0


# --- engine paths that random small instances rarely reach -------------------------------------------


@pytest.mark.parametrize("n, eps", [(12, 1e-4), (14, 1e-5), (16, 1e-3), (18, 0.01)])
def test_sparsest_large_answers_and_infeasible_rows_match_brute_force(n, eps):
    # tiny eps: many answers have more elements than the direct enumeration covers (the general search),
    # targets beyond the reachable range: infeasible rows (the minimal-error subset)
    rng = np.random.default_rng(n)
    rows = 40 if n <= 14 else 8
    values = rng.uniform(-1, 1, (rows, n)) * rng.uniform(-1, 1, (rows, n))
    targets = rng.uniform(-1.5, 1.5, rows)
    sol = solve_sparsest(values, targets, eps)
    ref = brute_force(values, targets, eps=eps)
    np.testing.assert_array_equal(sol.feasible, ref.feasible)
    feas = ref.feasible
    np.testing.assert_array_equal(sol.count[feas], ref.count[feas])
    np.testing.assert_allclose(sol.error, ref.error, atol=1e-12)
    plain = solve(values, targets)
    np.testing.assert_array_equal(sol.mask[~feas], plain.mask[~feas])
    np.testing.assert_array_equal(sol.error[~feas], plain.error[~feas])
    _check_sum_and_error(sol, values, targets)


@pytest.mark.parametrize("n", [16, 18])
def test_many_exact_ties_match_brute_force(n):
    # values on a coarse grid: hundreds of pairs share the minimal error, so the tie resolution looks up
    # many sorted-half masks (and switches to the masked merge)
    rng = np.random.default_rng(n)
    values = rng.integers(-4, 5, (6, n)) / 4
    targets = rng.integers(-12, 13, 6) / 8 + 1 / 16
    sol = solve(values, targets)
    ref = brute_force(values, targets)
    np.testing.assert_array_equal(sol.error, ref.error)
    np.testing.assert_array_equal(sol.count, ref.count)
    sp = solve_sparsest(values, targets, 1 / 16)
    ref_sp = brute_force(values, targets, eps=1 / 16)
    np.testing.assert_array_equal(sp.count, ref_sp.count)
    np.testing.assert_array_equal(sp.error, ref_sp.error)


@pytest.mark.parametrize("n", [24, 32])
def test_sparsest_on_a_planted_subset(n):
    rng = np.random.default_rng(n + 1)
    values = rng.uniform(-1, 1, (30, n)) * rng.uniform(-1, 1, (30, n))
    planted = rng.random((30, n)) < 0.2
    targets = np.where(planted, values, 0.0).sum(axis=1)
    sp = solve_sparsest(values, targets, 1e-9)
    assert sp.feasible.all()
    assert (sp.error <= 1e-9).all()
    assert (sp.count <= planted.sum(axis=1)).all()
    _check_sum_and_error(sp, values, targets)
    # a loose eps: never more elements than the minimal-error subset, and small answers
    loose = solve_sparsest(values, targets, 0.01)
    dense = solve(values, targets)
    assert loose.feasible.all()
    assert (loose.count <= dense.count).all()
    assert (loose.error <= 0.01).all()


def test_sparsest_matches_plain_search_when_eps_is_the_minimal_error():
    # eps = the minimal error: feasible, and no subset with fewer elements reaches it
    rng = np.random.default_rng(3)
    values = rng.uniform(-1, 1, (200, 20)) * rng.uniform(-1, 1, (200, 20))
    targets = rng.uniform(-1, 1, 200)
    dense = solve(values, targets)
    sp = solve_sparsest(values, targets, dense.error)
    assert sp.feasible.all()
    assert (sp.count <= dense.count).all()
    assert (sp.error <= dense.error).all()


def test_a_solve_keeps_torch_thread_setting():
    """numba's OpenMP pool shares libgomp with torch; starting it must not undo torch.set_num_threads."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    code = ("import numpy as np, torch\n"
            "torch.set_num_threads(1)\n"
            "from slth.data import load_dataset\n"
            "load_dataset('digits', None)  # with this first (sklearn), the unguarded solve gave torch 2 threads\n"
            "from slth.subsetsum import solve, solve_sparsest\n"
            "v = np.random.default_rng(0).uniform(-1, 1, (64, 10))\n"
            "solve(v, v[:, 0]); solve_sparsest(v, v[:, 1], 0.01)\n"
            "print(torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "NUMBA_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
