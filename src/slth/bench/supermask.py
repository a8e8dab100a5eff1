"""Training-step time of a supermask against the dense step at the same width (same batch, same model), and
of edge-popup as the reference implementation computes it (``peer``: hidden-networks' ``GetSubnet``)."""

from __future__ import annotations

import time


def _peer_classes():
    """The reference implementation's edge-popup (Ramanujan et al. 2020, github.com/allenai/hidden-networks,
    ``utils/conv_type.py``), re-implemented here for timing only: a Linear/Conv2d subclass whose forward
    multiplies its frozen weight by ``GetSubnet(|scores|, density)``, and a ``GetSubnet`` that sorts the
    whole score tensor on every forward and writes the 0/1 mask by index assignment (the lowest
    ``int((1 - density) * numel)`` scores 0, the rest 1); straight-through backward. Built in a function so
    that importing this module does not import torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PeerGetSubnet(torch.autograd.Function):
        @staticmethod
        def forward(ctx, scores, density):
            mask = scores.clone()
            order = scores.flatten().sort()[1]  # the full sort, as the reference does (values discarded)
            cut = int((1 - density) * scores.numel())
            flat = mask.flatten()  # a view: mask is a fresh contiguous clone
            flat[order[:cut]] = 0
            flat[order[cut:]] = 1
            return mask

        @staticmethod
        def backward(ctx, grad):
            return grad, None

    class PeerLinear(nn.Linear):
        def forward(self, x):
            return F.linear(x, self.weight * PeerGetSubnet.apply(self.scores.abs(), self.density), self.bias)

    class PeerConv2d(nn.Conv2d):
        def forward(self, x):
            return self._conv_forward(x, self.weight * PeerGetSubnet.apply(self.scores.abs(), self.density),
                                      self.bias)

    return {nn.Linear: PeerLinear, nn.Conv2d: PeerConv2d}


def peer_edge_popup(net):
    """Turn ``net``, an slth edge-popup network, into the reference implementation's form in place (returned):
    each masked Linear/Conv2d loses its parametrization and becomes a layer whose forward masks its frozen
    weight with the reference's ``GetSubnet`` (:func:`_peer_classes`), with the same weight and scores. In
    training mode it computes what slth's edge-popup computes (the same top-k at density 0.5, barring tied
    scores; the same straight-through gradients), only the way the reference does."""
    import torch
    from torch.nn.utils import parametrize

    from ..supermask.apply import _supermasks
    from ..supermask.methods import EdgePopup

    classes = _peer_classes()
    for _, module, tensor, p in list(_supermasks(net)):
        base = type(module).__bases__[0]  # a parametrized module's class is a subclass made for it
        if type(p) is not EdgePopup or tensor != "weight" or base not in classes:
            raise TypeError(f"the peer implementation covers edge-popup on Linear/Conv2d weights, not "
                            f"{type(p).__name__} on {base.__name__}.{tensor}")
        scores = p.scores.detach().clone()
        parametrize.remove_parametrizations(module, tensor, leave_parametrized=False)
        assert type(module) is base
        module.__class__ = classes[type(module)]
        module.scores = torch.nn.Parameter(scores)
        module.density = p.density
        module.weight.requires_grad_(False)
    return net


def step_times(model: str = "fc", method: str = "edge-popup", *, width: float = 1.0, density: float = 0.5,
               batch_size: int = 128, input_shape=(1, 28, 28), steps: int = 50, warmup: int = 10,
               repeats: int = 3, seed: int = 0, peer: bool = False, batches: int = 1, source: str = "dense",
               source_density: float = 1.0) -> dict:
    """Seconds per SGD step (forward, backward, update, hooks) for ``dense`` and ``method``: the median and
    the minimum over ``repeats`` rounds of ``steps`` steps. With ``peer`` (edge-popup only) also for the
    reference implementation's edge-popup (:func:`peer_edge_popup`) on the same weights and scores, and
    ``speedup`` = peer step / slth step.

    The steps cycle through ``batches`` distinct random batches (1: the same batch every step). With one
    batch the gradients repeat and the top-k threshold moves more steadily than on a data stream, so the
    band of the banded selection (:class:`slth.supermask.core.ThresholdTracker`) is narrower.

    The setups are timed alternately in one process, round by round, so that machine noise hits them alike;
    on a shared machine the minimum (least disturbed round) is the steadier ratio. ``source`` and
    ``source_density`` set the supermask's random source (:mod:`slth.supermask.source`; the dense step is
    the same dense network either way).
    """
    import torch
    import torch.nn.functional as F

    from ..supermask import after_step, build, regularization
    from ..train.config import TrainConfig

    if peer and method != "edge-popup":
        raise ValueError(f"the peer implementation is edge-popup's; got method {method!r}")
    if peer and source != "dense":
        raise ValueError(f"the peer implementation searches the dense source; got source {source!r}")
    sparse = {} if source == "dense" else {"source": source, "source_density": source_density}
    cfg = {m: TrainConfig(method=m, model=model, density=density, width=width, **({} if m == "dense" else sparse))
           .resolved() for m in ("dense", method)}
    if peer:
        cfg["peer"] = cfg[method]
    if batches < 1:
        raise ValueError(f"batches must be at least 1, got {batches}")
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(batches, batch_size, *input_shape, generator=gen)
    ys = torch.randint(0, 10, (batches, batch_size), generator=gen)
    setups = {}
    for m, c in cfg.items():
        net = build(model, input_shape, 10, seed=seed, width=width, supermask=c.supermask_config(), init=c.init)
        if m == "peer":
            net = peer_edge_popup(net)
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=c.lr, momentum=0.9,
                              weight_decay=c.weight_decay)
        setups[m] = (net.train(), opt)

    def run(m: str, n: int, step0: int) -> float:
        net, opt = setups[m]
        start = time.perf_counter()
        for s in range(n):
            b = (step0 + s) % batches  # every setup sees the same batch at the same step
            loss = F.cross_entropy(net(xs[b]), ys[b]) + regularization(net)
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
    result = {"model": model, "method": method, "width": width, "density": density, "source": source,
              "source_density": source_density, "batch_size": batch_size,
              "batches": batches, "steps": steps, "repeats": repeats, "threads": torch.get_num_threads(),
              "dense_step_s": median["dense"], "supermask_step_s": median[method],
              "ratio": median[method] / median["dense"],
              "dense_step_min_s": best["dense"], "supermask_step_min_s": best[method],
              "ratio_min": best[method] / best["dense"], "samples": samples}
    if peer:
        result.update({"peer_step_s": median["peer"], "peer_step_min_s": best["peer"],
                       "peer_ratio": median["peer"] / median["dense"],
                       "peer_ratio_min": best["peer"] / best["dense"],
                       "speedup": median["peer"] / median[method], "speedup_min": best["peer"] / best[method],
                       # per round: the two were timed back to back, so this ratio shares the round's noise
                       "speedup_rounds": [p / s for p, s in zip(samples["peer"], samples[method])]})
    return result


# the models of the sweep, their input shape and batch size
CASES = [("fc", (1, 28, 28), 128), ("lenet5", (1, 28, 28), 128), ("conv4", (1, 28, 28), 64)]


def main(argv: list[str] | None = None) -> None:
    """``slth bench supermask-steps``: :func:`step_times` of each (model, method) of :data:`CASES` against the
    dense step of the same model, alternating the two so machine noise hits both alike; for edge-popup also the
    reference implementation's way (hidden-networks' ``GetSubnet``: a full sort of the scores per forward;
    :func:`peer_edge_popup`) unless ``--no-peer``. Prints markdown tables for docs/benchmarks.md ("Learning by
    pruning")."""
    import argparse
    import datetime
    import platform

    import torch

    from ..supermask.methods import METHODS

    parser = argparse.ArgumentParser(prog="slth bench supermask-steps",
                                     description="Supermask training steps against the dense step at the same "
                                                 "width, every model and method, one process (CPU)",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--batches", type=int, default=1,
                        help="distinct random batches the steps cycle through (1: the same batch every step)")
    parser.add_argument("--models", default="fc,lenet5,conv4")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--no-peer", action="store_true", help="skip the reference implementation's edge-popup")
    parser.add_argument("--out", default=None, help="write the raw results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for model, shape, batch in CASES:
        if model not in args.models.split(","):
            continue
        for method in args.methods.split(","):
            r = step_times(model, method, density=args.density, batch_size=batch, input_shape=shape, steps=args.steps,
                           repeats=args.repeats, batches=args.batches, peer=method == "edge-popup" and not args.no_peer)
            rows.append(r)
            print(f"{model:7s} {method:11s} min: dense {1e3 * r['dense_step_min_s']:8.2f} ms  supermask "
                  f"{1e3 * r['supermask_step_min_s']:8.2f} ms  ratio {r['ratio_min']:.2f}   (median ratio "
                  f"{r['ratio']:.2f})", flush=True)
            if "peer_step_s" in r:
                print(f"{'':19s} min: peer  {1e3 * r['peer_step_min_s']:8.2f} ms  speed-up of slth over peer "
                      f"{r['speedup_min']:.2f}   (median {r['speedup']:.2f})", flush=True)
    print(f"\n{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"{args.batches} batch(es), {datetime.date.today()}\n")
    print("| model | batch | method | dense step, min (ms) | supermask step, min (ms) | ratio of minima "
          "| ratio of medians |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['batch_size']} | {r['method']} | {1e3 * r['dense_step_min_s']:.2f} | "
              f"{1e3 * r['supermask_step_min_s']:.2f} | {r['ratio_min']:.2f} | {r['ratio']:.2f} |")
    peers = [r for r in rows if "peer_step_s" in r]
    if peers:
        print("\nAgainst the reference implementation's GetSubnet (edge-popup; median rounds, steps per second "
              "in brackets; speed-up = peer step / slth step, of medians and of minima):\n")
        print("| model | batch | dense step (ms) | slth edge-popup (ms) | peer edge-popup (ms) | slth / dense "
              "| peer / dense | speed-up, medians | speed-up, minima |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in peers:
            keys = ("dense_step_s", "supermask_step_s", "peer_step_s")
            cells = [f"{1e3 * r[k]:.2f} ({1 / r[k]:.0f}/s)" for k in keys]
            print(f"| {r['model']} | {r['batch_size']} | {' | '.join(cells)} | {r['ratio']:.2f} | "
                  f"{r['peer_ratio']:.2f} | {r['speedup']:.1f} | {r['speedup_min']:.1f} |")
    if args.out:
        from .._io import atomic_write_json

        atomic_write_json(args.out, rows)
