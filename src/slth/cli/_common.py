"""What every command group shares: parsing list options, thread counts, checked input and output paths.

Paths are checked and output folders created *before* a command starts its work, so a typo costs a
second, not a computed result.
"""

from __future__ import annotations

import os
from pathlib import Path

# exceptions that mean "the user asked for something that cannot be done": one line, exit status 2
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, NotImplementedError)


class CommandError(ValueError):
    """A bad value or path found by a command before it starts its work."""


def ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CommandError(f"{what} must be comma-separated integers, got {text!r}") from None


def floats(text: str, what: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CommandError(f"{what} must be comma-separated numbers, got {text!r}") from None


def names(text: str, what: str, valid=None) -> list[str]:
    out = [t.strip() for t in text.split(",") if t.strip()]
    if not out:
        raise CommandError(f"{what} is empty")
    if valid is not None:
        bad = [t for t in out if t not in valid]
        if bad:
            raise CommandError(f"unknown {what} {', '.join(bad)}; valid: {', '.join(valid)}")
    return out


def threads(count: int | None) -> None:
    if count is not None:
        if count < 1:
            raise CommandError(f"--threads must be >= 1, got {count}")
        import torch

        torch.set_num_threads(count)


def existing_file(path: Path | None, what: str) -> Path | None:
    """``path`` must be a readable file (None passes through)."""
    if path is None:
        return None
    if not path.exists():
        raise CommandError(f"no such {what} file: {path}")
    if not path.is_file():
        raise CommandError(f"{what} is not a file: {path}")
    return path


def existing_dir(path: Path | None, what: str) -> Path | None:
    if path is None:
        return None
    if not path.is_dir():
        raise CommandError(f"no such {what} directory: {path}")
    return path


def output_dir(path: Path | None, what: str) -> Path | None:
    """Create ``path`` (and its parents) now and check that files can be written there."""
    if path is None:
        return None
    if path.exists() and not path.is_dir():
        raise CommandError(f"{what}: {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"{what}: cannot create directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CommandError(f"{what}: directory {path} is not writable")
    return path


def output_file(path: Path | None, what: str) -> Path | None:
    """A file to be written later: its folder is created now; an existing directory in its place is refused."""
    if path is None:
        return None
    if path.is_dir():
        raise CommandError(f"{what}: {path} is a directory, expected a file name")
    output_dir(path.parent if str(path.parent) else Path("."), what)
    return path
