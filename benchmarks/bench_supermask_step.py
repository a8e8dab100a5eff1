"""Supermask training step vs dense step at the same width, measured in one process (CPU).

    .venv/bin/python benchmarks/bench_supermask_step.py [--threads 2] [--out results.json]

Times forward + backward + SGD update + method hooks for each (model, method) against the dense step of
the same model, alternating the two so machine noise hits both alike. For edge-popup it also times, in the
same rounds, the reference implementation's way (hidden-networks' ``GetSubnet``: a full sort of the scores per
forward; ``slth.bench.supermask.peer_edge_popup``) unless ``--no-peer``. Prints markdown tables for
docs/benchmarks.md ("Learning by pruning").
"""

from __future__ import annotations

import argparse
import datetime
import platform

import torch

from slth.bench.supermask import step_times
from slth.supermask.methods import METHODS

CASES = [("fc", (1, 28, 28), 128), ("lenet5", (1, 28, 28), 128), ("conv4", (1, 28, 28), 64)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--batches", type=int, default=1,
                        help="distinct random batches the steps cycle through (1: the same batch every step)")
    parser.add_argument("--models", default="fc,lenet5,conv4")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--no-peer", action="store_true", help="skip the reference implementation's edge-popup")
    parser.add_argument("--out", default=None, help="write the raw results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for model, shape, batch in CASES:
        if model not in args.models.split(","):
            continue
        for method in args.methods.split(","):
            r = step_times(model, method, density=args.density, batch_size=batch, input_shape=shape, steps=args.steps,
                           repeats=args.repeats, batches=args.batches, peer=method == "edge-popup" and not args.no_peer)
            rows.append(r)
            print(f"{model:7s} {method:11s} min: dense {1e3 * r['dense_step_min_s']:8.2f} ms  supermask "
                  f"{1e3 * r['supermask_step_min_s']:8.2f} ms  ratio {r['ratio_min']:.2f}   (median ratio "
                  f"{r['ratio']:.2f})", flush=True)
            if "peer_step_s" in r:
                print(f"{'':19s} min: peer  {1e3 * r['peer_step_min_s']:8.2f} ms  speed-up of slth over peer "
                      f"{r['speedup_min']:.2f}   (median {r['speedup']:.2f})", flush=True)
    print(f"\n{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"{args.batches} batch(es), {datetime.date.today()}\n")
    print("| model | batch | method | dense step, min (ms) | supermask step, min (ms) | ratio of minima "
          "| ratio of medians |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['batch_size']} | {r['method']} | {1e3 * r['dense_step_min_s']:.2f} | "
              f"{1e3 * r['supermask_step_min_s']:.2f} | {r['ratio_min']:.2f} | {r['ratio']:.2f} |")
    peers = [r for r in rows if "peer_step_s" in r]
    if peers:
        print("\nAgainst the reference implementation's GetSubnet (edge-popup; median rounds, steps per second "
              "in brackets; speed-up = peer step / slth step, of medians and of minima):\n")
        print("| model | batch | dense step (ms) | slth edge-popup (ms) | peer edge-popup (ms) | slth / dense "
              "| peer / dense | speed-up, medians | speed-up, minima |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in peers:
            keys = ("dense_step_s", "supermask_step_s", "peer_step_s")
            cells = [f"{1e3 * r[k]:.2f} ({1 / r[k]:.0f}/s)" for k in keys]
            print(f"| {r['model']} | {r['batch_size']} | {' | '.join(cells)} | {r['ratio']:.2f} | "
                  f"{r['peer_ratio']:.2f} | {r['speedup']:.1f} | {r['speedup_min']:.1f} |")
    if args.out:
        from slth._io import atomic_write_json

        atomic_write_json(args.out, rows)


if __name__ == "__main__":
    main()
