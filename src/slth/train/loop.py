"""One training loop for dense and supermask training: same data order, schedule and augmentation.

``train(config, out)`` builds the model and data of a :class:`TrainConfig` and runs the loop;
``fit(model, train_loader, test_loader, config)`` runs the same loop on a model and DataLoaders of the
caller's own. Output directory: ``checkpoint.pt`` (every epoch, atomic), ``metrics.json`` (every epoch;
``finished`` tells whether the run is complete), ``ticket.slth`` for supermask models at the end.

Randomness: the model is built on the CPU from ``seed`` and then moved to the device; epoch e's batch order
and augmentation come from generators seeded by (seed, e); stochastic masks carry their generator state in
the model's ``state_dict``. So a resumed run replays exactly what an uninterrupted run would have done.

Several processes (``torchrun``): the model is wrapped in DistributedDataParallel, which all-reduces the
gradients of the trainable parameters only (the scores; frozen weights have ``requires_grad`` False and
are never synchronised, and every process draws them identically from the seed). Each global batch of
``batch_size`` is cut into one slice per process, so the data order is that of one process. BatchNorm
normalises with the statistics of each process's slice; its running statistics are averaged over the
processes after every epoch. Only rank 0 writes files; evaluation is sharded and the counts summed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .._io import atomic_torch_save, atomic_write_json
from ..data.augment import apply_crop_flip, crop_flip_draws, random_crop_flip
from ..provenance import git_commit, machine
from ..seeding import derive_seed, generator
from . import runtime as _runtime
from .config import RUNTIME_FIELDS, TrainConfig

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
TICKET = "ticket.slth"
EVAL_BATCH = 1000

__all__ = ["Run", "train", "fit", "evaluate", "random_crop_flip"]


@dataclass
class Run:
    """What :func:`train` and :func:`fit` return: the metrics (as in ``metrics.json``) and the trained model."""

    metrics: dict
    model: torch.nn.Module


def _loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits (..., C) against labels (...): a classifier's (N, C) against (N,), or a
    sequence model's (N, T, V) against next-token targets (N, T), every position counting once."""
    if logits.ndim > 2:
        logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    return F.cross_entropy(logits, y, reduction=reduction)


def _score(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int, float]:
    """(correct predictions, predictions, summed cross-entropy): per sample, or per position of a sequence."""
    return (int((logits.argmax(-1) == y).sum()), y.numel(),
            float(_loss(logits.float(), y, reduction="sum")))


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH) -> float:
    """Accuracy of ``model`` on (x, y): of every sample's class, or of every next token of a sequence."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
    return correct / y.numel()


def _progress(quiet: bool):
    """A live bar on a terminal; elsewhere (a log file, CI) none: the loop logs one line per epoch instead."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[status]}"), console=console, disable=quiet or not console.is_terminal,
                    transient=False)


def rank_slice(m: int, world: int, rank: int) -> tuple[int, int]:
    """Rows [lo, hi) of a global batch of ``m`` that process ``rank`` of ``world`` takes (sizes differ by at
    most one; equal when ``world`` divides ``m``)."""
    q, r = divmod(m, world)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (rank < r)


def _local_rows(m: int, rt: _runtime.Runtime) -> tuple[int, int, bool]:
    """This process's rows of a global batch of ``m``, and whether they are real. A process whose slice is
    empty (a last batch smaller than the number of processes) runs one row with weight 0, so that every
    process takes part in the gradient all-reduce."""
    lo, hi = rank_slice(m, rt.world_size, rt.rank)
    return (lo, hi, True) if hi > lo else (m - 1, m, False)


# A source yields, per epoch, this process's batches as (x, y, rows of the global batch, real) on the device,
# and evaluates a model on its shard of the test set as (correct, count, summed loss); a count is of samples, or
# of positions for sequence targets (y of shape (N, T): next-token prediction).


