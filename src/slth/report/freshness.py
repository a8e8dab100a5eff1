"""Is a record still what the current code gives? Its commit against the code it depends on.

A record names the commit it was produced at (``git_commit``) and its experiment names the source
paths that produce its numbers (:data:`slth.experiments.EXPERIMENTS`, ``depends_on``). The record is
*stale* when a later commit changed one of those paths (renames are followed back, so a moved file
still counts as the same code), unless that commit is listed as behaviour-preserving in
``<results>/behaviour-preserving-commits.txt`` (one ``<hash> <why>`` per line: refactors whose tests
pin the numbers, e.g. ticket digests). Without git, or without a commit in the record, the answer is
*unknown*, and the report says so.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

PRESERVING_FILE = "behaviour-preserving-commits.txt"


@dataclass(frozen=True)
class Freshness:
    status: str  # "current" | "stale" | "unknown"
    detail: str  # one sentence for the report
    changes: tuple[str, ...] = ()  # "<short hash> <subject>" of the commits that changed the code since


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)


def package_checkout() -> tuple[Path, str] | None:
    """(repository root, path of the slth package inside it with a trailing /) or None outside a checkout."""
    here = Path(__file__).resolve().parent.parent
    try:
        top = _git(here, "rev-parse", "--show-toplevel")
    except (OSError, subprocess.SubprocessError):
        return None
    if top.returncode != 0:
        return None
    root = Path(top.stdout.strip())
    return root, here.relative_to(root).as_posix() + "/"


def read_preserving(results_dir: Path) -> dict[str, str]:
    """hash -> reason, from ``results_dir/behaviour-preserving-commits.txt`` (``#`` starts a comment)."""
    path = Path(results_dir) / PRESERVING_FILE
    if not path.is_file():
        return {}
    out = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        commit, _, why = line.partition(" ")
        if len(commit) < 7 or not all(c in "0123456789abcdef" for c in commit.lower()) or not why.strip():
            raise ValueError(f"{path}:{number}: expected '<commit hash, 7+ hex digits> <reason>', got {line!r}")
        out[commit.lower()] = why.strip()
    return out


def check(commit: str | None, depends_on: tuple[str, ...], *, checkout: tuple[Path, str] | None,
          preserving: dict[str, str] | None = None) -> Freshness:
    """Whether the code under ``depends_on`` (paths in the package, ``dir/`` for a package) changed after ``commit``."""
    if not commit:
        return Freshness("unknown", "the record names no git commit, so it cannot be checked against the current code")
    if checkout is None:
        return Freshness("unknown", "slth is not running from a git checkout, so the record was not checked")
    root, prefix = checkout
    if _git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        return Freshness("unknown", f"its commit {commit} is not in this checkout's history")
    log = _git(root, "log", "--format=%x01%H%x02%s", "--name-status", "-M", f"{commit}..HEAD")
    if log.returncode != 0:
        return Freshness("unknown", f"git log failed: {log.stderr.strip()}")
    prefixes = tuple(prefix + d for d in depends_on if d.endswith("/"))
    files = {prefix + d for d in depends_on if not d.endswith("/")}
    preserving = preserving or {}

    def tracked(path: str) -> bool:
        return path in files or path.startswith(prefixes)

    changes = []
    for entry in log.stdout.split("\x01")[1:]:  # newest first
        head, *lines = entry.strip("\n").split("\n")
        sha, _, subject = head.partition("\x02")
        touched = False
        for line in lines:
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            status = parts[0]
            if status.startswith(("R", "C")) and len(parts) == 3:
                old, new = parts[1], parts[2]
                if tracked(new):
                    files.add(old)  # before this commit the same code lived at ``old``
                    touched = touched or status != "R100"
            elif tracked(parts[-1]):
                touched = True
        if touched and not any(sha.startswith(p) or p.startswith(sha) for p in preserving):
            changes.append(f"{sha[:7]} {subject}")
    if changes:
        return Freshness("stale", f"the code it depends on changed in {len(changes)} commit(s) after {commit}",
                         tuple(changes))
    return Freshness("current", f"no change to the code it depends on since {commit}")
