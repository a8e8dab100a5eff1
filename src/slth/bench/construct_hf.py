"""Module-replacement tickets of tiny Hugging Face causal LMs trained briefly on Python stdlib characters.

Trains GPT-2 and Llama (grouped-query attention, RMSNorm, rotary) of a few tens of thousands of weights for a
fixed wall-clock budget on ``pystdlib-chars`` (``slth.data.text``), constructs each at eps (module replacement:
torch.fx cannot trace them), rebuilds the ticket in a fresh instance and reports test perplexity of target and
ticket, next-token top-1 agreement, greedy ``generate()`` agreement on test prompts, width and kept parameters.

    slth bench construct-hf --seconds 90 --eps 1e-3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from slth.construction import Ticket, construct, measure
from slth.data.text import VOCAB, load_pystdlib_chars


def models(vocab: int, context: int):
    import transformers as T

    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return {
        "gpt2": (T.GPT2LMHeadModel, T.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=context,
                                                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)),
        "llama": (T.LlamaForCausalLM, T.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                   num_attention_heads=4, num_key_value_heads=2,
                                                   max_position_embeddings=context, **common)),
    }


def train(model, data, seconds: float, seed: int, batch: int = 16) -> dict:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    start, steps = time.perf_counter(), 0
    g = torch.Generator().manual_seed(seed)
    while time.perf_counter() - start < seconds:
        idx = torch.randint(0, len(data.x_train), (batch,), generator=g)
        loss = model(data.x_train[idx], labels=data.x_train[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    return {"steps": steps, "seconds": time.perf_counter() - start, "last_loss": float(loss.detach()), "batch": batch}


@torch.no_grad()
def perplexity(model, x, y, batch: int = 64) -> float:
    total, count = 0.0, 0
    for s in range(0, len(x), batch):
        logits = model(x[s : s + batch]).logits
        total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                         y[s : s + batch].reshape(-1), reduction="sum"))
        count += y[s : s + batch].numel()
    return math.exp(total / count)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="slth bench construct-hf")
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--test", type=int, default=256, help="test windows")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--models", default="gpt2,llama")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    data = load_pystdlib_chars(context=args.context, max_bytes=1_000_000)
    x, y = data.x_test[: args.test], data.y_test[: args.test]
    out = {"eps": args.eps, "data": data.info, "train_seconds": args.seconds, "models": {}}
    for name, (cls, config) in models(len(VOCAB), args.context).items():
        if name not in args.models.split(","):
            continue
        torch.manual_seed(0)
        target = cls(config)
        info = train(target, data, args.seconds, 0)
        target.eval()
        t0 = time.perf_counter()
        ticket = construct(target, eps=args.eps, seed=0)
        construct_seconds = time.perf_counter() - t0
        ticket.save(f"/tmp/bench_{name}.slth")
        pruned = Ticket.load(f"/tmp/bench_{name}.slth").to_module(model=cls(config))
        m = measure(pruned, target, x)
        prompts = x[: args.prompts, :16]
        with torch.no_grad():
            want = target.generate(prompts, max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
            got = pruned.generate(prompts, max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
        new_want, new_got = want[:, 16:], got[:, 16:]
        row = {
            "train": info, "target_params": ticket.stats["target_params"],
            "random_params": ticket.stats["random_params"], "kept_params": ticket.stats["kept_params"],
            "n_per_layer": ticket.stats["n_per_layer"], "max_weight_error": ticket.stats["max_weight_error"],
            "failures": ticket.stats["failures"], "construct_seconds": construct_seconds,
            "target_ppl": perplexity(target, x, y), "ticket_ppl": perplexity(pruned, x, y),
            "max_logit_diff": m["max_logit_diff"], "top1_agreement": m["top1_agreement"],
            "positions": m["examples"],
            "generate_identical_prompts": int((new_want == new_got).all(1).sum()), "prompts": len(prompts),
            "generate_token_agreement": float((new_want == new_got).float().mean()),
        }
        out["models"][name] = row
        print(name, json.dumps(row, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
