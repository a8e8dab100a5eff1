"""SubsetSum over an Erdos-Renyi sparse random source: what a sparse source costs the construction.

In Pensia et al.'s construction (slth.construct) each target weight w is approximated by a subset sum of n
random products b_i * a_i (a_i ~ U[0, 1], b_i ~ U[-1, 1] for a nonnegative input). In an Erdos-Renyi sparse
source each product is present independently with probability p, so a target sees Binomial(n, p) values
instead of n. This script measures, with slth.subsetsum's exact solver, for targets w ~ U[-1, 1]:

* hit: the fraction of targets whose best subset is within eps (P(error <= eps));
* kept: the mean number of products the sparsest subset within eps keeps (over the hits), and kept / n;

for the source densities p and sizes n given, next to the dense source (p = 1). The absent products are 0
in the solver's rows (a zero never enters a fewest-element subset, so each row is solved over its present
values exactly).

    slth bench sparse-source-subsetsum --n 8 12 16 24 32 --p 1 0.5 0.25 --eps 0.01
"""

from __future__ import annotations

import argparse
import platform

import numpy as np

from slth.subsetsum import sample_values, solve_sparsest


def measure(n: int, p: float, eps: float, rows: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, n, int(round(p * 1000))])
    values = sample_values(rng, (rows, n), "product-relu")
    present = rng.random((rows, n)) < p
    targets = rng.uniform(-1, 1, rows)
    solution = solve_sparsest(np.where(present, values, 0.0), targets, eps)
    hit = solution.feasible
    kept = solution.mask.sum(axis=1)[hit]
    return {"n": n, "p": p, "present": float(present.sum(axis=1).mean()), "hit": float(hit.mean()),
            "kept": float(kept.mean()) if kept.size else float("nan")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="slth bench sparse-source-subsetsum", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[8, 12, 16, 24, 32])
    parser.add_argument("--p", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"eps {args.eps}, {args.rows} targets ~ U[-1, 1] per cell, seed {args.seed}, {platform.processor() or ''}")
    print("| n | p | present (mean) | P(error <= eps) | kept (mean, hits) | kept / n |")
    print("|---|---|---|---|---|---|")
    for p in args.p:
        for n in args.n:
            r = measure(n, p, args.eps, args.rows, args.seed)
            print(f"| {n} | {p:g} | {r['present']:.1f} | {r['hit']:.3f} | {r['kept']:.2f} | {r['kept'] / n:.3f} |")

