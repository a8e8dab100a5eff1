"""Compatibility table of docs/construction.md: model class x construct (eps 1e-2 / 1e-3) x supermask.

Each model is built small in code (nothing downloaded), trained briefly here so that its outputs are not near-ties,
then
* **construct**: ``slth.construct(model, eps, seed=0)`` (``construction="auto"``: the construction graph when
  torch.fx traces the model, module replacement otherwise), saved, loaded and rebuilt (``to_module``; module
  replacement rebuilds into a fresh instance of the class); measured on held-out inputs: top-1 agreement with the
  target (LMs: next token, and perplexity of ticket vs target), random params / target params, kept params / target
  params, construction seconds (``ticket.stats["seconds"]``);
* **supermask**: a fresh instance of the class gets ``apply_supermask`` (edge-popup, density 0.5, seed 0), trains a
  few SGD steps on the same task (loss at the first and last step), is written with ``to_ticket`` and rebuilt with
  ``from_ticket(path, model=fresh instance)``; *round trip* says whether the rebuilt model's eval outputs equal the
  supermasked model's bit for bit.

Rows: transformers' ``GPT2LMHeadModel``, ``LlamaForCausalLM`` (grouped-query attention) and
``BertForSequenceClassification`` (the configs of ``slth.experiments.hf_models``, tiny), a ViT written with
torchvision's ``VisionTransformer`` patterns and one with timm's (the same patterns as tests/test_construct_trace.py,
here 1 input channel, 10 classes; torchvision and timm cannot be installed beside this torch), and
``slth.models.zoo.ResNet18`` (torchvision's ResNet-18 layout) at width 1/8. Vision models run on scikit-learn's
8x8 digits, BERT on digits as tokens, the LMs on ``pystdlib-chars``.

    PYTHONPATH=src python benchmarks/compat_table.py [--threads 1] [--json benchmarks/compat_table.json]

writes the rows (JSON) and the markdown table between the two marker comments of docs/construction.md, each
atomically. ``format_table(rows)`` is the one formatter (tests/test_compat_table.py checks the docs against it).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "construction.md"
ROWS = ROOT / "benchmarks" / "compat_table.json"
START = "<!-- compat-table:start (written by benchmarks/compat_table.py; do not edit by hand) -->"
END = "<!-- compat-table:end -->"
EPS = (1e-2, 1e-3)
SUPERMASK_STEPS = 20


# --------------------------------------------------------------------------- formatting (no torch needed)
def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def format_table(rows: list[dict]) -> str:
    """The markdown table of ``rows`` (one dict per model, as :func:`measure_model` returns)."""
    head = ["model", "pattern", "construct path", "eps", "target: test acc. % (LMs: next token; perplexity)",
            "top-1 agreement %", "ticket vs target perplexity",
            "random / target", "kept / target", "construct s", "supermask: loss first -> last step",
            "supermask round trip", "supermask s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        sm = r["supermask"]
        for i, t in enumerate(r["construct"]):
            if "error" in t:
                cells = ["-", f"failed: {t['error']}", "-", "-", "-", "-"]
            else:
                ppl = "-" if t.get("perplexity_ratio") is None else f"{100 * (t['perplexity_ratio'] - 1):+.3f} %"
                own = _pct(t.get("target_accuracy")) + ("" if t.get("target_perplexity") is None else
                                                        f" (ppl {t['target_perplexity']:.2f})")
                cells = [own, _pct(t["top1_agreement"]), ppl, f"{t['random_ratio']:.1f}x", f"{t['kept_ratio']:.2f}x",
                         f"{t['seconds']:.1f}" + ("" if t["eps_met"] else " (eps not met)")]
            if i == 0:
                smc = ([f"failed: {sm['error']}", "-", "-"] if "error" in sm else
                       [f"{sm['loss_first']:.3f} -> {sm['loss_last']:.3f} ({sm['steps']} steps)",
                        "bit-identical" if sm["round_trip_identical"] else "**differs**", f"{sm['seconds']:.1f}"])
            else:
                smc = ["", "", ""]
            name = [r["model"], r["pattern"]] if i == 0 else ["", ""]
            lines.append("| " + " | ".join([*name, t.get("path", "-"), f"{t['eps']:g}", *cells, *smc]) + " |")
    return "\n".join(lines)


def format_block(rows: list[dict], meta: dict) -> str:
    """What goes between the markers: the table and one line saying where and how it was measured."""
    return (f"{format_table(rows)}\n\n*Measured by `benchmarks/compat_table.py` on {meta['machine']}, {meta['date']}, "
            f"torch {meta['torch']}, transformers {meta['transformers']}; models trained {meta['training']}; "
            f"agreement on {meta['eval']}.*")


def splice(text: str, block: str) -> str:
    """``text`` with everything between the markers replaced by ``block``; both markers must be there, once."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{DOC.name} needs exactly one {START!r} followed by one {END!r}")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}\n{END}{tail}"


