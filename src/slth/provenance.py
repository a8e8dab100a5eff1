"""Where a number came from: machine, load, date, command line, git commit.

Every record slth writes (experiments, ``slth train``'s metrics) carries these, so that a reader can
tell what produced it and ``slth report`` can check it against the current code.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path


def machine() -> str:
    """CPU model, cores visible, torch threads and version; the VMs here are shared, so timings are noisy."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"{platform.system()}")


def load_note() -> str:
    """The machine's measured load when the record is written (the VMs here are shared)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unavailable; wall times on a shared machine are upper bounds"
    return (f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min) on {os.cpu_count()} cores when "
            "written; the VM is shared, so wall times are upper bounds")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def command_line() -> str:
    return "slth " + " ".join(shlex.quote(a) for a in sys.argv[1:])
