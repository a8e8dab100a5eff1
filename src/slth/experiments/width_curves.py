"""Width curves: logarithmic (Pensia, SubsetSum) vs polynomial (Malach, single pick) width, and the
SubsetSum error-vs-n law.

For each target (a trained bias-free ReLU MLP on inputs in [0, 1]) and each method, tickets are
constructed at fixed n (random values per target weight) without redraws, taking the minimal-error
subset (Pensia) or the nearest single product (Malach), on the same seeded random tensors. The width
factor is random params / target params (block-structured count, about n). Recorded per point: max and
median weight error, max |ticket - target| logit on the test set, ticket accuracy.

"At eps": the smallest width factor of the sweep whose max weight error is <= eps, for each eps.

SubsetSum law: the exact solver's median and 90th-percentile minimal error for random instances
(values U[0,1]·U[-1,1], the construction's products; targets U[-1/2, 1/2]) against n, fitted to
error ~ C·2^(-c·n), beside the single pick's error ~ 1/n.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

PAPER = {
    "pensia": "Pensia et al. 2020: width factor O(log(d·l/eps)); their Exp. 1 used n = 21 products per weight "
              "at eps = 0.01 (8,337,000 random params for 397,000 target weights, 21x)",
    "malach": "Malach et al. 2020: polynomial width, O(d^4 l^2) factor in Pensia's summary; one random path per "
              "weight, so the candidates needed per weight grow like 1/eps",
    "lueker": "Lueker 1998: with n i.i.d. uniform values the best subset sum is within 2^(-Theta(n)) of every "
              "target in the range, w.h.p.; n = O(log 1/eps) values suffice",
}


def subsetsum_law(ns: Sequence[int], instances: int, seed: int = 0) -> list[dict[str, Any]]:
    """Minimal SubsetSum error vs n (exact solver) and the single-pick error on the same instances."""
    from ..subsetsum import solve

    rng = np.random.default_rng(seed)
    rows = []
    for n in ns:
        values = rng.uniform(0, 1, (instances, n)) * rng.uniform(-1, 1, (instances, n))
        targets = rng.uniform(-0.5, 0.5, instances)
        err = solve(values, targets).error
        single = np.minimum(np.abs(values - targets[:, None]).min(axis=1), np.abs(targets))
        rows.append({"n": int(n), "median_error": float(np.median(err)), "p90_error": float(np.quantile(err, 0.9)),
                     "single_pick_median_error": float(np.median(single)),
                     "single_pick_p90_error": float(np.quantile(single, 0.9))})
    return rows


def fit_exponent(rows: list[dict[str, Any]], key: str = "median_error", min_n: int = 8) -> dict[str, float]:
    """Least-squares fit of log2(error) = log2(C) - c·n over rows with n >= min_n (the small-n end is range-bound)."""
    pts = [(r["n"], math.log2(r[key])) for r in rows if r["n"] >= min_n and r[key] > 0]
    if len(pts) < 2:
        return {"c": float("nan"), "log2_C": float("nan")}
    n, y = np.array(pts).T
    slope, intercept = np.polyfit(n, y, 1)
    return {"c": float(-slope), "log2_C": float(intercept), "min_n": min_n}


def sweep_target(name: str, target, x_test, y_test, *, pensia_ns: Sequence[int], malach_ns: Sequence[int],
                 seed: int, max_values: int, progress=None) -> dict[str, Any]:
    from ..construct import construct
    from ..construct.report import measure
    from ..construct.target import parse_target

    _, linears = parse_target(target, nonnegative_input=True)
    target_params = sum(s.params for s in linears)
    points: dict[str, list[dict[str, Any]]] = {"pensia": [], "malach": []}
    skipped = []
    for method, ns in (("pensia", pensia_ns), ("malach", malach_ns)):
        for n in ns:
            if n * target_params > max_values:
                skipped.append({"method": method, "n": int(n), "reason": f"n x target params > {max_values:,}"})
                continue
            t = construct(target, 1e-3, seed=seed, method=method, n=int(n), sparse=False, max_redraw_rounds=0,
                          nonnegative_input=True)
            m = measure(t.to_module(), target, x_test, y_test)
            s = t.stats
            points[method].append({
                "n": int(n), "random_params": s["random_params"], "kept_params": s["kept_params"],
                "width_factor": s["random_params"] / s["target_params"],
                "max_weight_error": s["max_weight_error"], "weight_error_median": s["weight_error_median"],
                "weight_error_p99": s["weight_error_p99"],
                "max_logit_diff": m["max_logit_diff"], "ticket_accuracy": m["ticket_accuracy"],
                "top1_agreement": m["top1_agreement"], "seconds": s["seconds"]})
            if progress is not None:
                progress()
    target_accuracy = measure(target, target, x_test, y_test)["target_accuracy"]
    return {"name": name, "arch": "-".join([str(linears[0].d_in)] + [str(s.d_out) for s in linears]),
            "target_params": int(target_params), "target_accuracy": target_accuracy, "points": points,
            "skipped": skipped}


def width_at_eps(points: list[dict[str, Any]], eps: float, key: str = "weight_error_p99") -> dict[str, Any] | None:
    """The smallest-width point of a sweep whose ``key`` error is <= eps (None if the sweep never gets there)."""
    ok = [p for p in points if p[key] <= eps]
    return min(ok, key=lambda p: p["width_factor"]) if ok else None


def planned_n(target, eps: float, method: str, p: float = 0.99) -> list[int]:
    """The n per layer that ``construct`` would choose (to skip constructions too large for this machine)."""
    from ..construct.build import choose_n, plan_scales
    from ..construct.target import parse_target

    _, linears = parse_target(target, nonnegative_input=True)
    scales, _ = plan_scales(linears)
    return [choose_n(method, eps / s, spec.weight / s, p) for spec, s in zip(linears, scales)]


def construct_at_eps(target, x_test, y_test, eps: float, method: str, *, seed: int, max_values: int) -> dict[str, Any]:
    """``construct`` with its defaults (n from eps, redraws): the width that certifies max weight error <= eps."""
    from ..construct import construct
    from ..construct.report import measure
    from ..construct.target import parse_target

    _, linears = parse_target(target, nonnegative_input=True)
    ns = planned_n(target, eps, method)
    values = sum(n * spec.params for n, spec in zip(ns, linears))
    if values > max_values:
        return {"skipped": f"n per layer {ns}: {values:,} random values > {max_values:,} (memory cap of this machine)",
                "n_per_layer": ns, "width_factor": values / sum(spec.params for spec in linears)}
    t = construct(target, eps, seed=seed, method=method, nonnegative_input=True)
    m = measure(t.to_module(), target, x_test, y_test)
    s = t.stats
    return {"n_per_layer": s["n_per_layer"], "width_factor": s["random_params"] / s["target_params"],
            "random_params": s["random_params"], "kept_params": s["kept_params"], "eps_met": s["eps_met"],
            "max_weight_error": s["max_weight_error"], "redraws": s["redraws"], "ticket_accuracy": m["ticket_accuracy"],
            "max_logit_diff": m["max_logit_diff"], "seconds": s["seconds"]}


def run(targets: Sequence[tuple[str, Any, Any, Any]], *, eps_values: Sequence[float], pensia_ns: Sequence[int],
        malach_ns: Sequence[int], law_ns: Sequence[int], law_instances: int, seed: int = 0,
        max_values: int = 40_000_000, quiet: bool = True) -> dict[str, Any]:
    """``targets``: (name, target module, x_test, y_test). Returns the record body (without the header)."""
    from rich.progress import Progress

    out: dict[str, Any] = {"targets": []}
    with Progress(disable=quiet, transient=True) as bar:
        task = bar.add_task("width curves", total=len(targets) * (len(pensia_ns) + len(malach_ns)))
        for name, target, x, y in targets:
            res = sweep_target(name, target, x, y, pensia_ns=pensia_ns, malach_ns=malach_ns, seed=seed,
                               max_values=max_values, progress=lambda: bar.advance(task))
            res["at_eps"] = []
            for eps in eps_values:
                row: dict[str, Any] = {"eps": eps}
                for method in ("pensia", "malach"):
                    p = width_at_eps(res["points"][method], eps)
                    row[f"{method}_sweep_p99"] = None if p is None else {
                        k: p[k] for k in ("n", "width_factor", "ticket_accuracy", "max_logit_diff")}
                    row[f"{method}_constructed"] = construct_at_eps(target, x, y, eps, method, seed=seed,
                                                                    max_values=max_values)
                res["at_eps"].append(row)
            out["targets"].append(res)
    law = subsetsum_law(law_ns, law_instances, seed)
    out["subsetsum_law"] = {"rows": law, "fit": fit_exponent(law), "fit_p90": fit_exponent(law, "p90_error"),
                            "instances": law_instances,
                            "values": "U[0,1]*U[-1,1] (the construction's products)", "targets": "U[-1/2,1/2]"}
    out["paper"] = PAPER
    return out