def block_in(text: str) -> str:
    """The text between the markers (without the newlines next to them)."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise ValueError("markers missing")
    return text.split(START)[1].split(END)[0].strip("\n")


# --------------------------------------------------------------------------- models
def vision_models():
    """Small models with torchvision's / timm's ViT patterns and ResNet-18 (zoo), for 1x8x8 digits, 10 classes."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from slth.models.zoo import ResNet18

    D, HEADS, P, IMG = 32, 4, 4, 8

    class MLPBlock(nn.Sequential):  # torchvision.ops.MLP
        def __init__(self):
            super().__init__(nn.Linear(D, 2 * D), nn.GELU(), nn.Dropout(0.0), nn.Linear(2 * D, D), nn.Dropout(0.0))

    class EncoderBlock(nn.Module):  # torchvision.models.vision_transformer.EncoderBlock
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(D, eps=1e-6)
            self.self_attention = nn.MultiheadAttention(D, HEADS, dropout=0.0, batch_first=True)
            self.ln_2 = nn.LayerNorm(D, eps=1e-6)
            self.mlp = MLPBlock()

        def forward(self, input):
            torch._assert(input.dim() == 3, f"Expected (batch_size, seq_length, hidden_dim) got {input.shape}")
            x = self.ln_1(input)
            x, _ = self.self_attention(x, x, x, need_weights=False)
            x = x + input
            return x + self.mlp(self.ln_2(x))

    class TorchvisionViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.image_size, self.patch_size, self.hidden_dim = IMG, P, D
            self.conv_proj = nn.Conv2d(1, D, kernel_size=P, stride=P)
            self.class_token = nn.Parameter(torch.zeros(1, 1, D))
            self.pos_embedding = nn.Parameter(torch.empty(1, (IMG // P) ** 2 + 1, D).normal_(std=0.02))
            self.layers = nn.Sequential(EncoderBlock(), EncoderBlock())
            self.ln = nn.LayerNorm(D, eps=1e-6)
            self.heads = nn.Sequential(nn.Linear(D, 10))

        def forward(self, x):
            n, c, h, w = x.shape
            p = self.patch_size
            torch._assert(h == self.image_size, f"Wrong image height! Expected {self.image_size} but got {h}!")
            n_h, n_w = h // p, w // p
            x = self.conv_proj(x).reshape(n, self.hidden_dim, n_h * n_w).permute(0, 2, 1)
            x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
            x = self.ln(self.layers(x + self.pos_embedding))
            return self.heads(x[:, 0])

    class TimmLayerNorm(nn.LayerNorm):  # timm.layers.LayerNorm
        def forward(self, x):
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    class TimmAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_heads, self.head_dim = HEADS, D // HEADS
            self.qkv = nn.Linear(D, 3 * D)
            self.proj = nn.Linear(D, D)

        def forward(self, x, attn_mask=None):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=0.0)
            return self.proj(x.transpose(1, 2).reshape(B, N, C))

    class TimmBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = TimmLayerNorm(D, eps=1e-6), TimmLayerNorm(D, eps=1e-6)
            self.attn = TimmAttention()
            self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))

        def forward(self, x, attn_mask=None):
            x = x + self.attn(self.norm1(x), attn_mask=attn_mask)
            return x + self.mlp(self.norm2(x))

    class TimmViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(1, D, P, stride=P)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
            self.pos_embed = nn.Parameter(torch.empty(1, (IMG // P) ** 2 + 1, D).normal_(std=0.02))
            self.blocks = nn.ModuleList([TimmBlock(), TimmBlock()])
            self.norm = TimmLayerNorm(D, eps=1e-6)
            self.head = nn.Linear(D, 10)

        def forward(self, x, attn_mask=None):
            B, C, H, W = x.shape
            torch._assert(H == IMG, f"Input height ({H}) doesn't match model ({IMG}).")
            x = self.proj(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
            for blk in self.blocks:
                x = blk(x, attn_mask=attn_mask)
            return self.head(self.norm(x)[:, 0])

    return {
        "torchvision-style ViT": ("torch._assert, h // p reshape, class token cat, nn.MultiheadAttention, "
                                  "Sequential subclass", TorchvisionViT),
        "timm-style ViT": ("forward(x, attn_mask=None), F.layer_norm, qkv.unbind, F.scaled_dot_product_attention",
                           TimmViT),
        "ResNet-18 (zoo, width 1/8)": ("torchvision's ResNet-18 layout: BatchNorm, residual joins, max pooling",
                                       lambda: ResNet18((1, 8, 8), 10, width=0.125)),
    }


# --------------------------------------------------------------------------- measurement
def _sgd_steps(model, loss_of, steps: int):
    """Supermask training: SGD over the scores for ``steps`` steps; (first loss, last loss)."""
    import torch

    from slth import supermask as sm

    scores = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(scores, lr=0.1, momentum=0.9)
    model.train()
    losses = []
    for step in range(1, steps + 1):
        loss = loss_of(model, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sm.after_step(model, step)
        losses.append(float(loss.detach()))
    sm.after_epoch(model, 1, 1)
    model.eval()
    return losses[0], losses[-1]


def supermask_row(make, loss_of, x_eval, *, steps: int = SUPERMASK_STEPS) -> dict:
    import torch

    from slth import supermask as sm

    start = time.perf_counter()
    try:
        torch.manual_seed(0)
        model = sm.apply_supermask(make(), sm.SupermaskConfig("edge-popup", 0.5), seed=0)
        first, last = _sgd_steps(model, loss_of, steps)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "sm.slth"
            sm.to_ticket(model, path)
            rebuilt = sm.from_ticket(path, model=make()).eval()
        with torch.no_grad():
            a, b = model(x_eval), rebuilt(x_eval)
        a, b = getattr(a, "logits", a), getattr(b, "logits", b)
        return {"steps": steps, "loss_first": first, "loss_last": last,
                "round_trip_identical": bool(torch.equal(a, b)), "seconds": time.perf_counter() - start}
    except Exception as exc:  # a row says what failed; the table is the compatibility record
        return {"error": f"{type(exc).__name__}: {exc}"[:200], "seconds": time.perf_counter() - start}


def construct_rows(target, make, x, y=None, *, lm: bool = False) -> list[dict]:
    """One row per eps; ``y``: class labels, or next-token targets when ``lm`` (then perplexities too)."""
    import torch

    from slth.construction import Ticket, construct, measure
    from slth.experiments.hf_models import lm_scores

    rows = []
    for eps in EPS:
        try:
            ticket = construct(target, eps, seed=0)
            with tempfile.TemporaryDirectory() as tmp:
                loaded = Ticket.load(ticket.save(Path(tmp) / "t.slth"))
            module = (loaded.to_module(model=make()) if ticket.replaces_modules else loaded.to_module()).eval()
            m = measure(module, target, x, None if lm else y)
            s = ticket.stats
            row = {"eps": eps, "path": "module replacement" if ticket.replaces_modules else "graph",
                   "top1_agreement": m["top1_agreement"], "max_logit_diff": m["max_logit_diff"],
                   "random_ratio": s["random_params"] / s["target_params"],
                   "kept_ratio": s["kept_params"] / s["target_params"], "seconds": s["seconds"],
                   "eps_met": bool(s["eps_met"]), "perplexity_ratio": None,
                   "target_accuracy": m.get("target_accuracy"), "target_perplexity": None}
            if lm:
                with torch.no_grad():
                    ppl_t, acc_t = lm_scores(target, x, y)
                    row.update(perplexity_ratio=lm_scores(module, x, y)[0] / ppl_t, target_perplexity=ppl_t,
                               target_accuracy=acc_t)
        except Exception as exc:  # the table records what does not work, with its message
            row = {"eps": eps, "error": f"{type(exc).__name__}: {exc}"[:200]}
        rows.append(row)
        print(" ", row, flush=True)
    return rows


def _train(model, loss_of, steps: int, lr: float):
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        loss = loss_of(model, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return float(loss.detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lm-steps", type=int, default=600)
    ap.add_argument("--vision-steps", type=int, default=600)
    ap.add_argument("--json", type=Path, default=ROWS)
    ap.add_argument("--doc", type=Path, default=DOC)
    args = ap.parse_args()
    block_in(args.doc.read_text(encoding="utf-8"))  # the markers are there before any work

    import torch
    import torch.nn.functional as F
    import transformers

    from slth._io import atomic_write_text
    from slth.data import load_dataset
    from slth.data.text import load_pystdlib_chars
    from slth.experiments.hf_models import configs, digits_tokens, make
    from slth.provenance import machine

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows: list[dict] = []

    def pick(n, size):
        return torch.randint(0, n, (size,), generator=g)

    # causal LMs on characters, BERT on digits as tokens
    text = load_pystdlib_chars(context=32, max_bytes=400_000)
    xt, yt = text.x_test[:128], text.y_test[:128]
    tx_train, ty_train, tx_test, ty_test = digits_tokens()
    small = {"n_embd": 32, "hidden_size": 32, "intermediate_size": 64}
    for name, pattern in (("gpt2", "Conv1D layers, tied lm_head, learned positions"),
                          ("llama", "grouped-query attention (4 heads, 2 KV), RMSNorm, rotary, SiLU-gated MLP"),
                          ("bert", "token/position/type embeddings, pooler, classification head")):
        cls, cfg_cls, cfg = configs(text.num_classes, 32)[name]
        cfg = {k: small.get(k, v) for k, v in cfg.items()}
        print(cls, flush=True)

        def mk(cls=cls, cfg_cls=cfg_cls, cfg=cfg):
            return make(cls, cfg_cls, cfg)

        torch.manual_seed(0)
        target = mk()
        if name == "bert":
            def loss_of(m, step):
                i = pick(len(tx_train), 64)
                return F.cross_entropy(m(tx_train[i]).logits, ty_train[i])
            _train(target, loss_of, args.vision_steps, 2e-3)
            cons = construct_rows(target, mk, tx_test, ty_test)
        else:
            def loss_of(m, step):
                xb = text.x_train[pick(len(text.x_train), 16)]
                return m(xb, labels=xb).loss
            _train(target, loss_of, args.lm_steps, 3e-3)
            cons = construct_rows(target, mk, xt, yt, lm=True)
        rows.append({"model": f"transformers `{cls}`", "pattern": pattern, "construct": cons,
                     "supermask": supermask_row(mk, loss_of, tx_test[:32] if name == "bert" else xt[:16])})
        print(" ", rows[-1]["supermask"], flush=True)

    digits = load_dataset("digits", None)
    vx, vy, vxt, vyt = digits.x_train, digits.y_train.long(), digits.x_test, digits.y_test.long()
    for name, (pattern, mk) in vision_models().items():
        print(name, flush=True)

        def loss_of(m, step):
            i = pick(len(vx), 64)
            return F.cross_entropy(m(vx[i]), vy[i])

        torch.manual_seed(0)
        target = mk()
        _train(target, loss_of, args.vision_steps, 2e-3)
        rows.append({"model": name, "pattern": pattern, "construct": construct_rows(target, mk, vxt, vyt),
                     "supermask": supermask_row(mk, loss_of, vxt[:32])})
        print(" ", rows[-1]["supermask"], flush=True)

    meta = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "training": (f"briefly with AdamW (LMs {args.lm_steps} steps of 16 windows of 32 characters of "
                         f"`pystdlib-chars`; BERT and the vision models {args.vision_steps} steps of 64 digits), "
                         f"supermasks {SUPERMASK_STEPS} SGD steps from a fresh instance"),
            "eval": "128 test windows (LMs, every position), 360 test digits (the others)"}
    atomic_write_text(args.json, json.dumps({"meta": meta, "rows": rows}, indent=1, sort_keys=True) + "\n")
    doc = args.doc.read_text(encoding="utf-8")
    atomic_write_text(args.doc, splice(doc, format_block(rows, meta)))
    print(format_table(rows))
    print(f"wrote {args.json} and the table in {args.doc}")
    if any(math.isnan(t.get("top1_agreement", 0.0)) for r in rows for t in r["construct"]):
        raise SystemExit("a NaN agreement")


if __name__ == "__main__":
    main()
