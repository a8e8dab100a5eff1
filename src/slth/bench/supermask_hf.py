"""Edge-popup supermasks on tiny Hugging Face GPT-2 and Llama, trained on characters of the Python standard
library's sources (``pystdlib-chars``, nothing downloaded): test perplexity before and after (CPU).

    slth bench supermask-hf [--seconds 120] [--threads 1]

Each model (2 layers, width 64, 4 heads; Llama with 2 key-value heads) gets ``apply_supermask`` at density 0.5
(seed 0) and trains for ``--seconds`` of wall time: SGD, lr 0.1, momentum 0.9, the method's weight decay,
batches of 32 windows of 64 characters. Perplexity is measured in eval mode (the final masks) on the first
256 test windows, before and after; the ticket is rebuilt into a fresh instance and compared bit for bit, and
the rebuilt model generates 40 characters greedily after ``def ``. Prints one JSON line. Needs transformers
(the dev extra).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from slth import supermask as sm
from slth.data.text import decode, encode, load_pystdlib_chars

CTX = 64


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="slth bench supermask-hf")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_pystdlib_chars(context=CTX, max_bytes=400_000)
    vocab = data.num_classes
    xt, yt = data.x_test[:256], data.y_test[:256]
    counts = torch.bincount(data.y_train.flatten(), minlength=vocab).double() + 1  # add-one unigram reference
    unigram = math.exp(float(-(counts / counts.sum()).log()[yt.flatten()].mean()))

    def gpt2():
        return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=vocab, n_positions=CTX,
                                          bos_token_id=0, eos_token_id=0, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))

    def llama():
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=CTX, bos_token_id=0, eos_token_id=0,
                                            pad_token_id=0))

    @torch.no_grad()
    def perplexity(model):
        model.eval()
        return math.exp(float(F.cross_entropy(model(xt).logits.flatten(0, 1), yt.flatten())))

    results = {"data": {k: data.info[k] for k in ("python_version", "files", "train_chars", "test_chars")},
               "test_tokens": yt.numel(), "unigram_ppl": round(unigram, 2), "threads": args.threads}
    for name, make in (("gpt2", gpt2), ("llama", llama)):
        model = sm.apply_supermask(make(), sm.SupermaskConfig("edge-popup", 0.5), seed=0)
        report = sm.supermask_report(model)
        before = perplexity(model)
        scores = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(scores, lr=0.1, momentum=0.9, weight_decay=sm.METHODS["edge-popup"].weight_decay)
        gen = torch.Generator().manual_seed(1)
        start, step = time.perf_counter(), 0
        model.train()
        while time.perf_counter() - start < args.seconds:
            idx = torch.randint(0, len(data.x_train), (32,), generator=gen)
            loss = F.cross_entropy(model(data.x_train[idx]).logits.flatten(0, 1), data.y_train[idx].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            sm.after_step(model, step)
        seconds = time.perf_counter() - start
        after = perplexity(model)
        rebuilt = sm.from_ticket(sm.to_ticket(model), model=make())
        with torch.no_grad():
            same = torch.equal(model(xt).logits, rebuilt(xt).logits)
            prompt = torch.from_numpy(encode("def ").astype("int64"))[None]
            text = decode(rebuilt.generate(prompt, max_new_tokens=40, do_sample=False)[0])
        results[name] = {"masked_tensors": len(report.masked), "tied": [list(t) for t in report.tied],
                         "weights": sum(math.prod(m.shape) for m in report.masked),
                         "kept": sum(m.kept for m in report.masked), "steps": step, "seconds": round(seconds, 1),
                         "ppl_before": round(before, 2), "ppl_after": round(after, 2),
                         "ticket_bit_identical": same, "greedy": text}
    print(json.dumps(results))