class _MemorySource:
    """Data held as tensors on the device (digits, MNIST, Fashion-MNIST, CIFAR-10, the token windows of
    pystdlib-chars -- these have no mean and are not normalised): the fast path."""

    def __init__(self, data, cfg: TrainConfig, rt: _runtime.Runtime):
        dev = rt.device
        if cfg.normalize and data.mean:
            mean = torch.tensor(data.mean).view(1, -1, 1, 1).to(dev)
            std = torch.tensor(data.std).view(1, -1, 1, 1).to(dev)
            self.norm = lambda x: (x - mean) / std
        else:
            self.norm = lambda x: x
        self.cfg, self.rt = cfg, rt
        x_train = data.x_train.to(dev)
        self.x_train = x_train if cfg.augment else self.norm(x_train)
        self.y_train = data.y_train.to(dev)
        self.x_test, self.y_test = self.norm(data.x_test.to(dev)), data.y_test.to(dev)
        self.n = len(self.x_train)
        self.steps_per_epoch = math.ceil(self.n / cfg.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, bool]]:
        cfg, dev = self.cfg, self.rt.device
        order = torch.randperm(self.n, generator=generator(cfg.seed, "data-order", epoch))
        aug_gen = generator(cfg.seed, "augment", epoch)
        for b in range(self.steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            m = len(idx)
            lo, hi, real = _local_rows(m, self.rt)
            local = idx[lo:hi].to(dev)
            if cfg.augment:  # the draws of the whole global batch, so every process sees one process's crops
                top, left, flip = crop_flip_draws(m, aug_gen)
                xb = self.norm(apply_crop_flip(self.x_train[local], top[lo:hi], left[lo:hi], flip[lo:hi]))
            else:
                xb = self.x_train[local]
            yield xb, self.y_train[local], m, real

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, autocast) -> tuple[int, int, float]:
        lo, hi = rank_slice(len(self.x_test), self.rt.world_size, self.rt.rank)
        totals = [0, 0, 0.0]
        for i in range(lo, hi, EVAL_BATCH):
            j = min(i + EVAL_BATCH, hi)
            with autocast():
                logits = model(self.x_test[i:j])
            totals = [a + b for a, b in zip(totals, _score(logits, self.y_test[i:j]))]
        return tuple(totals)


class EpochBatches(torch.utils.data.Sampler):
    """Batch sampler of a streamed data set: process ``rank``'s slice of each global batch of epoch e, as
    ``(index, augmentation seed)`` keys; the order is ``randperm(n)`` seeded by (seed, "data-order", e), as
    in the in-memory path, and image i's augmentation seed is (seed, "augment", e) + i."""

    def __init__(self, n: int, batch_size: int, seed: int, rt: _runtime.Runtime):
        self.n, self.batch_size, self.seed, self.rt = n, batch_size, seed, rt
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=generator(self.seed, "data-order", self.epoch)).tolist()
        base = derive_seed(self.seed, "augment", self.epoch)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            lo, hi, _ = _local_rows(len(idx), self.rt)
            yield [(i, (base + i) % 2**63) for i in idx[lo:hi]]


class _StreamSource:
    """Data decoded and augmented image by image in DataLoader workers (CIFAR-100, image folders)."""

    def __init__(self, data, cfg: TrainConfig, rt: _runtime.Runtime):
        from torch.utils.data import DataLoader, Subset

        self.cfg, self.rt = cfg, rt
        train_split = data.split("train", augment=bool(cfg.augment), normalize=cfg.normalize)
        test_split = data.split("test", normalize=cfg.normalize)
        self.n = len(train_split)
        self.sampler = EpochBatches(self.n, cfg.batch_size, cfg.seed, rt)
        self.steps_per_epoch = len(self.sampler)
        common = {"num_workers": int(cfg.workers), "pin_memory": rt.device.type == "cuda",
                  "persistent_workers": int(cfg.workers) > 0}
        self.train_loader = DataLoader(train_split, batch_sampler=self.sampler, **common)
        lo, hi = rank_slice(len(test_split), rt.world_size, rt.rank)
        local_batch = max(1, cfg.batch_size // rt.world_size)
        self.test_loader = DataLoader(Subset(test_split, range(lo, hi)), batch_size=max(local_batch, 256), **common)

    def epoch(self, epoch: int):
        self.sampler.set_epoch(epoch)
        dev = self.rt.device
        for b, (xb, yb) in enumerate(self.train_loader):
            m = min(self.cfg.batch_size, self.n - b * self.cfg.batch_size)
            real = _local_rows(m, self.rt)[2]
            yield xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True), m, real

    @torch.no_grad()
    def evaluate(self, model, autocast) -> tuple[int, int, float]:
        totals = [0, 0, 0.0]
        for xb, yb in self.test_loader:
            xb, yb = xb.to(self.rt.device, non_blocking=True), yb.to(self.rt.device, non_blocking=True)
            with autocast():
                logits = model(xb)
            totals = [a + b for a, b in zip(totals, _score(logits, yb))]
        return tuple(totals)


