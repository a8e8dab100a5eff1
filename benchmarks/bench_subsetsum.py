"""SubsetSum engine benchmark (the same code as ``slth bench subsetsum``), printing markdown.

    .venv/bin/python benchmarks/bench_subsetsum.py --n 12 16 20 24 --batch 20000 --threads 1 --mip

Per-core time = wall x threads / batch. With --mip the first --mip-batch instances of each n are also
solved by every installed MIP solver (1 thread, tight tolerances) and the speed ratio is reported.
"""

from __future__ import annotations

import argparse
import datetime
import platform

from slth.bench import subsetsum as bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[12, 16, 20, 24])
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mip", action="store_true")
    parser.add_argument("--mip-batch", type=int, default=3)
    parser.add_argument("--sparsest-eps", type=float, default=None)
    args = parser.parse_args()
    rows = bench.run(args.n, args.batch, threads=args.threads, seed=args.seed, repeats=args.repeats, mip=args.mip,
                     mip_batch=args.mip_batch, sparsest_eps=args.sparsest_eps)
    print(f"<!-- {platform.processor() or platform.machine()}, {datetime.date.today()} -->")
    print(bench.markdown(rows))


if __name__ == "__main__":
    main()
