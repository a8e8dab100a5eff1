"""Tickets of trained CNNs: LeNet-5 on MNIST and ResNet-20 on Fashion-MNIST, ticket vs target on the test set.

Trains the target (seeded, plain SGD on [0, 1] images, BatchNorm in eval mode afterwards), constructs its
ticket for each eps and measures, on all 10,000 test images: both accuracies, top-1 agreement and the
max |logit difference| (the measured output error), plus construction time and sizes.

    slth bench construct-cnn --model lenet5 --data mnist --data-dir DIR \
        --epochs 2 --eps 0.01 0.001 --out lenet5-mnist.json
    slth bench construct-cnn --model resnet20 --data fashion-mnist \
        --data-dir DIR2 --epochs 1 --eps 0.01 0.001 --out resnet20-fmnist.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from slth._io import atomic_write_json


def train(model, x, y, epochs: int, lr: float, seed: int, batch: int = 128):
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="slth bench construct-cnn", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-dir", required=True, help="the data set's folder")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=None, help="train on the first N training images only")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.001])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images only")
    ap.add_argument("--target-file", default=None, help="a trained state_dict of --model to use instead of training")
    ap.add_argument("--out", default=None)
    ap.add_argument("--save-dir", default=None, help="also save the target state_dict and the tickets here")
    args = ap.parse_args(argv)

    import torch

    from slth.construction import construct
    from slth.construction.report import measure
    from slth.data import load_dataset
    from slth.models.zoo import build_target

    data = load_dataset(args.data, args.data_dir)
    torch.manual_seed(args.seed)
    model = build_target(args.model, data.input_shape, data.num_classes, width=args.width)
    t0 = time.perf_counter()
    limit = args.train_limit or len(data.x_train)
    if args.target_file:
        model.load_state_dict(torch.load(args.target_file, map_location="cpu", weights_only=True))
        target = model.eval()
    else:
        target = train(model, data.x_train[:limit], data.y_train[:limit], args.epochs, args.lr, args.seed)
    train_seconds = time.perf_counter() - t0
    tests = args.test_limit or len(data.x_test)
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir and not args.target_file:
        save_dir.mkdir(parents=True, exist_ok=True)
        torch.save(target.state_dict(), save_dir / f"{args.model}-{args.data}.pt")
    record = {"command": "python " + " ".join(sys.argv), "model": args.model, "data": args.data,
              "epochs": args.epochs, "train_images": limit, "test_images": tests, "target_file": args.target_file,
              "train_seconds": round(train_seconds, 1),
              "target_params": sum(p.numel() for p in target.parameters()), "tickets": []}
    for eps in args.eps:
        ticket = construct(target, eps, seed=args.seed, nonnegative_input=True, workers=args.workers)
        t1 = time.perf_counter()
        module = ticket.to_module()
        result = measure(module, target, data.x_test[:tests], data.y_test[:tests], batch_size=250)
        s = ticket.stats
        entry = {
            "eps": eps, "construct_seconds": round(s["seconds"], 1), "eval_seconds": round(time.perf_counter() - t1, 1),
            "target_accuracy": result["target_accuracy"], "ticket_accuracy": result["ticket_accuracy"],
            "accuracy_diff_pp": round(100 * (result["ticket_accuracy"] - result["target_accuracy"]), 3),
            "top1_agreement": result["top1_agreement"], "max_logit_diff": result["max_logit_diff"],
            "max_weight_error": s["max_weight_error"], "failures": s["failures"], "redraws": s["redraws"],
            "n_per_layer": s["n_per_layer"], "layer_scales": s["layer_scales"],
            "target_params_folded": s["target_params"], "random_params": s["random_params"],
            "kept_params": s["kept_params"], "digest": ticket.digest(),
        }
        if save_dir:
            entry["ticket_bytes"] = ticket.save(save_dir / f"{args.model}-{args.data}-eps{eps:g}.slth").stat().st_size
        record["tickets"].append(entry)
        print(json.dumps(entry), flush=True)
    if args.out:
        atomic_write_json(args.out, record)
    return 0
