"""Training-step time of a supermask against the dense step at the same width (same batch, same model)."""

from __future__ import annotations

import time


def step_times(model: str = "fc", method: str = "edge-popup", *, width: float = 1.0, density: float = 0.5,
               batch_size: int = 128, input_shape=(1, 28, 28), steps: int = 50, warmup: int = 10,
               repeats: int = 3, seed: int = 0) -> dict:
    """Seconds per SGD step (forward, backward, update, hooks) for ``dense`` and ``method``: the median and
    the minimum over ``repeats`` rounds of ``steps`` steps.

    The two are timed alternately in one process, round by round, so that machine noise hits both alike;
    on a shared machine the minimum (least disturbed round) is the steadier ratio.
    """
    import torch
    import torch.nn.functional as F

    from . import after_step, build, regularization
    from ..train.config import TrainConfig

    cfg = {m: TrainConfig(method=m, model=model, density=density, width=width).resolved() for m in ("dense", method)}
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, *input_shape, generator=gen)
    y = torch.randint(0, 10, (batch_size,), generator=gen)
    setups = {}
    for m, c in cfg.items():
        net = build(model, input_shape, 10, seed=seed, width=width, supermask=c.supermask_config(), init=c.init)
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=c.lr, momentum=0.9,
                              weight_decay=c.weight_decay)
        setups[m] = (net.train(), opt)

    def run(m: str, n: int, step0: int) -> float:
        net, opt = setups[m]
        start = time.perf_counter()
        for s in range(n):
            loss = F.cross_entropy(net(x), y) + regularization(net)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            after_step(net, step0 + s + 1)
        return (time.perf_counter() - start) / n

    for m in setups:
        run(m, warmup, 0)
    samples: dict[str, list[float]] = {m: [] for m in setups}
    for r in range(repeats):
        for m in setups:
            samples[m].append(run(m, steps, warmup + r * steps))
    median = {m: sorted(v)[len(v) // 2] for m, v in samples.items()}
    best = {m: min(v) for m, v in samples.items()}  # least disturbed round: robust on a shared machine
    return {"model": model, "method": method, "width": width, "density": density, "batch_size": batch_size,
            "steps": steps, "repeats": repeats, "threads": torch.get_num_threads(),
            "dense_step_s": median["dense"], "supermask_step_s": median[method],
            "ratio": median[method] / median["dense"],
            "dense_step_min_s": best["dense"], "supermask_step_min_s": best[method],
            "ratio_min": best[method] / best["dense"], "samples": samples}
