"""Attention constructions compared: per-projection pairs (Pensia et al.; Malach et al.) vs the product construction.

For (a) one ``nn.MultiheadAttention`` (d_model 64, 4 heads, PyTorch's default init: xavier-uniform projections, zero
biases), read as the self-attention x -> mha(x, x, x)[0] on sequences of 8 tokens, and (b) the registry ViT
(``slth.models.build_model("vit", (1, 28, 28), 10, 1.0, patch=7)``, random init, 4 pre-norm layers of d 64 and
4 heads), constructs at each eps with ``attention="projection"`` and ``"product"`` (and ``method="malach"``
projection unless ``--no-malach``), and reports random and kept parameters (total and attention-only: the layers
of q, k, v, out_proj, resp. qk_scores / vo_mix), the largest measured |ticket - target| on 64 random inputs in
[0, 1] (both built with ``nonnegative_input=True``), the certified bound (MHA only: over the whole box [0, 1]^(8x64)
and at the 64 points) and the construction's seconds (numba compilation excluded, see ``stats``).

    slth bench attention-product --out attention_product.json
    slth bench attention-product --cases mha --eps 0.01
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from slth._io import atomic_write_json
from slth.construction import construct
from slth.construction.bound import certified_bound_nd
from slth.construction.target import parse_target
from slth.provenance import machine

SEQ = 8


class SelfAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


def targets(which):
    torch.manual_seed(0)
    out = {}
    if "mha" in which:
        out["mha"] = (SelfAttention(64, 4).eval(), (SEQ, 64))
    if "vit" in which:
        from slth.models import build_model

        out["vit"] = (build_model("vit", (1, 28, 28), 10, 1.0, patch=7).eval(), (1, 28, 28))
    return out


def attention_layers(ticket, net) -> list[bool]:
    """Per layer: does it hold an attention map (q, k, v, out_proj or a merged qk / vo map)?"""
    _, specs = parse_target(net, nonnegative_input=True, attention=ticket.config.get("attention", "projection"))
    return [spec.selector or "in_proj" in spec.path or "out_proj" in spec.path for spec in specs]


def measure(name, net, shape, eps, attention, method, x):
    t0 = time.perf_counter()
    ticket = construct(net, eps, seed=0, method=method, attention=attention, nonnegative_input=True)
    wall = time.perf_counter() - t0
    s = ticket.stats
    att = attention_layers(ticket, net)
    positions = ticket.graph.layer_positions()
    kept = [sum(int(m.sum()) for k, m in ticket.masks.items() if k.split(".")[0] == str(pos)) for pos in positions]
    module = ticket.to_module()
    with torch.no_grad():
        err = float((module(x) - net(x)).abs().max())
    rec = {
        "target": name, "eps": eps, "attention": attention, "method": method,
        "target_params": s["target_params"], "random_params": s["random_params"], "kept_params": s["kept_params"],
        "attention_random_params": sum(lay.random_params for lay, a in zip(ticket.layouts, att) if a),
        "attention_kept_params": sum(k for k, a in zip(kept, att) if a),
        "n_per_layer": s["n_per_layer"], "failures": s["failures"],
        "max_weight_error": s["max_weight_error"], "max_measured_error": err,
        "seconds": s["seconds"], "wall_seconds": wall,
    }
    if name == "mha":
        xb = x.double()
        rec["certified_bound_box"] = float(certified_bound_nd(ticket, net, torch.zeros(shape), torch.ones(shape)).max())
        rec["certified_bound_points"] = float(certified_bound_nd(ticket, net, xb, xb, batched=True).max())
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="slth bench attention-product", description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="mha,vit")
    ap.add_argument("--eps", default="0.01,0.001")
    ap.add_argument("--no-malach", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    records = []
    for name, (net, shape) in targets(args.cases.split(",")).items():
        x = torch.rand(64, *shape, generator=torch.Generator().manual_seed(1))
        for eps in (float(e) for e in args.eps.split(",")):
            runs = [("projection", "pensia"), ("product", "pensia")]
            if not args.no_malach:
                runs.append(("projection", "malach"))
            for attention, method in runs:
                rec = measure(name, net, shape, eps, attention, method, x)
                records.append(rec)
                print(json.dumps({k: v for k, v in rec.items() if k != "n_per_layer"}), flush=True)
    if args.out:
        atomic_write_json(args.out, {"machine": machine(), "records": records})
    return 0
