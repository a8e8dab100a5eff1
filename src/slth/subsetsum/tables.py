"""Print the required-n table of docs/subsetsum.md: ``python -m slth.subsetsum.tables [--trials N]``.

Each cell is :func:`slth.subsetsum.required_n` (Monte Carlo with the exact solver, seed 0): the
smallest n with P(error <= eps) >= p. "> n_max" marks cells that n_max values do not reach.
"""

from __future__ import annotations

import argparse

from .probability import TARGET_DISTRIBUTIONS, VALUE_DISTRIBUTIONS, required_n_table

EPS = (1e-1, 1e-2, 1e-3, 1e-4)
P = (0.9, 0.99, 0.999)


def markdown(trials: int = 20_000, seed: int = 0, n_max: int = 32, values=("product", "product-relu"),
             targets=("uniform", "uniform-half")) -> str:
    lines = ["| values | targets | ε | " + " | ".join(f"p = {q:g}" for q in P) + " |",
             "|---|---|---|" + "---|" * len(P)]
    for v in values:
        for t in targets:
            cells = required_n_table(EPS, P, t, values=v, trials=trials, seed=seed, n_max=n_max)
            for e in EPS:
                row = [str(cells[(e, q)]) if cells[(e, q)] is not None else f"> {n_max}" for q in P]
                lines.append(f"| {VALUE_DISTRIBUTIONS[v]} | {TARGET_DISTRIBUTIONS[t]} | {e:g} | "
                             + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-max", type=int, default=32)
    args = parser.parse_args()
    print(markdown(args.trials, args.seed, args.n_max))


if __name__ == "__main__":
    main()
