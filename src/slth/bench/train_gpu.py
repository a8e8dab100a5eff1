"""Training steps per second on a CUDA GPU: dense against every supermask method, fp32 and bf16.

For a machine with a CUDA GPU (without one the script says so and exits 0). For each model (fc, conv4,
resnet20, and vit when the model registry has it; names it lacks are skipped), precision and method it
builds the model as ``slth train`` does (seeded on the CPU, moved to the GPU), and times the trainer's
step -- forward under autocast, cross-entropy, backward, SGD step, the supermask hooks -- on a fixed random
batch already on the GPU (data loading is not measured). Median of ``--repeats`` rounds of ``--steps``.

    slth bench train-gpu --batch-size 256 --out gpu-train.json
    slth bench train-gpu --models resnet20 --methods dense,edge-popup --precisions bf16

``--device cpu`` runs the same loop on the CPU (a dry run of the script; the tests use it).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

INPUT = {"fc": (1, 28, 28)}  # every other model: CIFAR-shaped (3, 32, 32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="slth bench train-gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="fc,conv4,resnet20,vit")
    ap.add_argument("--methods", default=None, help="default: dense and every supermask method")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--density", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a dry run of the same loop)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from slth.models import MODELS
    from slth.supermask import after_step, build, regularization
    from slth.train import TRAIN_METHODS, TrainConfig
    from slth.train.loop import _check_device_hooks
    from slth.train.runtime import autocast

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (run this on a machine with a GPU)")
        return 0
    if device.type not in ("cuda", "cpu"):
        raise SystemExit(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)
    methods = args.methods.split(",") if args.methods else list(TRAIN_METHODS)
    rows = []
    for model in args.models.split(","):
        if model not in MODELS:
            print(f"skipping {model}: not in the model registry")
            continue
        shape = INPUT.get(model, (3, 32, 32))
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(args.batch_size, *shape, generator=gen).to(device)
        y = torch.randint(0, 10, (args.batch_size,), generator=gen).to(device)
        for precision in args.precisions.split(","):
            for method in methods:
                cfg = TrainConfig(method=method, model=model, density=args.density).resolved()
                net = build(model, shape, 10, seed=0, supermask=cfg.supermask_config(), init=cfg.init).to(device)
                try:
                    _check_device_hooks(net, device)
                except NotImplementedError as exc:
                    print(f"{model} {precision} {method}: refused ({exc})")
                    rows.append({"model": model, "precision": precision, "method": method, "refused": str(exc)})
                    continue
                opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=cfg.lr, momentum=0.9,
                                      weight_decay=cfg.weight_decay)
                scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
                step = [0]

                def steps(n: int, net=net, opt=opt, scaler=scaler, precision=precision, step=step, x=x, y=y) -> float:
                    sync()
                    start = time.perf_counter()
                    for _ in range(n):
                        with autocast(device, precision):
                            loss = F.cross_entropy(net(x), y)
                        opt.zero_grad(set_to_none=True)
                        objective = loss + regularization(net)
                        if scaler is None:
                            objective.backward()
                            opt.step()
                        else:
                            scaler.scale(objective).backward()
                            scaler.step(opt)
                            scaler.update()
                        step[0] += 1
                        after_step(net, step[0])
                    sync()
                    return n / (time.perf_counter() - start)

                net.train()
                steps(args.warmup)
                rates = [steps(args.steps) for _ in range(args.repeats)]
                row = {"model": model, "precision": precision, "method": method, "batch_size": args.batch_size,
                       "steps_per_s": statistics.median(rates), "samples": rates}
                rows.append(row)
                print(f"{model} {precision} {method}: {row['steps_per_s']:.1f} steps/s", flush=True)
                del net, opt
                if cuda:
                    torch.cuda.empty_cache()
    dense = {(r["model"], r["precision"]): r["steps_per_s"] for r in rows
             if r["method"] == "dense" and "steps_per_s" in r}
    print("\n| model | precision | method | steps/s | x dense |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "steps_per_s" in r:
            base = dense.get((r["model"], r["precision"]))
            ratio = f"{r['steps_per_s'] / base:.2f}" if base else "-"
            print(f"| {r['model']} | {r['precision']} | {r['method']} | {r['steps_per_s']:.1f} | {ratio} |")
    if args.out:
        from slth._io import atomic_write_json

        name = torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})"
        record = {"command": "python " + " ".join(sys.argv), "device": name, "torch": torch.__version__,
                  "rows": rows}
        atomic_write_json(args.out, record)
    return 0
