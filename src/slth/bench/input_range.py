"""Kept parameters of a standardised-input MLP with and without ``input_range`` (issue 15, item 4).

Trains a 784-300-100-10 ReLU MLP for one epoch on standardised MNIST (x - 0.1307) / 0.3081, inputs in
[-0.4242, 2.8215]), then constructs, at the same eps and seed: the signed construction (no box), the
construction with ``input_range`` = that box (the input shifted to x - lo >= 0 by a fixed offset), and the
``[0, 1]`` twin (the standardisation folded into the first layer, ``nonnegative_input=True``: the same
function of the raw pixels). Reports kept / target params, random params, max weight error, the measured
max |logit difference| on the 10,000 test images and the time.

    slth bench input-range --data-dir DIR --out input-range.json
"""

from __future__ import annotations

import argparse
import json
import time

MEAN, STD = 0.1307, 0.3081


def main(argv: list[str] | None = None) -> None:
    import torch
    from torch import nn

    from slth._io import atomic_write_json
    from slth.construction import construct, mlp
    from slth.data import load_dataset

    ap = argparse.ArgumentParser(prog="slth bench input-range")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    data = load_dataset("mnist", args.data_dir)
    x_train = (data.x_train.reshape(len(data.x_train), -1) - MEAN) / STD
    x_test = (data.x_test.reshape(len(data.x_test), -1) - MEAN) / STD
    lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
    torch.manual_seed(args.seed)
    net = mlp([784, 300, 100, 10])
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        order = torch.randperm(len(x_train), generator=g)
        for i in range(0, len(x_train), 128):
            idx = order[i : i + 128]
            loss = nn.functional.cross_entropy(net(x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    twin = mlp([784, 300, 100, 10]).eval()  # the same function of raw pixels in [0, 1]
    with torch.no_grad():
        twin.load_state_dict(net.state_dict())
        twin[1].weight.copy_(net[1].weight / STD)
        twin[1].bias.copy_(net[1].bias - (net[1].weight * MEAN / STD).sum(1))
    with torch.no_grad():
        acc = float((net(x_test).argmax(1) == data.y_test).float().mean())
        assert torch.allclose(twin(data.x_test.reshape(len(x_test), -1)), net(x_test), atol=1e-4)
    rows = {}
    runs = {"signed": (net, {}, x_test), "input_range": (net, {"input_range": (lo, hi)}, x_test),
            "twin_0_1": (twin, {"nonnegative_input": True}, data.x_test.reshape(len(x_test), -1))}
    for name, (target, kwargs, x) in runs.items():
        start = time.perf_counter()
        ticket = construct(target, args.eps, seed=args.seed, **kwargs)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            diff = float((ticket.to_module()(x) - target(x)).abs().max())
        s = ticket.stats
        rows[name] = {"kept_over_target": s["kept_params"] / s["target_params"], "kept_params": s["kept_params"],
                      "random_params": s["random_params"], "target_params": s["target_params"],
                      "n_per_layer": s["n_per_layer"], "max_weight_error": s["max_weight_error"],
                      "failures": s["failures"], "max_logit_diff_test": diff, "seconds": seconds}
        print(f"{name:12s} kept/target {rows[name]['kept_over_target']:.3f}  n {s['n_per_layer']}  "
              f"max weight err {s['max_weight_error']:.4f}  max |logit diff| on test {diff:.4f}  {seconds:.1f} s")
    report = {"target": f"784-300-100-10, {args.epochs} epoch(s) SGD on standardised MNIST, test acc {acc:.4f}",
              "eps": args.eps, "seed": args.seed, "input_range": [lo, hi], "runs": rows}
    print(json.dumps(report["target"]))
    if args.out:
        atomic_write_json(args.out, report)
