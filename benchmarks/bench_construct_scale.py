"""Construction at scale: a ResNet-18-shaped target (ImageNet layout, 11.7M weights, random init).

Measures wall time, CPU time and peak RSS (this process and, separately, the largest worker process)
of ``slth.construct`` for a backend/worker count, and writes one JSON record per run.

    python benchmarks/bench_construct_scale.py --workers 1 --out bench-r18-w1.json
    python benchmarks/bench_construct_scale.py --workers 2 --out bench-r18-w2.json
    python benchmarks/bench_construct_scale.py --backend ray --workers 2 --out bench-r18-ray2.json

Random-init weights: every conv is PyTorch's default (Kaiming-uniform, a=sqrt(5)) with the BatchNorm
statistics at their defaults, folded; the construction cost depends on the shapes and n, not on training.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from slth._io import atomic_write_json
from slth.experiments.record import machine


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--n", type=int, default=None, help="values per weight (default: chosen per layer from eps)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--backend", default="local", choices=["local", "ray"])
    ap.add_argument("--address", default=None)
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = ResNet-18)")
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--workdir", default=None, help="checkpoint directory (default: in memory)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default=None, help="also save the ticket here")
    ap.add_argument("--out", default=None, help="JSON record to write")
    args = ap.parse_args(argv)

    import numba
    import torch

    from slth.construction import construct
    from slth.construction.zoo import ResNet18

    torch.manual_seed(args.seed)
    target = ResNet18((3, args.image, args.image), 1000, width=args.width).eval()
    start = time.perf_counter()
    ticket = construct(target, args.eps, seed=args.seed, n=args.n, workers=args.workers, backend=args.backend,
                       address=args.address, workdir=args.workdir, progress=sys.stderr.isatty())
    wall = time.perf_counter() - start
    save_bytes = None
    if args.save:
        save_bytes = ticket.save(args.save).stat().st_size
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = ticket.stats
    record = {
        "command": "python " + " ".join(sys.argv),
        "target": f"ResNet-18 (ImageNet layout, width {args.width}, {args.image}px), random init",
        "target_params": s["target_params"],
        "eps": args.eps, "n_per_layer": s["n_per_layer"], "backend": args.backend, "workers": args.workers,
        "chunks": ticket.run["chunks"],
        "wall_seconds": round(wall, 1),
        "cpu_seconds_driver": round(own.ru_utime + own.ru_stime, 1),
        "cpu_seconds_children": round(children.ru_utime + children.ru_stime, 1),
        "peak_rss_driver_gb": round(own.ru_maxrss / 2**20, 3),
        "peak_rss_largest_child_gb": round(children.ru_maxrss / 2**20, 3),
        "random_params": s["random_params"], "kept_params": s["kept_params"],
        "max_weight_error": s["max_weight_error"], "failures": s["failures"], "redraws": s["redraws"],
        "ticket_digest": ticket.digest(), "ticket_file_bytes": save_bytes,
        "numba_threads": numba.get_num_threads(),
        "machine": machine(),
    }
    print(json.dumps(record, indent=2))
    if args.out:
        atomic_write_json(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
