"""Construction at scale: a ResNet-18-shaped target (ImageNet layout, 11.7M weights) or a GPT-2-small-shaped one
(12 layers, d 768, 12 heads, vocabulary 50,257, context 1,024: 124M parameters), random init.

Measures wall time, CPU time and peak RSS (this process and, separately, the largest worker process)
of ``slth.construct`` for a backend/worker count, and writes one JSON record per run.

    slth bench construct-scale --workers 1 --out bench-r18-w1.json
    slth bench construct-scale --workers 2 --out bench-r18-w2.json
    slth bench construct-scale --backend ray --workers 2 --out bench-r18-ray2.json
    slth bench construct-scale --target gpt2-small --workdir WD --out bench-gpt2-w1.json
    slth bench construct-scale --target hf-gpt2-small --workdir WD --generate 8 --out bench-hf.json
    slth bench construct-scale --target hf-gpt2-small --ticket hf-gpt2.slth --generate 16 --out bench-hf-gen.json

Random-init weights: every conv is PyTorch's default (Kaiming-uniform, a=sqrt(5)) with the BatchNorm
statistics at their defaults, folded; the construction cost depends on the shapes and n, not on training.
gpt2-small: GPT-2's initialisation (:func:`slth.models.zoo.gpt2_small`). Its random network (~3e9
weights) is never materialised: the ticket's masks are held as bits and the ticket is saved and digested.
hf-gpt2-small: transformers' own ``GPT2LMHeadModel(GPT2Config())`` (124M parameters, its random init; biases,
LayerNorm affines and the tied head included), built by module replacement. ``--generate N`` then rebuilds the
ticket into a fresh ``GPT2LMHeadModel`` and runs its own greedy ``generate()`` for N tokens from an 8-token prompt,
timed and measured apart from the construction; ``--storage kept`` (the default) holds only the kept weights of each
pair (``to_module(storage="kept")``), ``--storage dense`` materialises the random network (float32).
``--ticket PATH`` loads a saved ticket of that target instead of constructing one (with ``--generate``: the target's
own greedy tokens are computed first and the target dropped, then the ticket is loaded, rebuilt and run, peak RSS
read after each step). ``--check-pairs`` then compares every kept pair but the token embedding's (2.3 GB dense) with its
dense pair, materialised one at a time from the same ticket, on the pair's own input in the prompt's forward.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

from slth._io import atomic_write_json
from slth.provenance import machine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="slth bench construct-scale", description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="resnet18", choices=["resnet18", "gpt2-small", "hf-gpt2-small"])
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--n", type=int, default=None, help="values per weight (default: chosen per layer from eps)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--backend", default="local", choices=["local", "ray"])
    ap.add_argument("--address", default=None)
    ap.add_argument("--width", type=float, default=1.0, help="width multiplier (1.0 = ResNet-18 / GPT-2 small)")
    ap.add_argument("--image", type=int, default=224, help="resnet18: image side")
    ap.add_argument("--context", type=int, default=1024, help="gpt2-small: context length")
    ap.add_argument("--workdir", default=None, help="checkpoint directory (default: in memory)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hf-layers", type=int, default=12, help="hf-gpt2-small: layers (12 = GPT-2 small)")
    ap.add_argument("--hf-embd", type=int, default=768, help="hf-gpt2-small: width (768 = GPT-2 small)")
    ap.add_argument("--generate", type=int, default=0, help="hf-gpt2-small: greedy tokens from the rebuilt ticket")
    ap.add_argument("--storage", default="kept", choices=["kept", "dense"],
                    help="--generate: how the ticket is rebuilt (to_module(storage=...))")
    ap.add_argument("--ticket", default=None, help="hf-gpt2-small: load this saved ticket instead of constructing")
    ap.add_argument("--check-pairs", action="store_true",
                    help="--storage kept: after generate(), compare every pair but the token embedding's on the "
                         "prompt with its dense pair, materialised one at a time")
    ap.add_argument("--save", default=None, help="also save the ticket here")
    ap.add_argument("--out", default=None, help="JSON record to write")
    args = ap.parse_args(argv)
    # options that would be ignored, or fail only after the target is built: refused before any work
    if (args.generate or args.ticket) and args.target != "hf-gpt2-small":
        ap.error(f"--generate and --ticket are for --target hf-gpt2-small, not {args.target}")
    if args.generate < 0:
        ap.error(f"--generate must be >= 0, got {args.generate}")
    if args.ticket and not os.path.isfile(args.ticket):
        ap.error(f"no such --ticket file: {args.ticket}")
    if args.check_pairs and not (args.ticket and args.generate and args.storage == "kept"):
        ap.error("--check-pairs compares a loaded ticket's kept pairs with dense ones: it needs --ticket, "
                 "--generate N and --storage kept")

    import numba
    import torch

    from slth.construction import construct
    from slth.models.zoo import build_target

    torch.manual_seed(args.seed)
    if args.target == "resnet18":
        target = build_target("resnet18", (3, args.image, args.image), 1000, width=args.width).eval()
        described = f"ResNet-18 (ImageNet layout, width {args.width}, {args.image}px), random init"
    elif args.target == "gpt2-small":
        target = build_target("gpt2-small", (args.context,), 50257, width=args.width).eval()
        described = (f"GPT-2-small shape (12 layers, width {args.width} x d 768, 12 heads, vocabulary 50,257, context "
                     f"{args.context}, tied head, no biases), GPT-2 init")
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        hf_config = GPT2Config(n_positions=args.context, n_layer=args.hf_layers, n_embd=args.hf_embd,
                               n_head=max(1, args.hf_embd // 64))  # GPT-2's head size 64
        target = GPT2LMHeadModel(hf_config).eval()
        described = (f"transformers GPT2LMHeadModel ({args.hf_layers} layers, d {args.hf_embd}, "
                     f"{hf_config.n_head} heads, vocabulary {hf_config.vocab_size}, context {args.context}, tied "
                     "head), transformers' random init, module replacement")
    target_params = sum(p.numel() for p in target.parameters())
    if args.ticket:
        held = [target]  # the target is dropped once its tokens are computed (not counted in the ticket's peak)
        del target
        record = {"command": "python " + " ".join(sys.argv), "target": described,
                  "target_module_params": target_params, "machine": machine(),
                  **_load_and_generate(args.ticket, held, args.generate, args.seed, args.storage, args.check_pairs)}
        print(json.dumps(record, indent=2))
        if args.out:
            atomic_write_json(args.out, record)
        return 0
    load_start = os.getloadavg()
    start = time.perf_counter()
    ticket = construct(target, args.eps, seed=args.seed, n=args.n, workers=args.workers, backend=args.backend,
                       address=args.address, workdir=args.workdir, progress=sys.stderr.isatty())
    wall = time.perf_counter() - start
    load_end = os.getloadavg()
    save_bytes = save_seconds = None
    if args.save:
        t0 = time.perf_counter()
        save_bytes = ticket.save(args.save).stat().st_size
        save_seconds = round(time.perf_counter() - t0, 1)
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = ticket.stats
    record = {
        "command": "python " + " ".join(sys.argv),
        "target": described, "target_module_params": target_params,
        "target_params": s["target_params"],
        "eps": args.eps, "n_per_layer": s["n_per_layer"], "backend": args.backend, "workers": args.workers,
        "chunks": ticket.run["chunks"],
        "wall_seconds": round(wall, 1),
        "cpu_seconds_driver": round(own.ru_utime + own.ru_stime, 1),
        "cpu_seconds_children": round(children.ru_utime + children.ru_stime, 1),
        "peak_rss_driver_gb": round(own.ru_maxrss / 2**20, 3),
        "peak_rss_largest_child_gb": round(children.ru_maxrss / 2**20, 3),
        "random_params": s["random_params"], "kept_params": s["kept_params"],
        "max_weight_error": s["max_weight_error"], "failures": s["failures"], "redraws": s["redraws"],
        "ticket_digest": ticket.digest(), "ticket_file_bytes": save_bytes,
        "save_seconds": save_seconds, "work_seconds": round(s["seconds"], 1),
        "compile_seconds": round(s.get("compile_seconds", 0.0), 1),
        "loadavg_1min_start_end": [round(load_start[0], 2), round(load_end[0], 2)],
        "numba_threads": numba.get_num_threads(),
        "machine": machine(),
    }
    if args.generate:
        record.update(_generate(ticket, target, args.generate, args.seed, args.storage))
    print(json.dumps(record, indent=2))
    if args.out:
        atomic_write_json(args.out, record)
    return 0


def _peak_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def _target_tokens(target, tokens: int, seed: int):
    """The 8-token prompt (from ``seed``), the generate() settings and the target's own greedy continuation."""
    import torch

    prompt = torch.randint(0, target.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(seed))
    settings = dict(max_new_tokens=tokens, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        expected = target.generate(prompt, **settings)
    return prompt, settings, expected


def _run_ticket(ticket, cls, config, prompt, settings, expected, storage: str, check_pairs: bool = False) -> dict:
    """Rebuild the ticket into a fresh ``cls(config)`` and run its greedy ``generate()``: seconds, peak RSS after
    each step, and how many tokens match the target's continuation ``expected``."""
    import torch

    t0 = time.perf_counter()
    model = ticket.to_module(model=cls(config), storage=storage).eval()
    build_seconds = time.perf_counter() - t0
    rss_rebuilt = _peak_gb()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(prompt, **settings)
    generate_seconds = time.perf_counter() - t0
    tokens = settings["max_new_tokens"]
    first = prompt.shape[1]
    record = {"storage": storage, "generate_tokens": tokens, "prompt_tokens": first,
              "rebuild_seconds": round(build_seconds, 1), "generate_seconds": round(generate_seconds, 1),
              "seconds_per_token": round(generate_seconds / tokens, 2),
              "generate_matches_target": int((out[0, first:] == expected[0, first:]).sum()),
              "tokens_ticket": out[0, first:].tolist(), "tokens_target": expected[0, first:].tolist(),
              "peak_rss_after_rebuild_gb": rss_rebuilt, "peak_rss_after_generate_gb": _peak_gb()}
    if check_pairs:
        record.update(_check_pairs(ticket, model, prompt))
    return record


def _check_pairs(ticket, model, prompt, skip: tuple = ("transformer.wte",)) -> dict:
    """Every kept pair of ``model`` (but those in ``skip``) against its dense pair, built one at a time from the same
    ticket (``Ticket._layer_blocks``, as ``to_module`` draws them), on the input the pair received in ``model``'s
    forward of ``prompt``: the largest |dense - kept| relative to max |dense| (float32 summation order)."""
    import torch

    from slth.construction.modules import EmbeddingLeaf, LeafPair
    from slth.construction.ticket import FILL_BLOCK_VALUES, _mask_rows

    seen: dict = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, (args[0], out)))
             for name, m in model.named_modules() if isinstance(m, (LeafPair, EmbeddingLeaf)) and name not in skip]
    with torch.no_grad():
        model(prompt)
    for h in hooks:
        h.remove()
    layouts, index = ticket.layouts, {p: i for i, p in enumerate(ticket._prefixes())}
    t0, worst, checked, current = time.perf_counter(), 0.0, 0, None

    def compare(prefix, dense):
        nonlocal worst, checked
        x, y = seen.pop(prefix)
        with torch.no_grad():
            d = dense(x)
        worst, checked = max(worst, float((d - y).abs().max() / d.abs().max())), checked + 1

    for name, start, arr in ticket._layer_blocks(FILL_BLOCK_VALUES):
        prefix, layer, what = name.rsplit(".", 2)
        if prefix not in seen and (current is None or current[0] != prefix):
            continue
        if current is None or current[0] != prefix:
            if current is not None:
                compare(*current)
            kept = model.get_submodule(prefix)
            cls = EmbeddingLeaf if isinstance(kept, EmbeddingLeaf) else LeafPair
            current = (prefix, cls(layouts[index[prefix]], float(kept.factor)))
        # every layer masked, as to_module masks it (not only b)
        value = torch.from_numpy(arr) * torch.from_numpy(_mask_rows(ticket.packed[name], start, start + len(arr)))
        with torch.no_grad():
            current[1].get_parameter(f"{layer}.{what}")[start : start + len(arr)].copy_(value)
    if current is not None:
        compare(*current)
    return {"pairs_checked_against_dense": checked, "pairs_max_relative_diff": worst,
            "check_pairs_seconds": round(time.perf_counter() - t0, 1)}


