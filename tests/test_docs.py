"""Every documented example runs: the Python blocks of README.md and docs/*.md, and the README's commands.

Each Python block runs as written, in a fresh interpreter, in an empty temporary directory. Each command of
a README ```bash block either runs here with small sizes (RUNS below: the README's own arguments, with the
sizes overridden) or carries a comment that says why it does not (`# needs ...`, e.g. a data set in DIR or
a bigger machine, or `# not run by the doc tests`). A new, unmarked command fails
test_every_readme_command_is_run_or_marked until it is given small sizes here or a marker there.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted(p for p in (ROOT / "docs").glob("*.md"))
TIMEOUT = 240  # seconds per example; a cold numba cache (first run after install) compiles the kernels
MARKER = re.compile(r"#\s*(needs\b|not run by the doc tests\b)")

# README command (its words up to the first option) -> options to override, for a run of seconds:
# {option: [values]} replaces the option's values (or adds the option), {option: None} drops it.
RUNS: dict[str, dict[str, list[str] | None]] = {
    "slth demo": {"--epochs": ["2"]},
    "slth train": {"--epochs": ["1"]},
    "slth bench subsetsum": {"--n": ["12"], "--batch": ["200"], "--repeats": ["1"], "--mip-batch": ["1"]},
    "slth report": {},  # runs on a copy of docs/results (the temporary directory holds docs/results/)
}
# what each run must leave behind (relative to the temporary directory)
OUTPUTS = {
    "slth demo": ["slth-demo/ticket.slth", "slth-demo/demo.json", "slth-demo/error_vs_n.png"],
    "slth train": ["runs/ep/metrics.json", "runs/ep/ticket.slth"],
    "slth report": ["docs/results.md"],
}


def _fences(path: Path, lang: str) -> list[tuple[int, str]]:
    """(line of the opening fence, text) of every ```lang block of ``path``."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == f"```{lang}":
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            blocks.append((i + 1, "\n".join(lines[i + 1 : j]) + "\n"))
            i = j
        i += 1
    return blocks


def _commands(path: Path) -> list[tuple[int, str, str]]:
    """(line, command, comment) of every command of the ```bash blocks; backslash continuations joined."""
    out = []
    for start, text in _fences(path, "bash"):
        pending, first = "", 0
        for k, line in enumerate(text.splitlines()):
            if not pending:
                first = start + 1 + k
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line, pending = pending + line, ""
            m = re.search(r"(^|\s)#", line)
            command, comment = (line[: m.start()], line[m.start():].strip()) if m else (line, "")
            if command.strip():
                out.append((first, " ".join(command.split()), comment))
    return out


def _key(command: str) -> str:
    """The command's name: its words before the first option or path argument, without ``.venv/bin/``."""
    words = []
    for word in shlex.split(command):
        if word.startswith("-") or "." in word.replace(".venv/bin/", ""):
            break
        words.append(word.replace(".venv/bin/", ""))
    return " ".join(words)


def _override(args: list[str], changes: dict[str, list[str] | None]) -> list[str]:
    out, i = [], 0
    while i < len(args):
        j = i + 1
        if args[i].startswith("--"):
            while j < len(args) and not args[j].startswith("--"):
                j += 1
            if args[i] in changes:
                i = j
                continue
        out.extend(args[i:j])
        i = j
    for option, values in changes.items():
        if values is not None:
            out += [option, *values]
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.setdefault("COLUMNS", "200")
    return env


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT, check=False)


PYTHON_BLOCKS = [(path, line, code) for path in [README, *DOCS] for line, code in _fences(path, "python")]
README_COMMANDS = _commands(README)


@pytest.mark.parametrize(("path", "line", "code"), PYTHON_BLOCKS,
                         ids=[f"{p.relative_to(ROOT)}:{line}" for p, line, _ in PYTHON_BLOCKS])
def test_python_example_runs(path, line, code, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    result = _run([sys.executable, str(script)], work)
    assert result.returncode == 0, f"{path.name}:{line} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def test_every_readme_command_is_run_or_marked():
    unmarked = {}
    for line, command, comment in README_COMMANDS:
        if not MARKER.match(comment):
            unmarked.setdefault(_key(command), []).append(f"README.md:{line}: {command}")
    unknown = {k: v for k, v in unmarked.items() if k not in RUNS}
    assert not unknown, ("README commands neither run by tests/test_docs.py (RUNS) nor marked "
                         f"'# needs ...' / '# not run by the doc tests': {unknown}")
    stale = set(RUNS) - set(unmarked)
    assert not stale, f"RUNS entries without an unmarked README command: {stale}"
    assert len(README_COMMANDS) >= 10  # the parser still sees the blocks


RUN_COMMANDS = [(line, command) for line, command, comment in README_COMMANDS if not MARKER.match(comment)
                and _key(command) in RUNS]


@pytest.mark.parametrize(("line", "command"), RUN_COMMANDS, ids=[f"README.md:{line}" for line, _ in RUN_COMMANDS])
def test_readme_command_runs_with_small_sizes(line, command, tmp_path):
    key = _key(command)
    args = shlex.split(command)
    assert args[0] in ("slth", ".venv/bin/slth"), command
    if key == "slth bench subsetsum" and "--mip" in args:
        pytest.importorskip("ortools", reason="--mip needs OR-Tools (the mip extra) or Gurobi")
    if key == "slth report":
        shutil.copytree(ROOT / "docs" / "results", tmp_path / "docs" / "results")
    argv = [sys.executable, "-m", "slth", *_override(args[1:], RUNS[key])]
    result = _run(argv, tmp_path)
    assert result.returncode == 0, (f"README.md:{line} {argv[3:]} failed:\n"
                                    f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    for name in OUTPUTS.get(key, []):
        assert (tmp_path / name).is_file(), f"{' '.join(argv[3:])} did not write {name}"