class _LoaderSource:
    """The caller's DataLoaders (:func:`fit`): batches (x, y) in the loader's order; under torchrun each
    process iterates its own loader (e.g. with a DistributedSampler, whose ``set_epoch`` is called)."""

    def __init__(self, train_loader, test_loader, rt: _runtime.Runtime):
        self.train_loader, self.test_loader, self.rt = train_loader, test_loader, rt
        try:
            self.steps_per_epoch = len(train_loader)
        except TypeError:
            raise ValueError("fit needs a train_loader with a length (the cosine schedule counts steps)") from None
        if self.steps_per_epoch < 1:
            raise ValueError("fit: train_loader yields no batches")
        self.n = None

    def epoch(self, epoch: int):
        for holder in (self.train_loader, getattr(self.train_loader, "sampler", None),
                       getattr(self.train_loader, "batch_sampler", None)):
            if hasattr(holder, "set_epoch"):
                holder.set_epoch(epoch)
                break
        dev = self.rt.device
        for xb, yb in self.train_loader:
            yield xb.to(dev), yb.to(dev), len(yb) * self.rt.world_size, True

    @torch.no_grad()
    def evaluate(self, model, autocast) -> tuple[int, int, float]:
        totals = [0, 0, 0.0]
        for xb, yb in self.test_loader:
            xb, yb = xb.to(self.rt.device), yb.to(self.rt.device)
            with autocast():
                logits = model(xb)
            totals = [a + b for a, b in zip(totals, _score(logits, yb))]
        return tuple(totals)


def _average_batchnorm_stats(model: torch.nn.Module, rt: _runtime.Runtime) -> None:
    """Average the BatchNorm running statistics over the processes (each saw its own slices)."""
    if not rt.distributed:
        return
    import torch.distributed as dist

    stats = [t for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)
             for t in (m.running_mean, m.running_var) if t is not None]
    if not stats:
        return
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in stats])
    dist.all_reduce(flat)
    flat /= rt.world_size
    with torch.no_grad():
        offset = 0
        for t in stats:
            t.copy_(flat[offset : offset + t.numel()].view_as(t).to(t.dtype))
            offset += t.numel()


def _check_device_hooks(model: torch.nn.Module, device: torch.device) -> None:
    """Refuse, before the first step, a method whose trainer hooks cannot run on ``device``. IteRand's
    re-randomisation draws on the CPU (its generator, the seeded re-draw) and moves the draws to the weight's
    device; it is probed by one re-randomisation of a 2x2 layer on the device whose re-draw, like the real
    one, comes back on the CPU -- so a hook that mixed CPU draws with device tensors fails here, not
    ``rerand_period`` steps into the run."""
    if device.type == "cpu":
        return
    from ..supermask import supermask_layers

    kinds = {type(p) for _, _, p in supermask_layers(model)}
    for kind in kinds:
        if kind.__name__ != "IteRand":
            continue
        try:
            probe = kind((2, 2), 0.5, torch.zeros(2, 2), 0, redraw=lambda g: torch.zeros(2, 2), period=1, prob=1.0)
        except TypeError:  # its constructor changed: nothing to probe with
            continue
        try:
            probe.to(device).after_step(1, torch.zeros(2, 2, device=device))
        except RuntimeError as exc:
            raise NotImplementedError(
                f"iterand cannot train on {device}: its re-randomisation (IteRand.after_step) failed there "
                f"({exc}); train it on the CPU") from None


def _identity_diff(saved: dict, cfg: TrainConfig) -> dict:
    """Fields where a checkpoint's config differs from ``cfg``'s identity, as {field: (saved, requested)}."""
    defaults = TrainConfig().to_dict()
    old = {k: saved.get(k, defaults[k]) for k in defaults if k not in RUNTIME_FIELDS}
    return {k: (old.get(k), v) for k, v in cfg.identity().items() if old.get(k) != v}


def _machine(rt: _runtime.Runtime) -> str:
    text = machine()  # the description every record carries, plus the accelerator
    if rt.device.type == "cuda":
        text += f", {torch.cuda.get_device_name(rt.device)}"
    return text


