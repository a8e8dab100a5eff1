"""One training loop for dense and supermask training: same data order, schedule and augmentation.

Output directory: ``checkpoint.pt`` (every epoch, atomic), ``metrics.json`` (every epoch; ``finished``
tells whether the run is complete), ``ticket.slth`` for supermask methods at the end.
Randomness: the model is built from ``seed``; epoch e's batch order and augmentation come from generators
seeded by (seed, e); stochastic masks carry their generator state in the model's ``state_dict``. So a
resumed run replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .._io import atomic_torch_save, atomic_write_json
from ..provenance import git_commit
from .config import TrainConfig

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
TICKET = "ticket.slth"


@dataclass
class Run:
    """What :func:`train` returns: the metrics (as in ``metrics.json``) and the trained model."""

    metrics: dict
    model: torch.nn.Module


def random_crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Per-image random crop after zero padding ``pad`` and random horizontal flip, batched."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    left = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    flip = torch.rand(n, 1, generator=gen) < 0.5
    rows = top + torch.arange(h)
    cols = left + torch.arange(w)
    cols = torch.where(flip, cols.flip(1), cols)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return correct / len(x)


def _progress(quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[status]}"), disable=quiet, transient=False)


def train(config: TrainConfig, out: str | Path, *, resume: bool = False, quiet: bool = False,
          stop_after: int | None = None) -> Run:
    """Train ``config`` into directory ``out``; returns the metrics (also ``out/metrics.json``) and model.

    Metrics: ``test_accuracy`` (after the last epoch), ``train_loss`` and ``test_accuracy_per_epoch`` (lists),
    ``params`` (weights of all Linear/Conv2d layers), ``kept_params`` and ``density`` = kept / params
    under the final masks (1.0 for dense), ``trainable_params`` (scores, or weights for dense), ``seconds``
    (training + evaluation wall time, summed over resumed sessions), ``config`` (resolved) and ``finished``.

    ``resume`` continues from ``out/checkpoint.pt`` if it exists (the config must match). ``stop_after``
    ends the run after that epoch, as an interruption would (used to test resumption).
    """
    from ..data import load_dataset
    from ..supermask import after_epoch, after_step, build, mask_counts, regularization, to_ticket
    from ..seeding import generator

    cfg = config.resolved()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise FileExistsError(f"{out} already holds a run ({ckpt_path}); pass --resume to continue it or choose another --out")

    data = load_dataset(cfg.data, cfg.data_dir)
    model_kwargs = {} if cfg.hidden is None else {"hidden": list(cfg.hidden)}
    model = build(cfg.model, data.input_shape, data.num_classes, seed=cfg.seed, width=cfg.width,
                  supermask=cfg.supermask_config(), init=cfg.init, **model_kwargs)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "step": 0, "seconds": 0.0, "history": []}

    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        if ckpt["config"] != cfg.to_dict():
            diff = {k: (ckpt["config"].get(k), v) for k, v in cfg.to_dict().items() if ckpt["config"].get(k) != v}
            raise ValueError(f"cannot resume {ckpt_path}: its config differs in (saved, requested) {diff}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]

    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    norm = (lambda x: (x - mean) / std) if cfg.normalize else (lambda x: x)
    x_train, y_train = (data.x_train if cfg.augment else norm(data.x_train)), data.y_train
    x_test, y_test = norm(data.x_test), data.y_test
    n = len(x_train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    kept, total = mask_counts(model)
    trainable_count = sum(p.numel() for p in trainable)

    commit = git_commit()

    def metrics(finished: bool) -> dict:
        history = state["history"]
        kept_now, _ = mask_counts(model)
        return {
            "method": cfg.method, "model": cfg.model, "data": cfg.data, "width": cfg.width, "seed": cfg.seed,
            "target_density": 1.0 if cfg.method == "dense" else cfg.density,
            "density": kept_now / total, "kept_params": kept_now, "params": total,
            "trainable_params": trainable_count,
            "test_accuracy": history[-1]["test_accuracy"] if history else None,
            "best_test_accuracy": max((h["test_accuracy"] for h in history), default=None),
            "train_loss": [h["train_loss"] for h in history],
            "test_accuracy_per_epoch": [h["test_accuracy"] for h in history],
            "epochs": history, "epochs_done": state["epoch"], "seconds": state["seconds"],
            "finished": finished, "config": cfg.to_dict(),
            "machine": f"{platform.machine()} {platform.system()}, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads",
            "git_commit": commit,
        }

    with _progress(quiet) as progress:
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            start = time.perf_counter()
            task = progress.add_task(f"{cfg.method} {cfg.model} epoch {epoch}/{cfg.epochs}", total=steps_per_epoch,
                                     status="")
            order = torch.randperm(n, generator=generator(cfg.seed, "data-order", epoch))
            aug_gen = generator(cfg.seed, "augment", epoch)
            model.train()
            loss_sum, correct = 0.0, 0
            for b in range(steps_per_epoch):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                xb = norm(random_crop_flip(x_train[idx], aug_gen)) if cfg.augment else x_train[idx]
                lr = 0.5 * cfg.lr * (1.0 + math.cos(math.pi * state["step"] / total_steps))  # cosine, per step
                for group in optimizer.param_groups:
                    group["lr"] = lr
                logits = model(xb)
                loss = F.cross_entropy(logits, y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                (loss + regularization(model)).backward()
                optimizer.step()
                state["step"] += 1
                after_step(model, state["step"])
                loss_sum += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == y_train[idx]).sum())
                progress.update(task, advance=1, status=f"loss {loss_sum / min(n, (b + 1) * cfg.batch_size):.4f}")
            after_epoch(model, epoch, cfg.epochs)
            test_accuracy = evaluate(model, x_test, y_test)
            seconds = time.perf_counter() - start
            state["epoch"] = epoch
            state["seconds"] += seconds
            state["history"].append({"epoch": epoch, "train_loss": loss_sum / n, "train_accuracy": correct / n,
                                     "test_accuracy": test_accuracy, "seconds": seconds})
            progress.update(task, status=f"loss {loss_sum / n:.4f}  test acc {test_accuracy:.4f}")
            if not quiet and not progress.console.is_terminal:  # a log file gets no live bar: one line per epoch
                progress.console.print(f"{cfg.method} {cfg.model} epoch {epoch}/{cfg.epochs}: train loss "
                                       f"{loss_sum / n:.4f}, test accuracy {test_accuracy:.4f}, {seconds:.0f} s")
            atomic_torch_save(ckpt_path, {"config": cfg.to_dict(), "model": model.state_dict(),
                                          "optimizer": optimizer.state_dict(), "state": state})
            finished = epoch == cfg.epochs
            if finished and cfg.method != "dense":
                to_ticket(model, out / TICKET)
            atomic_write_json(out / METRICS, metrics(finished))
            if stop_after is not None and epoch >= stop_after and not finished:
                break
    return Run(metrics(state["epoch"] == cfg.epochs), model)
