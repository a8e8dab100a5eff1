"""Cold start: first runs with an empty numba cache against the same runs with the cache filled.

    slth bench cold-start

Each run is a fresh subprocess (wall clock, interpreter start and imports included) with
``NUMBA_CACHE_DIR`` pointed at a new empty directory (cold), then again at the same, now filled,
directory (warm). Jobs: ``slth demo`` (train a digits MLP, construct, error-vs-n sweep) and
``construct`` of a random-init 784-300-100-10 MLP at eps 0.01 (nonnegative input). For the
construction the ticket's own ``stats["seconds"]`` (work) and ``stats["compile_seconds"]`` are shown
too. Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONSTRUCT = """
import json, torch
from slth import construct
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(784, 300), torch.nn.ReLU(), torch.nn.Linear(300, 100), torch.nn.ReLU(),
                          torch.nn.Linear(100, 10))
t = construct(net, eps=0.01, nonnegative_input=True)
print(json.dumps({k: t.stats.get(k) for k in ("seconds", "compile_seconds", "n_per_layer")}))
"""


def _run(args: list[str], cache: Path, cwd: Path, src: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system, the child's) of one subprocess, and its stdout."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="slth bench cold-start", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-demo", action="store_true", help="only the construction")
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[2],
                        help="the folder holding the slth package to run (default: this one's; for before/after, "
                             "an older checkout's src)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_demo:
            cache = tmp / "cache-demo"
            for label in ("cold", "warm"):
                wall, cpu, _ = _run(["-m", "slth", "demo", "--out", str(tmp / f"demo-{label}")], cache, tmp, args.src)
                stats = json.loads((tmp / f"demo-{label}" / "demo.json").read_text())["ticket"]
                rows.append((f"`slth demo`, {label}", wall, cpu, stats["seconds"], stats.get("compile_seconds")))
        cache = tmp / "cache-construct"
        for label in ("cold", "warm"):
            wall, cpu, out = _run(["-c", CONSTRUCT], cache, tmp, args.src)
            stats = json.loads(out.strip().splitlines()[-1])
            rows.append((f"construct 784-300-100-10, eps 0.01, {label}", wall, cpu, stats["seconds"],
                         stats["compile_seconds"]))
    cpu = platform.processor() or platform.machine()
    print(f"{datetime.date.today().isoformat()}, {platform.system()} {cpu}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print()
    print(f"load average before: {os.getloadavg()[0]:.1f} (CPU seconds are robust to other jobs, wall is not)")
    print()
    print("| run | wall s (whole process) | CPU s (whole process) | ticket `seconds` (work) | "
          "ticket `compile_seconds` |")
    print("|---|---|---|---|---|")
    for name, wall, cpu, secs, comp in rows:
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {secs:.1f} | {'-' if comp is None else f'{comp:.1f}'} |")