def _loop(model: torch.nn.Module, cfg: TrainConfig, rt: _runtime.Runtime, source, out: Path | None, *,
          resume: bool, quiet: bool, stop_after: int | None, describe: dict, ticket: bool) -> Run:
    """The loop both :func:`train` and :func:`fit` run; ``cfg`` is resolved, ``model`` on ``rt.device``."""
    from ..supermask import after_epoch, after_step, mask_counts, regularization, to_ticket

    main = rt.is_main
    quiet = quiet or not main
    if rt.distributed and cfg.batch_size % rt.world_size:
        raise ValueError(f"batch size {cfg.batch_size} (the global batch) must be divisible by the number of "
                         f"processes {rt.world_size}")
    _check_device_hooks(model, rt.device)
    trainable = [p for p in model.parameters() if p.requires_grad]  # fit refuses a model without any
    optimizer = torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = _runtime.grad_scaler(rt.device, cfg.precision)
    state = {"epoch": 0, "step": 0, "seconds": 0.0, "history": []}

    ckpt_path = None if out is None else out / CHECKPOINT
    if ckpt_path is not None:
        # rank 0 reads the checkpoint and hands it to the others: no shared file system needed to resume
        status = None
        if main:
            if ckpt_path.exists() and not resume:
                status = ("exists", None)
            elif resume and ckpt_path.exists():
                status = ("resume", torch.load(ckpt_path, map_location="cpu", weights_only=True))
            else:
                status = ("fresh", None)
        status = rt.broadcast(status)
        if status[0] == "exists":
            raise FileExistsError(f"{out} already holds a run ({ckpt_path}); pass --resume to continue it or "
                                  f"choose another --out")
        if status[0] == "resume":
            ckpt = status[1]
            diff = _identity_diff(ckpt["config"], cfg)
            if diff:
                raise ValueError(f"cannot resume {ckpt_path}: its config differs in (saved, requested) {diff}")
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            state = ckpt["state"]
        if main:
            out.mkdir(parents=True, exist_ok=True)

    net = model
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # DDP leaves alone what it is told to ignore: the frozen weights and every buffer. Every process drew
        # them identically from the seed (or loaded them from the same checkpoint); the supermask buffers
        # (Bernoulli's shift, Gem-Miner's alive set, IteRand's generations) stay equal because they follow
        # the scores, which are equal after every all-reduced step; BatchNorm statistics are averaged once
        # per epoch. (Synchronising them would also fail: gloo cannot broadcast IteRand's int16 buffer.)
        ignored = [name for name, p in model.named_parameters() if not p.requires_grad]
        ignored += [name for name, _ in model.named_buffers()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
        net = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)

    autocast = lambda: _runtime.autocast(rt.device, cfg.precision)  # noqa: E731
    steps_per_epoch = source.steps_per_epoch
    total_steps = cfg.epochs * steps_per_epoch
    kept, total = mask_counts(model)
    trainable_count = sum(p.numel() for p in trainable)
    commit = git_commit()
    where = rt.describe()

    def metrics(finished: bool) -> dict:
        history = state["history"]
        kept_now, _ = mask_counts(model)
        perplexity = {}
        if any("test_perplexity" in h for h in history):  # a sequence model
            perplexity = {"test_perplexity": history[-1]["test_perplexity"],
                          "best_test_perplexity": min(h["test_perplexity"] for h in history)}
        return {
            **describe,
            "density": kept_now / total, "kept_params": kept_now, "params": total,
            "trainable_params": trainable_count,
            "test_accuracy": history[-1]["test_accuracy"] if history else None,
            "best_test_accuracy": max((h["test_accuracy"] for h in history), default=None),
            **perplexity,
            "train_loss": [h["train_loss"] for h in history],
            "test_accuracy_per_epoch": [h["test_accuracy"] for h in history],
            "epochs": history, "epochs_done": state["epoch"], "seconds": state["seconds"],
            "finished": finished, "config": cfg.to_dict(), **where,
            "machine": _machine(rt), "git_commit": commit,
        }

    label = f"{describe['method']} {describe['model']}"
    with _progress(quiet) as progress:
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            start = time.perf_counter()
            task = progress.add_task(f"{label} epoch {epoch}/{cfg.epochs}", total=steps_per_epoch, status="")
            net.train()
            loss_sum, correct, seen = 0.0, 0, 0
            for xb, yb, m, real in source.epoch(epoch):
                lr = 0.5 * cfg.lr * (1.0 + math.cos(math.pi * state["step"] / total_steps))  # cosine, per step
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast():
                    logits = net(xb)
                    if rt.distributed:  # the global batch's mean after DDP averages over the processes
                        summed = _loss(logits.float(), yb, reduction="sum") * (1.0 if real else 0.0)
                        loss = summed * (rt.world_size / (m * yb[0].numel()))  # per sample, or per position
                    else:
                        loss = _loss(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                objective = loss + regularization(model)
                if scaler is None:
                    objective.backward()
                    optimizer.step()
                else:
                    scaler.scale(objective).backward()
                    scaler.step(optimizer)
                    scaler.update()
                state["step"] += 1
                after_step(model, state["step"])
                if real:
                    loss_sum += float(summed.detach()) if rt.distributed else float(loss.detach()) * yb.numel()
                    correct += int((logits.argmax(-1) == yb).sum())
                    seen += yb.numel()
                progress.update(task, advance=1, status=f"loss {loss_sum / max(seen, 1):.4f}")
            after_epoch(model, epoch, cfg.epochs)
            _average_batchnorm_stats(model, rt)
            if rt.distributed:
                loss_sum, correct, seen = rt.all_reduce([loss_sum, correct, seen])
                correct, seen = int(correct), int(seen)
            model.eval()
            right, count, test_loss = rt.all_reduce(list(source.evaluate(model, autocast)))
            test_accuracy = int(right) / int(count)
            test_loss = test_loss / int(count)
            seconds = time.perf_counter() - start
            state["epoch"] = epoch
            state["seconds"] += seconds
            entry = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                     "test_accuracy": test_accuracy, "test_loss": test_loss, "seconds": seconds,
                     "device": where["device"], "world_size": rt.world_size}
            if yb.ndim > 1:  # next-token prediction: perplexity = exp(mean cross-entropy per position)
                entry["train_perplexity"] = math.exp(min(loss_sum / seen, 700.0))
                entry["test_perplexity"] = math.exp(min(test_loss, 700.0))
            state["history"].append(entry)
            progress.update(task, status=f"loss {loss_sum / seen:.4f}  test acc {test_accuracy:.4f}")
            if not quiet and not progress.console.is_terminal:  # a log file gets no live bar: one line per epoch
                progress.console.print(f"{label} epoch {epoch}/{cfg.epochs}: train loss "
                                       f"{loss_sum / seen:.4f}, test accuracy {test_accuracy:.4f}, {seconds:.0f} s")
            finished = epoch == cfg.epochs
            if main and out is not None:
                atomic_torch_save(ckpt_path, {"config": cfg.to_dict(), "model": model.state_dict(),
                                              "optimizer": optimizer.state_dict(), "state": state,
                                              "scaler": None if scaler is None else scaler.state_dict()})
                if finished and ticket:
                    to_ticket(model, out / TICKET)
                atomic_write_json(out / METRICS, metrics(finished))
            if stop_after is not None and epoch >= stop_after and not finished:
                break
    return Run(metrics(state["epoch"] == cfg.epochs), model)


