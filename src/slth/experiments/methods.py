"""``slth experiment methods``: every supermask method against dense training, across densities and nets.

Every *arm* -- ``dense``, each method of :data:`slth.supermask.METHODS` (read from the registry, so a
method added there joins the default with no change here) and, where ``slth train`` has the ``source``
setting, edge-popup on an Erdos-Renyi sparse source -- trains MNIST FC, LeNet-5 (MNIST) and the registry
ViT (Fashion-MNIST, patch 7) at every density and seed, with the same epochs and data for all and each
method's own defaults (its METHODS entry: learning rate, weight decay, init), through
:func:`slth.train.fit` (the loop of ``slth train``). An arm may also carry ``slth train`` settings:
``METHOD@KEY=VALUE@...`` (``edge-popup@source=erdos-renyi@source_density=0.5``).

One (arm, net, density, seed) is a *cell*. Each finished cell is written atomically, as one JSON file, into
the work folder (``--work-dir``) with its settings, its measured kept fraction (the final masks' kept
weights over all maskable weights: a method whose density comes out of training is placed where it
landed), accuracies, wall and CPU seconds, git commit and machine. A re-run skips the finished cells whose
settings match and refuses, before any work, cells whose settings differ; so cells can be added later
(new methods, more seeds) and the record is written from all the cells the settings ask for. Cells run in
``--workers`` processes, each with ``--threads`` torch threads.

The report section (:func:`render`) shows mean +- sd accuracy per arm, net and density, accuracy against
the measured density with dense as a line, per arm and net the lowest density that stays within
:data:`TOLERANCE` of dense, and a verdict for each paper's claim in :data:`CLAIMS` whose arms are in the
record, each computed from the cells by the rule stated there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._names import METHOD_NAMES
from .settings import check_at_least, check_names, flag, option

if TYPE_CHECKING:
    from .sections import Context, Record

NETS = {"fc": "mnist", "lenet5": "mnist", "vit": "fashion-mnist"}  # each net's data set
BATCH_SIZE = 128
TOLERANCE = 0.01  # "within 1 pp of dense"
OPTIMIZER = "SGD momentum 0.9, cosine per step; lr, weight decay and init: each method's defaults (dense: 0.01, 5e-4)"
ER_ARM = "edge-popup@source=erdos-renyi@source_density=0.5"  # Gadhikar et al.'s sparse source, where slth has it


def _default_arms() -> tuple[str, ...]:
    from .._hparams import TrainSettings

    sources = "source" in {f.name for f in dataclasses.fields(TrainSettings)}
    return ("dense", *METHOD_NAMES, *((ER_ARM,) if sources else ()))


def parse_arm(arm: str) -> tuple[str, dict[str, Any]]:
    """``"edge-popup@source=erdos-renyi@source_density=0.5"`` -> ("edge-popup", {"source": "erdos-renyi",
    "source_density": 0.5}); each value converted to its ``slth train`` setting's type (int, float, str or bool:
    ``true``/``false``)."""
    import typing

    from .._hparams import TrainSettings

    method, *parts = arm.split("@")
    hints = typing.get_type_hints(TrainSettings)
    fixed = {"method", "model", "data", "data_dir", "density", "epochs", "seed", "batch_size", "device",
             "model_args", "data_args", "workers"}  # the experiment's own axes and settings
    out: dict[str, Any] = {}
    for part in parts:
        key, eq, text = part.partition("=")
        if not eq or not key or not text:
            raise ValueError(f"--methods: {arm!r}: each setting after @ is KEY=VALUE, got {part!r}")
        if key not in hints or key in fixed:
            raise ValueError(f"--methods: {arm!r}: {key!r} is not a slth train setting an arm may set")
        if key in out:
            raise ValueError(f"--methods: {arm!r}: {key!r} given twice")
        kinds = [t for t in typing.get_args(hints[key]) if t is not type(None)] or [hints[key]]
        kind = kinds[0] if len(kinds) == 1 else None
        if kind not in (bool, int, float, str):
            raise ValueError(f"--methods: {arm!r}: {key!r} takes a {hints[key]}, which an arm cannot set")
        try:
            if kind is bool:
                if text not in ("true", "false"):
                    raise ValueError
                value: Any = text == "true"
            else:
                value = kind(text)
        except ValueError:
            raise ValueError(f"--methods: {arm!r}: {key}={text!r} is not a {kind.__name__}") from None
        out[key] = value
    return method, out


@dataclass(frozen=True)
class Settings:
    data: str = option("mnist", "mnist: MNIST for fc and lenet5, Fashion-MNIST for vit (--mnist-dir, "
                                "--fashion-mnist-dir); digits: the embedded 8x8 digits for every net (tests)")
    mnist_dir: Path | None = option(None, "MNIST directory (idx files)")
    fashion_mnist_dir: Path | None = option(None, "Fashion-MNIST directory (idx files)")
    methods: tuple[str, ...] = option(_default_arms(), "arms: dense, a method of slth.supermask.METHODS, or "
                                      "METHOD@KEY=VALUE@... with slth train settings")
    nets: tuple[str, ...] = option(tuple(NETS), "fc, lenet5 and/or vit")
    vit_args: dict[str, str] = option({"patch": "7"}, "ViT constructor arguments, KEY=VALUE,...")
    densities: tuple[float, ...] = option((0.5, 0.2, 0.1, 0.05), "requested kept fractions (dense: 1)")
    seeds: tuple[int, ...] = option((0, 1, 2), "one cell per seed")
    epochs: int = option(3, "epochs, the same for every arm")
    train_size: int = option(6000, "training examples (the first ones of the split)")
    test_size: int = option(5000, "test examples (a fixed random subset of the test split, the same for all)")
    work_dir: Path | None = option(None, "folder of finished cells, one JSON each; a re-run skips those whose "
                                   "settings match (default: a temporary folder, nothing resumes)")
    workers: int = option(2, "cells run in this many processes, each with --threads torch threads")
    device: str = option("cpu", "where cells train: cpu, cuda, cuda:N or auto (not part of a cell's identity)")

    def __post_init__(self):
        from ..train import TrainConfig

        check_names(self.nets, "nets", tuple(NETS))
        check_names(self.methods, "methods")
        for name in ("methods", "nets", "densities", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{flag(name)} lists a value twice: {', '.join(map(str, values))}")
        if not self.densities:
            raise ValueError("--densities is empty")
        bad = [d for d in self.densities if not 0.0 < d <= 1.0]
        if bad:
            raise ValueError(f"--densities must lie in (0, 1], got {', '.join(map(str, bad))}")
        if not self.seeds:
            raise ValueError("--seeds is empty")
        check_at_least(self, 1, "epochs", "train_size", "test_size", "workers")
        if self.data not in ("mnist", "digits"):
            raise ValueError(f"unknown --data {self.data}; valid: mnist, digits")
        if self.data == "mnist":
            for folder, needed in (("mnist_dir", {"fc", "lenet5"}), ("fashion_mnist_dir", {"vit"})):
                path = getattr(self, folder)
                if needed & set(self.nets) and path is None:
                    raise ValueError(f"{flag(folder)} is needed for {', '.join(sorted(needed & set(self.nets)))} "
                                     f"(a folder with the idx files), or --data digits / --quick")
                if path is not None and not path.is_dir():
                    raise ValueError(f"no such {flag(folder)} directory: {path}")
        from ..train.runtime import check_device_name

        check_device_name(self.device)
        if self.work_dir is not None and self.work_dir.exists() and not self.work_dir.is_dir():
            raise ValueError(f"--work-dir {self.work_dir} exists and is not a directory")
        for arm in self.methods:  # every arm's every cell is a valid training config, before any work
            method, extra = parse_arm(arm)
            if not self.arm_densities(arm):
                raise ValueError(f"--methods: {arm!r} runs only below its source density, and no --densities "
                                 f"value is below {extra.get('source_density')}")
            for density in self.arm_densities(arm):
                try:
                    TrainConfig(method=method, density=density, **extra)
                except ValueError as exc:
                    raise ValueError(f"--methods: {arm!r} at density {density:g}: {exc}") from None

    def cells(self) -> list[Cell]:
        """Every cell the settings ask for: seeds outermost (the first seed's cells finish first), dense once
        per net and seed (at density 1)."""
        out = []
        for seed in self.seeds:
            for net in self.nets:
                data = NETS[net] if self.data == "mnist" else self.data
                model_args = tuple(sorted(self.vit_args.items())) if net == "vit" else ()
                for arm in self.methods:
                    for density in self.arm_densities(arm):
                        out.append(Cell(arm=arm, net=net, density=float(density), seed=seed, data=data,
                                        epochs=self.epochs, train_size=self.train_size, test_size=self.test_size,
                                        batch_size=BATCH_SIZE, model_args=model_args))
        return out

    def arm_densities(self, arm: str) -> tuple[float, ...]:
        """The densities an arm runs at: dense once (1.0); an arm on a sparse source only below its source's
        density (at the source density the mask is the whole source, so nothing is left to learn: a random
        network's chance accuracy, not the method's)."""
        method, extra = parse_arm(arm)
        if method == "dense":
            return (1.0,)
        if extra.get("source", "dense") != "dense":
            return tuple(d for d in self.densities if d < extra.get("source_density", 1.0))
        return tuple(self.densities)

    def data_dir(self, data: str) -> Path | None:
        return {"mnist": self.mnist_dir, "fashion-mnist": self.fashion_mnist_dir}.get(data)


PRESETS = {"quick": dict(data="digits", methods=("dense", "edge-popup"), nets=("fc",), densities=(0.5, 0.1),
                         seeds=(0,), epochs=1, train_size=256, test_size=200, workers=1)}


@dataclass(frozen=True)
class Cell:
    """One training run of the comparison: what determines its numbers (its ``slth train`` config adds the
    method's defaults, :meth:`config`)."""

    arm: str
    net: str
    density: float  # requested kept fraction (1.0 for dense)
    seed: int
    data: str
    epochs: int
    train_size: int
    test_size: int
    batch_size: int
    model_args: tuple[tuple[str, str], ...]

    @property
    def file(self) -> str:
        arm = self.arm.replace("@", "+").replace("=", "-")
        return f"{self.net}_{arm}_d{self.density:g}_s{self.seed}.json"

    def config(self, device: str = "cpu"):
        """The resolved :class:`slth.train.TrainConfig` (the method's lr, weight decay and init filled in)."""
        from ..train import TrainConfig

        method, extra = parse_arm(self.arm)
        return TrainConfig(method=method, model=self.net, data=self.data, density=self.density, epochs=self.epochs,
                           seed=self.seed, batch_size=self.batch_size, device=device, model_args=self.model_args,
                           **extra).resolved()

    def identity(self) -> dict:
        """What a finished cell must match to be reused: the cell and its training config (not where it ran,
        nor the data folder)."""
        train = {k: v for k, v in self.config().identity().items() if k != "data_dir"}
        return _plain({"cell": dataclasses.asdict(self), "train": train})


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists), so saved and wanted settings compare equal."""
    import json

    return json.loads(json.dumps(value))


def identity_diff(saved: dict, wanted: dict) -> dict[str, tuple]:
    """Fields where a finished cell's identity differs from the wanted one, as {field: (saved, wanted)}; a
    ``slth train`` setting the saved cell predates counts as its default (so a setting added to slth later
    does not invalidate the cells computed before)."""
    from ..train import TrainConfig

    defaults = _plain(TrainConfig().to_dict())
    out = {}
    for k, v in wanted["cell"].items():
        if saved.get("cell", {}).get(k) != v:
            out[k] = (saved.get("cell", {}).get(k), v)
    old = saved.get("train", {})
    for k in set(old) | set(wanted["train"]):
        had = old.get(k, defaults.get(k))
        if had != wanted["train"].get(k, "(not a setting now)"):
            out[k] = (had, wanted["train"].get(k, "(not a setting now)"))
    return out


# --------------------------------------------------------------------------- running cells
_DATA: dict[tuple, Any] = {}  # per process: (name, folder) -> data set


def _dataset(name: str, data_dir: Path | None):
    from ..data import load_dataset

    key = (name, str(data_dir))
    if key not in _DATA:
        _DATA[key] = load_dataset(name, data_dir)
    return _DATA[key]


def _loaders(data, cell: Cell):
    import torch

    from ..seeding import generator

    x, y = data.x_train[: cell.train_size], data.y_train[: cell.train_size]
    test = torch.randperm(len(data.x_test), generator=generator(0, "methods-test-subset"))[: cell.test_size]
    train_set = torch.utils.data.TensorDataset(data.normalized(x), y)
    test_set = torch.utils.data.TensorDataset(data.normalized(data.x_test[test]), data.y_test[test])
    return (torch.utils.data.DataLoader(train_set, batch_size=cell.batch_size, shuffle=True,
                                        generator=generator(cell.seed, "methods-order")),
            torch.utils.data.DataLoader(test_set, batch_size=1000))


def run_cell(cell: Cell, data_dir: Path | None, work_dir: Path, device: str = "cpu",
             commit: str | None = None) -> dict:
    """Train one cell on ``device`` and write its result (atomically) into ``work_dir``; returns it.
    ``commit``: the code's git commit, taken once by the caller (a checkout may move while cells run)."""
    import torch

    from .._io import atomic_write_json
    from ..provenance import load_note, machine
    from ..supermask import build
    from ..train import fit
    from .record import Stopwatch

    data = _dataset(cell.data, data_dir)
    cfg = cell.config(device)
    train_loader, test_loader = _loaders(data, cell)
    net = build(cell.net, data.input_shape, data.num_classes, seed=cell.seed, supermask=cfg.supermask_config(),
                init=cfg.init, **dict(cfg.model_args))
    with Stopwatch() as sw:
        m = fit(net, train_loader, test_loader, cfg).metrics
    result = {**cell.identity(), "file": cell.file,
              "test_accuracy": m["test_accuracy"], "test_accuracy_per_epoch": m["test_accuracy_per_epoch"],
              "kept_fraction": m["density"], "kept_params": m["kept_params"], "params": m["params"],
              "train_size": len(train_loader.dataset), "test_size": len(test_loader.dataset),
              "steps": cell.epochs * len(train_loader), "seconds": sw.wall, "cpu_seconds": sw.cpu,
              "threads": torch.get_num_threads(), "device": m.get("device", device), "git_commit": commit,
              "machine": m.get("machine") or machine(),
              "machine_note": load_note(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_json(work_dir / cell.file, result)
    return result


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_task(task: tuple) -> dict:
    return run_cell(*task)


def finished_cells(cells: Sequence[Cell], work_dir: Path) -> dict[Cell, dict]:
    """The cells already finished in ``work_dir``; raises (naming them and what differs) if any finished cell
    was computed with other settings."""
    import json

    done, clashes = {}, []
    for cell in cells:
        path = work_dir / cell.file
        if not path.is_file():
            continue
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"--work-dir: {path} is not a readable cell ({exc}); remove it") from None
        diff = identity_diff(saved, cell.identity())
        if diff:
            shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in sorted(diff.items())[:4])
            clashes.append(f"{path.name} ({shown})")
        else:
            done[cell] = saved
    if clashes:
        more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        raise ValueError(f"--work-dir {work_dir} holds {len(clashes)} finished cell(s) computed with other settings: "
                         f"{', '.join(clashes[:3])}{more}; choose another --work-dir or remove them")
    return done


def check_nets(settings: Settings) -> None:
    """Build each net once on its data set and run two examples through it: a net that cannot take the data
    (LeNet-5 on 8x8 digits, a ViT patch that does not divide the image) is refused before any work."""
    import torch

    from ..supermask import build

    for cell in {(c.net, c.data): c for c in settings.cells()}.values():
        data = _dataset(cell.data, settings.data_dir(cell.data))
        try:
            net = build(cell.net, data.input_shape, data.num_classes, seed=0, **dict(cell.config().model_args))
            with torch.no_grad():
                net.eval()(data.x_test[:2])
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ValueError(f"--nets: {cell.net} cannot run on {cell.data} (input {tuple(data.input_shape)}, "
                             f"arguments {dict(cell.model_args)}): {exc}") from None


def execute(settings: Settings, *, out=None, log: Callable[..., None] = print, quiet: bool = False) -> dict:
    """Run every cell not yet finished in the work folder; the record's body holds all the settings' cells."""
    import tempfile

    s = settings
    cells = s.cells()
    check_nets(s)
    with tempfile.TemporaryDirectory(prefix="slth-methods-") as tmp:
        work_dir = Path(tmp) if s.work_dir is None else s.work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        with work_lock(work_dir):
            done = finished_cells(cells, work_dir)
            todo = [c for c in cells if c not in done]
            results = _run_cells(s, todo, done, work_dir, log)
        runs = [results[c] for c in cells]
    body = {"cells": runs, "nets": {n: (NETS[n] if s.data == "mnist" else s.data) for n in s.nets},
            "batch_size": BATCH_SIZE, "optimizer": OPTIMIZER, "tolerance": TOLERANCE,
            "cells_run": len(todo), "cells_reused": len(done),
            # the record's commit: the earliest of its cells', so slth report checks the oldest code behind it
            "git_commit": earliest_commit([r.get("git_commit") for r in runs])}
    log(table(points(runs), list(s.nets)))
    return body


def earliest_commit(commits: Sequence[str | None]) -> str | None:
    """The commit among ``commits`` that every other one descends from; None when one is unknown, git is not
    at hand, or they are not in one line of history (then the record's freshness cannot be checked)."""
    import subprocess

    if not commits or any(c is None for c in commits):
        return None
    unique = sorted({c for c in commits if c is not None})
    if len(unique) == 1:
        return unique[0]
    here = Path(__file__).resolve().parent

    def ancestor(a: str, b: str) -> bool:
        try:
            return subprocess.run(["git", "-C", str(here), "merge-base", "--is-ancestor", a, b],
                                  capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    for c in unique:
        if all(ancestor(c, o) for o in unique if o != c):
            return c
    return None


def _run_cells(s: Settings, todo: list[Cell], done: dict[Cell, dict], work_dir: Path,
               log: Callable[..., None]) -> dict[Cell, dict]:
    """Run ``todo`` (in ``s.workers`` processes); returns every cell's result, ``done``'s included."""
    from ..provenance import git_commit

    log(f"{len(todo) + len(done)} cells: {len(done)} finished in {work_dir}, {len(todo)} to run in "
        f"{min(s.workers, max(1, len(todo)))} process(es)")
    results = dict(done)
    commit = git_commit()
    tasks = [(c, s.data_dir(c.data), work_dir, s.device, commit) for c in todo]
    start = time.perf_counter()

    def note(result: dict) -> None:
        c = result["cell"]
        log(f"[{len(results) - len(done)}/{len(todo)}, {time.perf_counter() - start:.0f} s] {c['net']} "
            f"{c['arm']} d={c['density']:g} seed {c['seed']}: {100 * result['test_accuracy']:.2f} % (kept "
            f"{result['kept_fraction']:.4f}) in {result['seconds']:.1f} s ({result['cpu_seconds']:.1f} s CPU)")

    by_file = {c.file: c for c in todo}
    if s.workers == 1 or len(todo) <= 1:
        for task in tasks:
            result = run_cell(*task)
            results[task[0]] = result
            note(result)
    elif tasks:
        import multiprocessing

        import torch

        context = multiprocessing.get_context("spawn")  # no fork of a process with torch's threads
        with context.Pool(min(s.workers, len(tasks)), initializer=_worker_init,
                          initargs=(torch.get_num_threads(),)) as pool:
            for result in pool.imap_unordered(_run_task, tasks):
                results[by_file[result["file"]]] = result
                note(result)
    return results


LOCK = ".lock"


@contextlib.contextmanager
def work_lock(work_dir: Path):
    """Hold ``work_dir/.lock`` (this process's id and host) while cells run: a second run on the same folder is
    refused while the first one lives; a lock left behind by a process that no longer runs (on this host) is
    taken over."""
    import os
    import socket

    path = work_dir / LOCK
    host = socket.gethostname()
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, _, owner = path.read_text(encoding="utf-8").partition(" ") if path.is_file() else ("", "", "")
            if owner.strip() == host and pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)  # its process ended without removing it
                continue
            raise ValueError(f"--work-dir {work_dir} is in use by another run (process {pid or '?'} on "
                             f"{owner.strip() or '?'}); wait for it to end, or remove {path} if it no longer runs") \
                from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {host}")
        break
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- summaries
@dataclass(frozen=True)
class Point:
    """The cells of one (arm, net, requested density): accuracy mean and sd over seeds, mean measured kept
    fraction."""

    arm: str
    net: str
    density: float
    seeds: int
    accuracy: float
    accuracy_sd: float
    kept: float


def points(cells: Sequence[dict]) -> list[Point]:
    groups: dict[tuple, list[dict]] = {}
    for r in cells:
        c = r["cell"]
        groups.setdefault((c["arm"], c["net"], c["density"]), []).append(r)
    out = []
    for (arm, net, density), rs in groups.items():
        acc = [r["test_accuracy"] for r in rs]
        out.append(Point(arm, net, density, len(rs), statistics.mean(acc), statistics.pstdev(acc),
                         statistics.mean(r["kept_fraction"] for r in rs)))
    return out


def _of(ps: Sequence[Point], arm: str, net: str) -> list[Point]:
    """``arm``'s points on ``net``, densest first."""
    return sorted((p for p in ps if p.arm == arm and p.net == net), key=lambda p: -p.kept)


def dense_accuracy(ps: Sequence[Point], net: str) -> float | None:
    found = [p for p in ps if p.net == net and p.arm == "dense"]
    return found[0].accuracy if found else None


def lowest_within(ps: Sequence[Point], arm: str, net: str, reference: float, tol: float = TOLERANCE) -> Point | None:
    """The sparsest point of ``arm`` on ``net`` such that it and every denser point of the arm have a mean
    accuracy of at least ``reference - tol`` (None where the densest one already falls short)."""
    best = None
    for p in _of(ps, arm, net):
        if p.accuracy < reference - tol - 1e-12:
            break
        best = p
    return best


# --------------------------------------------------------------------------- the papers' claims
@dataclass(frozen=True)
class Claim:
    """A paper's headline claim and the rule that decides it from the record. ``arms`` are patterns
    (fnmatch) of the arms it is about; ``baseline`` an arm name, ``"dense"``, or ``"=method"`` (the arm's
    own method without its settings). Rules, per net (``nets``: all when empty), ``tol`` in accuracy:

    * ``sparser``: A = the baseline's best mean accuracy; d_b, d_a = the lowest kept fractions at which the
      baseline and the arm stay within ``tol`` of A (:func:`lowest_within`); holds when d_a <= d_b / ``ratio``.
      Undetermined when the baseline never stays within, or when it stays within down to its sparsest point
      and the arm does not go below d_b / ratio (its limit is then unknown).
    * ``reaches``: some point of the arm with measured kept fraction <= ``max_density`` has a mean accuracy
      within ``tol`` of the baseline's (best) mean. Undetermined without such a point.
    * ``beats`` / ``matches``: at the requested densities both have (<= ``max_density``), the arm's mean is
      above the baseline's (``matches``: at least the baseline's minus ``tol``) at more than half of them.
    """

    paper: str
    statement: str
    arms: tuple[str, ...]
    baseline: str
    rule: str
    nets: tuple[str, ...] = ()
    tol: float = TOLERANCE
    ratio: float = 1.5
    max_density: float = 1.0

    def definition(self) -> str:
        base = "dense" if self.baseline == "dense" else ("the same method on the dense source"
                                                          if self.baseline == "=method" else self.baseline)
        pp = f"{100 * self.tol:g} pp"
        if self.rule == "sparser":
            return (f"lowest kept fraction staying within {pp} of {base}'s best mean accuracy is at most "
                    f"1/{self.ratio:g} of {base}'s own")
        if self.rule == "reaches":
            return f"mean accuracy within {pp} of {base} at a measured kept fraction <= {self.max_density:g}"
        at = "" if self.max_density >= 1 else f" <= {self.max_density:g}"
        if self.rule == "beats":
            return f"higher mean accuracy than {base} at more than half of the densities{at}"
        return f"mean accuracy at least {base}'s minus {pp} at more than half of the densities{at}"


CLAIMS: tuple[Claim, ...] = (
    Claim("Tsayag & Lindenbaum, arXiv 2603.08914",
          "continuous L0 gates reach about twice edge-popup's sparsity at comparable accuracy",
          ("l0-*",), "edge-popup", "sparser", ratio=1.5),
    Claim("Koster et al., arXiv 2201.13361",
          "signed supermasks reach FC MNIST accuracy with few weights (97.48 % with 3.77 % kept)",
          ("signed*",), "dense", "reaches", nets=("fc",), max_density=0.05),
    Claim("Okoshi et al., ICML 2022 (multicoated supermasks)",
          "multicoated supermasks beat edge-popup at equal density", ("multicoated*",), "edge-popup", "beats"),
    Claim("Gadhikar et al., arXiv 2210.02412",
          "a sparse Erdos-Renyi source loses little against the dense source", ("*@source=erdos-renyi*",),
          "=method", "matches"),
    Claim("Ramanujan et al., arXiv 1911.13299", "edge-popup beats Zhou et al.'s (Bernoulli) supermask",
          ("edge-popup",), "bernoulli", "beats"),
    Claim("Diffenderfer & Kailkhura, arXiv 2103.09377",
          "biprop's binarised tickets match or beat edge-popup", ("biprop",), "edge-popup", "matches"),
    Claim("Chijiwa et al., arXiv 2106.09269", "IteRand beats edge-popup at equal density",
          ("iterand",), "edge-popup", "beats"),
    Claim("Sreenivasan et al., arXiv 2202.12002", "Gem-Miner beats edge-popup at high sparsity (kept <= 10 %)",
          ("gem-miner",), "edge-popup", "beats", max_density=0.1),
)
RULES = ("sparser", "reaches", "beats", "matches")


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    arm: str
    baseline: str
    outcome: str  # "reproduces" | "partly" | "does not reproduce" | "undetermined"
    holds: tuple[str, ...]  # nets where it holds
    fails: tuple[str, ...]  # nets where it does not
    details: tuple[str, ...]  # one clause per net


def _net_verdict(claim: Claim, ps: Sequence[Point], arm: str, base: str, net: str) -> tuple[bool | None, str]:
    """(holds, or None when undetermined; what was measured) for one net."""
    a, b = _of(ps, arm, net), _of(ps, base, net)
    if not a or not b:
        return None, f"{net}: not run"
    if claim.rule == "sparser":
        best = max(p.accuracy for p in b)
        pb, pa = lowest_within(ps, base, net, best, claim.tol), lowest_within(ps, arm, net, best, claim.tol)
        if pb is None:
            return None, f"{net}: {base} does not stay within its best"
        da = "none" if pa is None else f"{pa.kept:.3g}"
        text = f"{net}: {arm} {da} vs {base} {pb.kept:.3g} (within {100 * claim.tol:g} pp of {100 * best:.2f} %)"
        if pa is not None and pa.kept <= pb.kept / claim.ratio + 1e-12:
            return True, text
        if pb is b[-1]:
            return None, text + f"; {base} stays within down to its sparsest point"
        return False, text
    if claim.rule == "reaches":
        reference = max(p.accuracy for p in b)
        sparse = [p for p in a if p.kept <= claim.max_density + 1e-12]
        if not sparse:
            return None, f"{net}: no {arm} point at kept <= {claim.max_density:g}"
        top = max(sparse, key=lambda p: p.accuracy)
        text = f"{net}: {100 * top.accuracy:.2f} % at kept {top.kept:.3g} vs {base} {100 * reference:.2f} %"
        return top.accuracy >= reference - claim.tol - 1e-12, text
    bd = {p.density: p for p in b}
    common = [p for p in a if p.density in bd and p.density <= claim.max_density + 1e-12]
    if not common:
        return None, f"{net}: no common density"
    if claim.rule == "beats":
        wins = sum(1 for p in common if p.accuracy > bd[p.density].accuracy)
    else:
        wins = sum(1 for p in common if p.accuracy >= bd[p.density].accuracy - claim.tol - 1e-12)
    diffs = ", ".join(f"{p.density:g}: {100 * (p.accuracy - bd[p.density].accuracy):+.2f}" for p in common)
    return 2 * wins > len(common), f"{net}: {wins} of {len(common)} ({diffs} pp)"


def verdicts(cells: Sequence[dict], claims: Sequence[Claim] = CLAIMS) -> list[Verdict]:
    """Each claim for each arm of the record it is about (claims whose arms or baseline are absent are
    skipped)."""
    ps = points(cells)
    arms = list(dict.fromkeys(p.arm for p in ps))
    nets = list(dict.fromkeys(p.net for p in ps))
    out = []
    for claim in claims:
        if claim.rule not in RULES:
            raise ValueError(f"unknown claim rule {claim.rule!r}; valid: {', '.join(RULES)}")
        for arm in [a for a in arms if any(fnmatch.fnmatchcase(a, pat) for pat in claim.arms)]:
            base = arm.split("@")[0] if claim.baseline == "=method" else claim.baseline
            if base not in arms or base == arm:
                continue
            holds, fails, details = [], [], []
            for net in [n for n in nets if not claim.nets or n in claim.nets]:
                ok, text = _net_verdict(claim, ps, arm, base, net)
                details.append(text)
                if ok is True:
                    holds.append(net)
                elif ok is False:
                    fails.append(net)
            if not holds and not fails:
                outcome = "undetermined"
            elif not fails:
                outcome = "reproduces"
            elif not holds:
                outcome = "does not reproduce"
            else:
                outcome = "partly"
            out.append(Verdict(claim, arm, base, outcome, tuple(holds), tuple(fails), tuple(details)))
    return out


# --------------------------------------------------------------------------- tables and plot
def _order(ps: Sequence[Point]) -> list[str]:
    return list(dict.fromkeys(p.arm for p in ps))


def table(ps: Sequence[Point], nets: Sequence[str]) -> str:
    """Mean +- sd accuracy (%) per arm and net (rows) and requested density (columns); the measured kept
    fraction in brackets where it differs from the requested one."""
    from .sections import table as md_table

    densities = sorted({p.density for p in ps if p.arm != "dense"}, reverse=True)
    find = {(p.arm, p.net, p.density): p for p in ps}
    rows = []
    for net in nets:
        for arm in _order(ps):
            if arm == "dense":
                p = find.get((arm, net, 1.0))
                if p:
                    rows.append([net, arm, f"{100 * p.accuracy:.2f} ± {100 * p.accuracy_sd:.2f} (all weights)"]
                                + [""] * (len(densities) - 1))
                continue
            cells = []
            for d in densities:
                p = find.get((arm, net, d))
                if p is None:
                    cells.append("-")
                    continue
                kept = f" (kept {p.kept:.3g})" if abs(p.kept - d) > 0.005 * d else ""
                cells.append(f"{100 * p.accuracy:.2f} ± {100 * p.accuracy_sd:.2f}{kept}")
            if any(c != "-" for c in cells):
                rows.append([net, arm, *cells])
    return md_table(["net", "arm", *(f"d = {d:g}" for d in densities)], rows)


def lowest_table(ps: Sequence[Point], nets: Sequence[str], tol: float = TOLERANCE) -> str:
    from .sections import table as md_table

    rows = []
    for arm in [a for a in _order(ps) if a != "dense"]:
        row = [arm]
        for net in nets:
            dense = dense_accuracy(ps, net)
            if dense is None or not _of(ps, arm, net):
                row.append("-")
                continue
            p = lowest_within(ps, arm, net, dense, tol)
            row.append(f"none (densest: {100 * (_of(ps, arm, net)[0].accuracy - dense):+.2f} pp)" if p is None else
                       f"{p.kept:.3g} ({100 * (p.accuracy - dense):+.2f} pp)")
        rows.append(row)
    return md_table(["arm", *nets], rows)


def plot(record: dict, path) -> None:
    from .sections import plain_log_ticks, pyplot, save

    plt = pyplot()
    ps = points(record["cells"])
    nets = list(record["nets"])
    fig, axes = plt.subplots(1, len(nets), figsize=(4.6 * len(nets), 4.0), squeeze=False)
    arms = [a for a in _order(ps) if a != "dense"]
    colours = plt.get_cmap("tab20")
    markers = "osD^v<>pPX*h"
    for ax, net in zip(axes[0], nets):
        dense = dense_accuracy(ps, net)
        if dense is not None:
            ax.axhline(100 * dense, color="black", lw=1.2, label="dense")
            ax.axhline(100 * (dense - TOLERANCE), color="black", lw=0.8, ls=":", label="dense - 1 pp")
        for i, arm in enumerate(arms):
            line = _of(ps, arm, net)
            if line:
                ax.errorbar([p.kept for p in line], [100 * p.accuracy for p in line],
                            yerr=[100 * p.accuracy_sd for p in line], marker=markers[i % len(markers)], ms=4,
                            lw=1, capsize=2, color=colours(i % 20), label=arm)
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
        ax.set_xticks(sorted({p.density for p in ps if p.arm != "dense"}))  # the requested densities
        ax.set_xlabel("kept fraction (measured)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{net} ({record['nets'][net]})")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    save(fig, path)


# --------------------------------------------------------------------------- report section
def render(record: Record, ctx: Context) -> str:
    """The docs/results.md section of one record (called by ``slth report``)."""
    from .sections import provenance
    from .sections import table as md_table

    d = record.data
    st = d["settings"]
    cells = d["cells"]
    ps = points(cells)
    nets = list(d["nets"])
    path = ctx.plot_path(record)
    plot(d, path)
    steps = sorted({r["steps"] for r in cells})
    commits = sorted({r.get("git_commit") or "not recorded" for r in cells})
    machines = sorted({r.get("machine", "not recorded") for r in cells})
    cpu = {net: statistics.mean(r["cpu_seconds"] for r in cells if r["cell"]["net"] == net) for net in nets}
    vs = verdicts(cells)
    where = ", ".join(f"{n} on {d['nets'][n]}" for n in nets)
    lines = [f"## Every supermask method against dense training ({where})\n",
             f"Each arm (dense, every method of `slth.supermask.METHODS`, a method with `slth train` settings after "
             f"`@`) trained by `slth.train.fit` with its own default learning rate, weight decay and init, "
             f"{st['epochs']} epoch(s) on the first {d['cells'][0]['train_size']:,} training examples "
             f"({', '.join(map(str, steps))} steps), batch {d['batch_size']}, {d['optimizer']}; tested on a fixed "
             f"random subset of {d['cells'][0]['test_size']:,} test examples under the final (ticket) masks; "
             f"seeds {', '.join(map(str, st['seeds']))}; ViT arguments {st['vit_args']} (record "
             f"`{record.path.name}`, {len(cells)} cells). *Accuracy*: mean ± sd over seeds. A method whose "
             "density comes out of training is placed at its measured kept fraction (the final masks' kept "
             "weights over all maskable weights), shown in brackets in the table where it differs from the "
             "requested one.\n",
             ctx.image(path, "methods: accuracy vs density"), "", table(ps, nets), "",
             f"**Lowest density within {100 * TOLERANCE:g} pp of dense**, per arm and net: the sparsest requested "
             f"density at which the arm's mean accuracy, and its mean at every denser point, is at least dense's "
             "mean minus 1 pp (its measured kept fraction, and the gap to dense); *none*: already more than 1 pp "
             "below dense at its densest point.\n", lowest_table(ps, nets), ""]
    for arm in dict.fromkeys(r["cell"]["arm"] for r in cells if r["cell"]["arm"].split("@")[0] == "iterand"):
        runs = [r for r in cells if r["cell"]["arm"] == arm]
        period, most = runs[0].get("train", {}).get("rerand_period"), max(r["steps"] for r in runs)
        if period and most < period:
            lines += [f"`{arm}` re-draws pruned weights every {period} steps; its cells ran at most {most} steps, "
                      "so it never re-drew: at this scale it trained exactly as edge-popup does.", ""]
    if vs:
        rows = [[v.claim.paper, v.claim.statement, f"`{v.arm}` vs `{v.baseline}`", v.claim.definition(),
                 f"**{v.outcome}**" + (f" ({len(v.holds)} of {len(v.holds) + len(v.fails)} nets)"
                                       if v.outcome == "partly" else ""), "; ".join(v.details)] for v in vs]
        lines += ["**The papers' claims at this scale**, each decided by its rule from the cells above (per net; "
                  "*reproduces*: holds on every net where it could be decided, *partly*: on some, *undetermined*: "
                  "on none could it be decided). Claims whose arms are not in the record are left out.\n",
                  md_table(["paper", "claim", "arms", "rule (per net)", "verdict", "measured"], rows), ""]
        for v in vs:
            ctx.summary.append((f"{v.claim.statement} (`{v.arm}`)", v.claim.paper, f"{v.outcome} at this scale"))
    else:
        lines += ["No claim of the table in `slth.experiments.methods.CLAIMS` has its arms in this record.", ""]
    total_cpu, total_wall = sum(r["cpu_seconds"] for r in cells), sum(r.get("seconds", 0.0) for r in cells)
    lines += [f"Mean CPU seconds per cell: {'; '.join(f'{n} {cpu[n]:.1f}' for n in nets)}; all {len(cells)} cells: "
              f"{total_cpu / 60:.1f} CPU-minutes, {total_wall / 60:.1f} minutes of cell wall time summed over the "
              f"worker processes (the record's own wall time counts only the run that wrote it, which reuses "
              f"finished cells). Cells computed at "
              f"commit(s) {', '.join(commits)}; on {'; '.join(machines)}.", "", provenance(d)]
    return "\n".join(lines)