def _generate(ticket, target, tokens: int, seed: int, storage: str = "kept") -> dict:
    """Rebuild the ticket into a fresh instance of the target's class and run its own greedy ``generate()``."""
    prompt, settings, expected = _target_tokens(target, tokens, seed)
    return _run_ticket(ticket, type(target), target.config, prompt, settings, expected, storage)


def _load_and_generate(path: str, held: list, tokens: int, seed: int, storage: str, check_pairs: bool = False) -> dict:
    """A saved ticket of the target (``held``: a list holding it, emptied here): the target's greedy tokens first
    (then the target is dropped), then load the ticket, rebuild it and generate; peak RSS after each step."""
    from slth.construction import Ticket

    target = held.pop()
    cls, config = type(target), target.config
    out: dict = {"ticket_path": path}
    if tokens:
        prompt, settings, expected = _target_tokens(target, tokens, seed)
    del target
    out["peak_rss_before_load_gb"] = _peak_gb()
    t0 = time.perf_counter()
    ticket = Ticket.load(path)
    out.update(load_seconds=round(time.perf_counter() - t0, 1), peak_rss_after_load_gb=_peak_gb(),
               ticket_digest=ticket.digest(), random_params=ticket.stats["random_params"],
               kept_params=ticket.stats["kept_params"], eps=ticket.config["eps"],
               loadavg_1min_start=round(os.getloadavg()[0], 2))
    if tokens:
        out.update(_run_ticket(ticket, cls, config, prompt, settings, expected, storage, check_pairs))
        out["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    return out