def train(config: TrainConfig, out: str | Path | None, *, resume: bool = False, quiet: bool = False,
          stop_after: int | None = None) -> Run:
    """Train ``config`` into directory ``out``; returns the metrics (also ``out/metrics.json``) and model.

    Metrics: ``test_accuracy`` (after the last epoch), ``train_loss`` and ``test_accuracy_per_epoch`` (lists),
    ``epochs`` (per epoch: train loss and accuracy, test accuracy and loss, seconds), for a sequence model
    (targets (N, T), e.g. gpt on pystdlib-chars) accuracy and loss per next token and ``test_perplexity``,
    ``best_test_perplexity`` and per epoch ``train_perplexity``, ``test_perplexity`` = exp(mean cross-entropy);
    ``data_info`` where the data set reports what it read (pystdlib-chars: Python version, corpus SHA-256),
    ``params`` (weights of all Linear/Conv2d layers), ``kept_params`` and ``density`` = kept / params
    under the final masks (1.0 for dense), ``trainable_params`` (scores, or weights for dense), ``seconds``
    (training + evaluation wall time, summed over resumed sessions), ``config`` (resolved), ``finished``,
    and where it ran: ``device``, ``precision``, ``world_size`` and ``backend`` (the process group's).

    ``resume`` continues from ``out/checkpoint.pt`` if it exists (the config must match but for the device
    and worker count). ``stop_after`` ends the run after that epoch, as an interruption would (used to test
    resumption). Under ``torchrun`` every process calls this; rank 0 writes the files. With ``out`` None
    nothing is written (``slth train-dense`` keeps only the model).
    """
    from ..data import open_dataset
    from ..supermask import build

    cfg = config.resolved()
    rt = _runtime.setup(cfg.device, cfg.precision)
    try:
        data = open_dataset(cfg.data, cfg.data_dir, cfg.image_size, **dict(cfg.data_args))
        model_kwargs = {**dict(cfg.model_args), **({} if cfg.hidden is None else {"hidden": list(cfg.hidden)})}
        # built on the CPU from the seed, then moved: a ticket trained on a GPU rebuilds on a CPU
        model = build(cfg.model, data.input_shape, data.num_classes, seed=cfg.seed, width=cfg.width,
                      supermask=cfg.supermask_config(), init=cfg.init, **model_kwargs).to(rt.device)
        from ..data import DATASETS

        source = (_StreamSource if DATASETS[cfg.data].streamed else _MemorySource)(data, cfg, rt)
        describe = {"method": cfg.method, "model": cfg.model, "data": cfg.data, "width": cfg.width, "seed": cfg.seed,
                    "target_density": 1.0 if cfg.method == "dense" else cfg.density}
        if getattr(data, "info", None):
            describe["data_info"] = dict(data.info)
        return _loop(model, cfg, rt, source, None if out is None else Path(out), resume=resume, quiet=quiet,
                     stop_after=stop_after, describe=describe, ticket=cfg.method != "dense")
    finally:
        rt.close()


