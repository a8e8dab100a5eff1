"""GPU construction benchmark: the torch SubsetSum path and ticket materialisation on CUDA vs the CPU.

For a machine with a CUDA GPU (nothing is measured without one; the script says so and exits 0).
Constructs the same target twice with minimal-error subsets (``sparse=False``, the search that has a
torch path): once with the numba kernel on the CPU, once with ``device="cuda"``; checks that the two
tickets are bit-identical (same digest) and reports both times. Then times ``ticket.to_module()`` on the
CPU and with ``device="cuda"``, and one forward pass of the ticket on each.

    slth bench construct-gpu --target resnet18 --image 64 --eps 0.001 --out gpu.json
    slth bench construct-gpu --target lenet5 --eps 0.001
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from slth._io import atomic_write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="slth bench construct-gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="resnet18", help="resnet18 (ImageNet layout) or a registry name")
    ap.add_argument("--image", type=int, default=64)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--skip-cpu", action="store_true", help="only the GPU construction (the CPU one can be long)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from slth.construction import construct
    from slth.models.zoo import build_target

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (run this on a machine with a GPU)")
        return 0
    torch.manual_seed(0)
    channels = 3 if args.target in ("resnet18", "resnet20", "conv4") else 1
    shape = (channels, args.image, args.image)
    target = build_target(args.target, shape, 1000 if args.target == "resnet18" else 10, width=args.width).eval()
    record = {"command": "python " + " ".join(sys.argv), "device": torch.cuda.get_device_name(0),
              "target": f"{args.target} {shape} width {args.width}", "eps": args.eps}

    def timed(fn):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return out, time.perf_counter() - start

    gpu, record["construct_gpu_seconds"] = timed(lambda: construct(target, args.eps, n=args.n, sparse=False,
                                                                   device="cuda"))
    record["target_params"] = gpu.stats["target_params"]
    record["n_per_layer"] = gpu.stats["n_per_layer"]
    record["digest_gpu"] = gpu.digest()
    if not args.skip_cpu:
        cpu, record["construct_cpu_seconds"] = timed(lambda: construct(target, args.eps, n=args.n, sparse=False))
        record["digest_cpu"] = cpu.digest()
        record["identical"] = cpu.digest() == gpu.digest()
    module_cpu, record["to_module_cpu_seconds"] = timed(lambda: gpu.to_module())
    module_gpu, record["to_module_gpu_seconds"] = timed(lambda: gpu.to_module(device="cuda"))
    x = torch.rand(32, *shape)
    with torch.no_grad():
        _, record["forward32_cpu_seconds"] = timed(lambda: module_cpu(x))
        xg = x.cuda()
        module_gpu(xg)
        _, record["forward32_gpu_seconds"] = timed(lambda: module_gpu(xg))
    record["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    print(json.dumps(record, indent=2))
    if args.out:
        atomic_write_json(args.out, record)
    return 0
