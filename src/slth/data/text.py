"""``pystdlib-chars``: a character-level text data set from the Python standard library's own source files.

Every machine with Python has the text, so nothing is downloaded. The corpus is a deterministic selection:
the ``*.py`` files under ``sysconfig.get_paths()["stdlib"]``, sorted by their path relative to it (POSIX
form), skipping test suites (a path part ``test``, ``tests`` or ``idle_test``), installed packages
(``site-packages``, ``dist-packages``), build configuration (``config-*`` folders, ``_sysconfigdata*``
files) and ``__pycache__``; whole files are taken in that order while the total stays below ``max_bytes``
(the file that crosses it is the last one). Every ``test_every``-th selected file (1-based: files 10, 20,
... by default) goes to the test split, the rest to the training split.

Characters map to :data:`VOCAB`: id 0 stands for every character outside it (non-ASCII text, ``\\r``,
control characters), then newline, tab and the 95 printable ASCII characters (``" "`` to ``"~"``), so 98
tokens. Each split's files are concatenated (decoded as UTF-8, undecodable bytes replaced) and cut into
non-overlapping windows of ``context + 1`` tokens: a sample is the first ``context`` tokens (the input) and
the last ``context`` (the next-token targets), both int64 (N, context).

The corpus depends on the Python installation (its version and any distribution patches), so the data set
reports what it read in :attr:`TokenDataset.info`: the Python version, the stdlib path, the file and
character counts and ``corpus_sha256`` (SHA-256 over, per selected file in order, its relative path, a NUL
byte, its raw bytes and a NUL byte). ``slth train`` records it in ``metrics.json`` under ``data_info``.
"""

from __future__ import annotations

import hashlib
import platform
import sysconfig
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

OTHER = 0
VOCAB = ("\x00", "\n", "\t", *(chr(c) for c in range(32, 127)))  # id 0 (shown as NUL) = any other character
SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


@dataclass
class TokenDataset:
    """Train and test split of token windows in memory: inputs and next-token targets, int64 (N, context)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int  # the vocabulary size
    info: dict = field(default_factory=dict)
    mean: tuple[float, ...] = ()  # no normalisation: the inputs are token ids
    std: tuple[float, ...] = ()

    @property
    def input_shape(self) -> tuple[int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.int64 or x.ndim != 2 or y.dtype != torch.int64 or y.shape != x.shape:
                raise ValueError(f"{self.name} {split}: inputs and targets must be int64 (N, context) of one "
                                 f"shape, got {x.dtype} {tuple(x.shape)} and {y.dtype} {tuple(y.shape)}")
            if len(x) == 0:
                raise ValueError(f"{self.name} {split}: no windows (the corpus is too small for the context)")


def stdlib_files(root: Path, max_bytes: int) -> list[Path]:
    """The selected files under ``root`` (see the module docstring), in order."""
    candidates = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if SKIP_PARTS.intersection(rel.parts[:-1]) or rel.name.startswith("_sysconfigdata"):
            continue
        if any(part.startswith("config-") for part in rel.parts[:-1]) or not path.is_file():
            continue
        candidates.append((rel.as_posix(), path))
    chosen, total = [], 0
    for _, path in sorted(candidates):
        if total >= max_bytes:
            break
        chosen.append(path)
        total += path.stat().st_size
    return chosen


def encode(text: str) -> np.ndarray:
    """Token ids (uint8) of ``text``: :data:`VOCAB` positions, :data:`OTHER` for any other character."""
    lut = np.full(128, OTHER, dtype=np.uint8)
    for i, ch in enumerate(VOCAB[1:], start=1):
        lut[ord(ch)] = i
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.where(codes < 128, lut[np.minimum(codes, 127)], OTHER).astype(np.uint8)


def decode(ids) -> str:
    """The text of token ids (id 0 shows as ``"\\x00"``)."""
    return "".join(VOCAB[int(i)] for i in ids)


def _windows(ids: np.ndarray, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = (len(ids) - 1) // context  # windows of context + 1 tokens, overlapping by one (the last target)
    t = torch.from_numpy(ids.astype(np.int64))
    x = t[: n * context].view(n, context)
    y = t[1 : n * context + 1].view(n, context)
    return x.clone(), y.clone()


@lru_cache(maxsize=4)
def _corpus(max_bytes: int, test_every: int, root: str) -> tuple[np.ndarray, np.ndarray, dict]:
    files = stdlib_files(Path(root), max_bytes)
    digest = hashlib.sha256()
    parts: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    counts = {"train": 0, "test": 0}
    for i, path in enumerate(files, start=1):
        raw = path.read_bytes()
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + raw + b"\0")
        split = "test" if i % test_every == 0 else "train"
        parts[split].append(encode(raw.decode("utf-8", errors="replace")))
        counts[split] += 1
    train, test = (np.concatenate(parts[s]) if parts[s] else np.zeros(0, np.uint8) for s in ("train", "test"))
    info = {"python_version": platform.python_version(), "python_implementation": platform.python_implementation(),
            "stdlib": root, "files": len(files), "train_files": counts["train"], "test_files": counts["test"],
            "bytes": sum(p.stat().st_size for p in files), "train_chars": int(len(train)),
            "test_chars": int(len(test)), "other_chars": int((train == OTHER).sum() + (test == OTHER).sum()),
            "max_bytes": max_bytes, "test_every": test_every, "corpus_sha256": digest.hexdigest()}
    return train, test, info


def load_pystdlib_chars(context: int = 64, max_bytes: int = 3_000_000, test_every: int = 10) -> TokenDataset:
    """The ``pystdlib-chars`` data set (see the module docstring) with windows of ``context`` tokens."""
    for name, value, least in (("context", context, 1), ("max_bytes", max_bytes, 1), ("test_every", test_every, 2)):
        if value < least:
            raise ValueError(f"pystdlib-chars: {name} must be >= {least}, got {value}")
    root = sysconfig.get_paths()["stdlib"]
    train, test, info = _corpus(int(max_bytes), int(test_every), root)
    if len(test) <= context:
        raise ValueError(f"pystdlib-chars: the test split ({len(test)} characters of {info['test_files']} files "
                         f"under {root}) is too small for a context of {context}; raise max_bytes")
    x_train, y_train = _windows(train, context)
    x_test, y_test = _windows(test, context)
    return TokenDataset("pystdlib-chars", x_train, y_train, x_test, y_test, len(VOCAB),
                        {**info, "context": context, "vocab": len(VOCAB)})