def _method_of(model: torch.nn.Module) -> str:
    spec = getattr(model, "slth_spec", None) or {}
    if spec.get("supermask"):
        return spec["supermask"]["method"]
    from ..supermask import supermask_layers

    return "edge-popup" if any(True for _ in supermask_layers(model)) else "dense"


def fit(model: torch.nn.Module, train_loader, test_loader, config: TrainConfig | None = None, *,
        out: str | Path | None = None, resume: bool = False, quiet: bool = True,
        stop_after: int | None = None) -> Run:
    """Train the caller's ``model`` (dense, or supermasked by :func:`slth.supermask.apply_supermask` /
    :func:`slth.supermask.build`) with the loop of ``slth train``: SGD with momentum, a per-step cosine
    schedule, the supermask hooks, device, precision, DDP under torchrun, checkpoints and metrics in ``out``
    (nothing is written when ``out`` is None).

    ``train_loader`` yields (x, y) batches (it needs a length); ``test_loader`` is evaluated after every
    epoch. Of ``config`` (default: a :class:`TrainConfig` of the model's method), ``method`` picks the
    default lr and weight decay, and ``epochs``, ``lr``, ``momentum``, ``weight_decay``, ``device`` and
    ``precision`` apply; its model, data, density, width and augmentation fields are not used. The model
    is trained in place (moved to the device); a supermask model built by :func:`slth.supermask.build`
    leaves ``out/ticket.slth``.
    """
    if config is None:
        config = TrainConfig(method=_method_of(model))
    cfg = config.resolved()
    if resume and out is None:
        raise ValueError("resume needs an out directory")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has no trainable parameters (requires_grad)")
    rt = _runtime.setup(cfg.device, cfg.precision)
    try:
        source = _LoaderSource(train_loader, test_loader, rt)  # checks the loader before the model moves
        model.to(rt.device)
        spec = getattr(model, "slth_spec", None) or {}
        describe = {"method": cfg.method, "model": spec.get("model", type(model).__name__), "data": "loader",
                    "width": cfg.width, "seed": cfg.seed,
                    "target_density": 1.0 if cfg.method == "dense" else cfg.density}
        return _loop(model, cfg, rt, source, None if out is None else Path(out), resume=resume, quiet=quiet,
                     stop_after=stop_after, describe=describe, ticket=bool(spec.get("supermask")))
    finally:
        rt.close()
