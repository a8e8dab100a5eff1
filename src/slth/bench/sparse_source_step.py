"""Training-step time of a supermask over a dense and over an Erdos-Renyi source (q = 0.5, density 0.25),
against the dense step, timed in alternating rounds in one process (machine noise hits the three alike):

    slth bench sparse-source-step [--rounds 9 --steps 15]

Prints, per model and method, median/min ms per step and the ratios (docs/training.md, "Sparse random sources").
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from slth.supermask import after_step, build, regularization
from slth.train.config import TrainConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="slth bench sparse-source-step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds (the median and min are over them)")
    parser.add_argument("--steps", type=int, default=15, help="training steps per configuration and round")
    args = parser.parse_args(argv)
    rounds, steps = args.rounds, args.steps
    torch.set_num_threads(1)
    for model, method in (("fc", "edge-popup"), ("lenet5", "edge-popup"), ("fc", "biprop")):
        cfgs = {"dense": TrainConfig(method="dense", model=model).resolved(),
                "src-dense": TrainConfig(method=method, model=model, density=0.25).resolved(),
                "src-er": TrainConfig(method=method, model=model, density=0.25, source="erdos-renyi",
                                      source_density=0.5).resolved()}
        g = torch.Generator().manual_seed(0)
        xs, ys = torch.randn(4, 128, 1, 28, 28, generator=g), torch.randint(0, 10, (4, 128), generator=g)
        setups = {}
        for k, c in cfgs.items():
            net = build(model, (1, 28, 28), 10, seed=0, supermask=c.supermask_config(), init=c.init).train()
            setups[k] = (net, torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=c.lr,
                                              momentum=0.9, weight_decay=c.weight_decay))
        done = {k: 0 for k in setups}

        def run(k: str, n: int, setups=setups, done=done, xs=xs, ys=ys) -> float:
            net, opt = setups[k]
            start = time.perf_counter()
            for _ in range(n):
                b = done[k] % 4
                loss = F.cross_entropy(net(xs[b]), ys[b]) + regularization(net)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done[k] += 1
                after_step(net, done[k])
            return (time.perf_counter() - start) / n

        for k in setups:
            run(k, 5)
        samples: dict[str, list[float]] = {k: [] for k in setups}
        for _ in range(rounds):
            for k in setups:
                samples[k].append(run(k, steps))
        med = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
        best = {k: min(v) for k, v in samples.items()}
        print(model, method, " ".join(f"{k} {med[k] * 1e3:.2f}/{best[k] * 1e3:.2f} ms" for k in setups),
              f"| median ratio vs dense: dense-source {med['src-dense'] / med['dense']:.3f}, "
              f"er {med['src-er'] / med['dense']:.3f}, er/dense-source {med['src-er'] / med['src-dense']:.3f}",
              f"| min ratio: dense-source {best['src-dense'] / best['dense']:.3f}, "
              f"er {best['src-er'] / best['dense']:.3f}",
              flush=True)

