"""CPU throughput of ``slth train`` under torchrun: 2 processes x 1 thread against 1 process x 2 threads.

Writes synthetic MNIST-shaped IDX files and CIFAR-10-shaped pickles (random pixels and labels: only speed
is measured) to a temporary directory, then trains each (model, method) both ways and reports training
samples per second from ``metrics.json`` (per-epoch wall time of training + evaluation, the first epoch
left out as warm-up; process start-up and imports are not counted).

    slth bench train-ddp --epochs 3 --out ddp.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]  # the folder holding this slth package

CASES = [  # (data, model, extra arguments)
    ("mnist", "fc", []),
    ("cifar10", "conv4", ["--width", "0.5"]),
]


def write_data(directory: Path, n_train: int, n_test: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    mnist = directory / "mnist"
    mnist.mkdir()
    for stem, shape in (("train-images-idx3-ubyte", (n_train, 28, 28)), ("train-labels-idx1-ubyte", (n_train,)),
                        ("t10k-images-idx3-ubyte", (n_test, 28, 28)), ("t10k-labels-idx1-ubyte", (n_test,))):
        array = rng.integers(0, 10 if len(shape) == 1 else 256, shape, dtype=np.uint8)
        magic = 0x0803 if len(shape) == 3 else 0x0801
        header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in shape)
        (mnist / f"{stem}.gz").write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))
    cifar = directory / "cifar10"
    cifar.mkdir()
    per_batch = n_train // 5
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {b"labels": rng.integers(0, 10, n).tolist(), b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (cifar / name).write_bytes(pickle.dumps(batch, protocol=2))


def run(mode: str, data_dir: Path, data: str, model: str, method: str, extra: list[str], epochs: int,
        batch_size: int, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    train = ["-m", "slth", "train", "--data", data, "--data-dir", str(data_dir / data), "--model", model,
             "--method", method, "--epochs", str(epochs), "--batch-size", str(batch_size), "--device", "cpu",
             "--quiet", "--out", str(out), *extra]
    if mode in ("1x1", "1x2"):
        env["OMP_NUM_THREADS"] = mode[-1]
        cmd = [sys.executable, *train, "--threads", mode[-1]]
    else:
        env["OMP_NUM_THREADS"] = "1"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *train,
               "--threads", "1"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    metrics = json.loads((out / "metrics.json").read_text())
    seconds = [e["seconds"] for e in metrics["epochs"][1:]] or [metrics["epochs"][0]["seconds"]]
    return {"mode": mode, "data": data, "model": model, "method": method, "epoch_seconds": seconds,
            "test_accuracy": metrics["test_accuracy"], "world_size": metrics["world_size"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="slth bench train-ddp", description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--methods", default="dense,edge-popup")
    ap.add_argument("--models", default="fc,conv4", help="of the cases: fc on MNIST-shaped, conv4 on CIFAR-shaped data")
    ap.add_argument("--baseline", action="store_true", help="also 1 process x 1 thread")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_data(tmp, args.n_train, args.n_test)
        modes = ("1x2", "2x1", "1x1") if args.baseline else ("1x2", "2x1")
        for data, model, extra in [c for c in CASES if c[1] in args.models.split(",")]:
            for method in args.methods.split(","):
                for mode in modes:  # alternated per case, so machine noise hits both alike
                    r = run(mode, tmp, data, model, method, extra, args.epochs, args.batch_size,
                            tmp / f"{data}-{model}-{method}-{mode}")
                    r["samples_per_s"] = args.n_train / statistics.median(r["epoch_seconds"])
                    rows.append(r)
                    print(f"{data} {model} {method} {mode}: {r['samples_per_s']:.0f} samples/s "
                          f"(epochs {', '.join(f'{s:.2f}' for s in r['epoch_seconds'])} s)", flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    record = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()} {platform.system()}, "
              f"{os.cpu_count()} cores", "load_average_after": load, "n_train": args.n_train,
              "batch_size": args.batch_size, "rows": rows}
    print("\n| data | model | method | 1 process x 2 threads (samples/s) | torchrun 2 x 1 thread (samples/s) | ratio |"
          + (" 1 process x 1 thread (samples/s) |" if args.baseline else ""))
    print("|---|---|---|---|---|---|" + ("---|" if args.baseline else ""))
    for i in range(0, len(rows), len(modes)):
        a, b = rows[i], rows[i + 1]
        line = (f"| {a['data']} | {a['model']} | {a['method']} | {a['samples_per_s']:.0f} | {b['samples_per_s']:.0f} "
                f"| {b['samples_per_s'] / a['samples_per_s']:.2f} |")
        print(line + (f" {rows[i + 2]['samples_per_s']:.0f} |" if args.baseline else ""))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))
    return 0
