"""Downloaded model classes: constructed tickets of Hugging Face transformers' GPT-2, Llama and BERT as they are.

The classes people download (``GPT2LMHeadModel``, ``LlamaForCausalLM`` with grouped-query attention, RMSNorm and
rotary embeddings, ``BertForSequenceClassification``) are built here from small configs in code (nothing is
downloaded), trained briefly on local data, and constructed by ``slth.construct`` at each eps: torch.fx cannot
trace them, so the ticket is built by module replacement (``slth.construction.modules``). Every ticket is saved,
loaded and rebuilt into a *fresh* instance of the class (``Ticket.to_module(model=cls(config))``); that rebuilt
model is what is measured.

* **Causal LMs** on ``pystdlib-chars`` (characters of the Python standard library's sources, :mod:`slth.data.text`):
  trained ``lm_steps`` AdamW steps of ``lm_batch`` windows; measured on the test split: perplexity of ticket and
  target (exp mean cross-entropy per next character), next-character top-1 agreement, max |logit difference|,
  and greedy ``generate()``: ``prompts`` prompts (the first ``prompt_tokens`` characters of test windows evenly
  spaced over the split), ``new_tokens`` new tokens each; a prompt counts when the ticket's continuation is the
  target's token for token. Where they differ, the target's top-1 minus top-2 logit at the first differing
  token is recorded (a near-tie there means a flip within the ticket's measured logit error).
* **BERT** (``BertForSequenceClassification``) on scikit-learn's 8x8 digits as token sequences: a ``[CLS]``
  token then the 64 pixel values (0..16) as tokens, 10 classes; trained ``bert_epochs`` epochs; top-1 agreement
  and accuracies of ticket and target on the 360 test images.

Subsets: each ticket takes, per weight, the fewest random products within eps (``construct``'s default,
``sparse=True``: the errors spread up to eps); at each eps of ``closest_eps`` a second ticket of the same random
network takes the closest subset instead (``sparse=False``: the minimal-error SubsetSum, more products kept, errors
far below eps), both measured the same way.

Widths: random params / target params and kept params / target params from ``ticket.stats``; seconds: the
construction's work (``ticket.stats["seconds"]``, numba's compilation excluded).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .settings import check_at_least, check_names, flag, option

if TYPE_CHECKING:
    from .sections import Context, Record

MODELS = ("gpt2", "llama", "bert")
GOAL_EPS = 1e-3
GOAL_PERPLEXITY = 0.01  # ticket perplexity within 1 % of the target's
GOAL_AGREEMENT = 0.995  # next-token / class top-1 agreement
GOAL_GENERATE = 0.90  # share of prompts whose greedy continuation is identical
CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "bert": "BertForSequenceClassification"}
CLS_TOKEN = 17  # digits: pixel values 0..16 are tokens 0..16, then [CLS]


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = option(MODELS, "gpt2 (GPT2LMHeadModel), llama (LlamaForCausalLM), bert "
                                             "(BertForSequenceClassification)")
    eps: tuple[float, ...] = option((0.01, 0.001, 0.0001), "eps values of the tickets (the goals are read at 0.001)")
    closest_eps: tuple[float, ...] = option((0.001,), "eps values at which a second ticket takes each weight's "
                                                      "closest subset (construct(sparse=False)), not the fewest "
                                                      "products within eps")
    context: int = option(128, "pystdlib-chars window length the causal LMs train on")
    max_bytes: int = option(1_000_000, "pystdlib-chars corpus size")
    lm_steps: int = option(3000, "AdamW steps of each causal LM")
    lm_batch: int = option(16, "windows per step")
    lm_lr: float = option(3e-3, "peak learning rate of the causal LMs")
    bert_epochs: int = option(30, "BERT training epochs on digits as tokens")
    bert_batch: int = option(64, "BERT batch size")
    bert_lr: float = option(2e-3, "peak learning rate of BERT")
    prompts: int = option(50, "generate() prompts (test windows spread over the split)")
    prompt_tokens: int = option(32, "characters of each prompt")
    new_tokens: int = option(64, "greedy tokens generated per prompt")
    test_windows: int = option(0, "test windows for perplexity and agreement (0: the whole split)")
    seed: int = option(0, "seeds the models, their training and the constructions")
    tiny: bool = option(False, "tiny models (width 16, one layer; the quick preset's)")

    def __post_init__(self):
        check_names(self.models, "models", MODELS)
        if not self.eps or not all(0 < e < 1 for e in self.eps):
            raise ValueError(f"{flag('eps')} needs values in (0, 1), got {','.join(map(str, self.eps))}")
        if not all(0 < e < 1 for e in self.closest_eps):
            raise ValueError(f"{flag('closest_eps')} needs values in (0, 1), got "
                             f"{','.join(map(str, self.closest_eps))}")
        check_at_least(self, 1, "context", "max_bytes", "lm_steps", "lm_batch", "bert_epochs", "bert_batch",
                       "prompts", "prompt_tokens", "new_tokens")
        check_at_least(self, 0, "test_windows")
        if not (self.lm_lr > 0 and self.bert_lr > 0):
            raise ValueError(f"{flag('lm_lr')} and {flag('bert_lr')} must be > 0")
        if self.prompt_tokens + self.new_tokens > self.context:
            raise ValueError(f"{flag('prompt_tokens')} + {flag('new_tokens')} ({self.prompt_tokens} + "
                             f"{self.new_tokens}) exceed {flag('context')} {self.context} (the positions the models "
                             "are trained on)")


PRESETS = {"quick": dict(tiny=True, context=24, max_bytes=150_000, lm_steps=20, lm_batch=8, bert_epochs=2,
                         eps=(0.01, 0.001), prompts=4, prompt_tokens=8, new_tokens=8, test_windows=64)}


def execute(settings: Settings, *, out=None, log=print, quiet: bool = False) -> dict:
    """Every model's target and its tickets; the record's body (:func:`run`)."""
    s = settings
    return run(models=list(s.models), quick=s.tiny, context=s.context, max_bytes=s.max_bytes, lm_steps=s.lm_steps,
               lm_batch=s.lm_batch, lm_lr=s.lm_lr, bert_epochs=s.bert_epochs, bert_batch=s.bert_batch,
               bert_lr=s.bert_lr, eps_values=list(s.eps), closest_eps=list(s.closest_eps), prompts=s.prompts,
               prompt_tokens=s.prompt_tokens,
               new_tokens=s.new_tokens, test_windows=s.test_windows, seed=s.seed, log=log)


def configs(vocab: int, context: int, *, quick: bool = False) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """name -> (model class, config class, config keywords) of the small models (``quick``: tiny ones)."""
    d, layers, heads, kv, mlp = (16, 1, 2, 1, 32) if quick else (64, 2, 4, 2, 128)
    special = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return {
        "gpt2": ("GPT2LMHeadModel", "GPT2Config",
                 dict(vocab_size=vocab, n_layer=layers, n_embd=d, n_head=heads, n_positions=context,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **special)),
        "llama": ("LlamaForCausalLM", "LlamaConfig",
                  dict(vocab_size=vocab, hidden_size=d, intermediate_size=mlp, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=context,
                       **special)),
        "bert": ("BertForSequenceClassification", "BertConfig",
                 dict(vocab_size=CLS_TOKEN + 1, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=mlp, max_position_embeddings=65, num_labels=10, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, pad_token_id=0)),
    }


def make(model_class: str, config_class: str, config: dict[str, Any]):
    """A fresh instance of a transformers class from its config keywords (transformers is an optional extra)."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ImportError("the hf-models experiment needs transformers (pip install transformers)") from exc
    return getattr(transformers, model_class)(getattr(transformers, config_class)(**config))


def param_count(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# --------------------------------------------------------------------------- training
def _adamw_loop(model, batches: Callable[[int], Any], loss_of: Callable, steps: int, lr: float, seed: int):
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    start, losses = time.perf_counter(), []
    for step in range(steps):
        loss = loss_of(model, *batches(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tail = losses[-max(1, steps // 20):]
    return {"steps": steps, "lr": lr, "optimizer": "AdamW, one-cycle (10 % warm-up, cosine)",
            "seconds": time.perf_counter() - start, "final_loss": sum(tail) / len(tail)}


def train_lm(model, x_train, *, steps: int, batch: int, lr: float, seed: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)

    def batches(step):
        idx = torch.randint(0, len(x_train), (batch,), generator=g)
        return (x_train[idx],)

    info = _adamw_loop(model, batches, lambda m, xb: m(xb, labels=xb).loss, steps, lr, seed)
    return {**info, "batch": batch}


def train_classifier(model, x_train, y_train, *, epochs: int, batch: int, lr: float, seed: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    per_epoch = math.ceil(len(x_train) / batch)
    order: list = []

    def batches(step):
        if step % per_epoch == 0:
            order[:] = [torch.randperm(len(x_train), generator=g)]
        idx = order[0][(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
        return x_train[idx], y_train[idx]

    info = _adamw_loop(model, batches, lambda m, xb, yb: F.cross_entropy(m(xb).logits, yb), epochs * per_epoch,
                       lr, seed)
    return {**info, "epochs": epochs, "batch": batch}


# --------------------------------------------------------------------------- measurements
def lm_scores(model, x, y, *, batch: int = 128) -> tuple[float, float]:
    """(perplexity, next-token top-1 accuracy) of a causal LM on windows x with next-token targets y."""
    import torch
    import torch.nn.functional as F

    ce, right = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(x), batch):
            logits = model(x[s:s + batch]).logits.double()
            yb = y[s:s + batch]
            ce += float(F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="sum"))
            right += int((logits.argmax(-1) == yb).sum())
    return math.exp(ce / y.numel()), right / y.numel()


def generate_agreement(target, ticket, prompts, new_tokens: int) -> dict[str, Any]:
    """Greedy continuations of ticket and target; identical prompts, token agreement, and the target's top-1 minus
    top-2 logit at each first differing token."""
    import torch

    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
              attention_mask=torch.ones_like(prompts))
    with torch.no_grad():
        want = target.generate(prompts, **kw)[:, prompts.shape[1]:]
        got = ticket.generate(prompts, **kw)[:, prompts.shape[1]:]
    same = (want == got).all(1)
    margins = []
    for i in torch.nonzero(~same).flatten().tolist():
        first = int(torch.nonzero(want[i] != got[i])[0])
        context = torch.cat([prompts[i], want[i, :first]])[None]
        with torch.no_grad():
            top2 = target(context).logits[0, -1].double().topk(2).values
        margins.append({"prompt": i, "position": first, "target_margin": float(top2[0] - top2[1])})
    return {"prompts": int(len(prompts)), "new_tokens": new_tokens, "generate_identical": int(same.sum()),
            "generate_identical_share": float(same.float().mean()),
            "generate_token_agreement": float((want == got).float().mean()), "divergences": margins}


def target_logits(target, x, *, batch: int = 128):
    """The target's logits on windows x, (positions, vocab) float32: computed once per model, compared per ticket."""
    import torch

    with torch.no_grad():
        return torch.cat([target(x[s:s + batch]).logits.flatten(0, 1) for s in range(0, len(x), batch)])


def compare_lm(ft_all, ticket, x, y, *, batch: int = 128) -> dict[str, Any]:
    """One pass of the ticket over windows x against the target's logits ``ft_all`` (:func:`target_logits`):
    perplexities and next-token accuracies of both, top-1 agreement, max |logit difference|, and where they disagree
    and why (``margins``): the target's top-1 minus top-2 logit (its margin) at the positions whose top-1 tokens
    differ, the per-position max |logit difference| (median, 99th percentile) and the share of all positions whose
    margin is below twice that percentile (near-ties a ticket this close can flip: both logits move by at most it)."""
    import torch
    import torch.nn.functional as F

    ce_t = ce_k = 0.0
    margin, diff, agree, right_t, right_k = [], [], [], 0, 0
    with torch.no_grad():
        for s in range(0, len(x), batch):
            fk = ticket(x[s:s + batch]).logits.double().flatten(0, 1)
            ft = ft_all[s * x.shape[1]:s * x.shape[1] + len(fk)].double()
            yb = y[s:s + batch].flatten()
            ce_t += float(F.cross_entropy(ft, yb, reduction="sum"))
            ce_k += float(F.cross_entropy(fk, yb, reduction="sum"))
            pt, pk = ft.argmax(-1), fk.argmax(-1)
            right_t += int((pt == yb).sum())
            right_k += int((pk == yb).sum())
            top2 = ft.topk(2, dim=-1).values
            margin.append(top2[:, 0] - top2[:, 1])
            diff.append((ft - fk).abs().amax(-1))
            agree.append(pt == pk)
    margin, diff, agree = torch.cat(margin), torch.cat(diff), torch.cat(agree)
    n = int(y.numel())
    p99 = float(diff.quantile(0.99))
    flipped = margin[~agree]
    t_ppl, k_ppl = math.exp(ce_t / n), math.exp(ce_k / n)
    return {"target_perplexity": t_ppl, "ticket_perplexity": k_ppl, "perplexity_ratio": k_ppl / t_ppl,
            "target_accuracy": right_t / n, "ticket_accuracy": right_k / n,
            "top1_agreement": float(agree.double().mean()), "max_logit_diff": float(diff.max()), "positions": n,
            "margins": {"diff_median": float(diff.median()), "diff_p99": p99,
                        "near_tie_share": float((margin < 2 * p99).double().mean()),
                        "disagreements": int((~agree).sum()),
                        "disagreement_margin_median": float(flipped.median()) if len(flipped) else None,
                        "disagreement_margin_max": float(flipped.max()) if len(flipped) else None,
                        "margin_median": float(margin.median())}}


def _stats(ticket) -> dict[str, Any]:
    s = ticket.stats
    return {"target_params": s["target_params"], "random_params": s["random_params"],
            "kept_params": s["kept_params"], "random_ratio": s["random_params"] / s["target_params"],
            "kept_ratio": s["kept_params"] / s["target_params"],
            "seconds": s["seconds"], "n_per_layer": list(s["n_per_layer"]), "eps_met": bool(s["eps_met"]),
            "failures": int(s["failures"]), "max_weight_error": float(s["max_weight_error"]),
            "weight_error_median": float(s["weight_error_median"]), "weight_error_p99": float(s["weight_error_p99"])}


def construct_rebuilt(target, eps: float, fresh: Callable, *, seed: int, sparse: bool = True):
    """(rebuilt ticket module, stats row, wall seconds of construct): construct (module replacement; ``sparse``:
    fewest products within eps, else the closest subset), save, load, rebuild into ``fresh()``, a new instance of
    the class."""
    from ..construction import Ticket, construct

    start = time.perf_counter()
    ticket = construct(target, eps, seed=seed, construction="modules", sparse=sparse)
    wall = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = ticket.save(Path(tmp) / "ticket.slth")
        loaded = Ticket.load(path)
        if loaded.digest() != ticket.digest():
            raise RuntimeError("the saved ticket does not load to the same digest")
        module = loaded.to_module(model=fresh()).eval()
    return module, {**_stats(ticket), "construct_wall_seconds": wall, "subsets": "fewest" if sparse else "closest"}


def _runs(eps_values: Sequence[float], closest_eps: Sequence[float]) -> list[tuple[float, bool]]:
    """(eps, sparse) of each ticket: every eps with the fewest products, then each closest_eps with the closest."""
    return [(eps, True) for eps in eps_values] + [(eps, False) for eps in closest_eps]


def _label(t: dict) -> str:
    """A ticket's eps, and how its subsets were picked when not the default (old records: the default)."""
    return f"{t['eps']:g}" + (" closest" if t.get("subsets") == "closest" else "")


def run_lm(name: str, data, *, quick: bool, steps: int, batch: int, lr: float, eps_values: Sequence[float],
           closest_eps: Sequence[float], prompts: int, prompt_tokens: int, new_tokens: int, test_windows: int,
           seed: int, log: Callable = print) -> dict[str, Any]:
    import torch

    from .record import Stopwatch

    cls, cfg_cls, cfg = configs(data.num_classes, data.x_train.shape[1], quick=quick)[name]
    torch.manual_seed(seed)
    target = make(cls, cfg_cls, cfg)
    train = train_lm(target, data.x_train, steps=steps, batch=batch, lr=lr, seed=seed)
    x, y = data.x_test, data.y_test
    if test_windows:
        x, y = x[:test_windows], y[:test_windows]
    picks = torch.linspace(0, len(data.x_test) - 1, prompts).round().long()
    prompt_ids = data.x_test[picks, :prompt_tokens]
    ft_all = target_logits(target, x)
    t_ppl, t_acc = lm_scores(target, x, y)
    log(f"{name}: {param_count(target):,} params, {steps} steps in {train['seconds']:.0f} s, test perplexity "
        f"{t_ppl:.3f}, next-char accuracy {t_acc:.4f}")
    tickets = []
    for eps, sparse in _runs(eps_values, closest_eps):
        module, row = construct_rebuilt(target, eps, lambda: make(cls, cfg_cls, cfg), seed=seed, sparse=sparse)
        with Stopwatch() as sw:
            m = compare_lm(ft_all, module, x, y)
            gen = generate_agreement(target, module, prompt_ids, new_tokens)
        row.update(eps=eps, **m, **gen, measure_seconds=sw.wall)
        k_ppl = m["ticket_perplexity"]
        log(f"  eps {_label(row)}: perplexity {k_ppl:.4f} vs {t_ppl:.4f} ({100 * (k_ppl / t_ppl - 1):+.3f} %), "
            f"agreement {m['top1_agreement']:.4f}, generate {gen['generate_identical']}/{gen['prompts']} identical, "
            f"{row['random_ratio']:.1f}x random, {row['kept_ratio']:.2f}x kept, {row['seconds']:.1f} s "
            f"(measured in {sw.wall:.0f} s)")
        tickets.append(row)
        del module
    return {"name": name, "class": cls, "config": cfg, "params": param_count(target), "train": train,
            "target_perplexity": t_ppl, "target_accuracy": t_acc, "test_windows": int(len(x)),
            "prompt_tokens": prompt_tokens, "tickets": tickets}


def digits_tokens():
    """scikit-learn's digits (slth's ``digits`` split) as token sequences: [CLS] then 64 pixel values 0..16."""
    import torch

    from ..data import load_dataset

    ds = load_dataset("digits", None)

    def tokens(x):
        pixels = (x.reshape(len(x), -1) * 16).round().long().clamp(0, 16)
        return torch.cat([torch.full((len(x), 1), CLS_TOKEN, dtype=torch.long), pixels], 1)

    return tokens(ds.x_train), ds.y_train.long(), tokens(ds.x_test), ds.y_test.long()


def run_bert(*, quick: bool, epochs: int, batch: int, lr: float, eps_values: Sequence[float],
             closest_eps: Sequence[float], seed: int, log: Callable = print) -> dict[str, Any]:
    import torch

    from ..construction import measure

    x_train, y_train, x_test, y_test = digits_tokens()
    cls, cfg_cls, cfg = configs(0, 0, quick=quick)["bert"]
    torch.manual_seed(seed)
    target = make(cls, cfg_cls, cfg)
    train = train_classifier(target, x_train, y_train, epochs=epochs, batch=batch, lr=lr, seed=seed)
    with torch.no_grad():
        t_acc = float((target(x_test).logits.argmax(-1) == y_test).float().mean())
    log(f"bert: {param_count(target):,} params, {epochs} epochs in {train['seconds']:.0f} s, test accuracy {t_acc:.4f}")
    tickets = []
    for eps, sparse in _runs(eps_values, closest_eps):
        module, row = construct_rebuilt(target, eps, lambda: make(cls, cfg_cls, cfg), seed=seed, sparse=sparse)
        m = measure(module, target, x_test, y_test)
        row.update(eps=eps, top1_agreement=m["top1_agreement"], max_logit_diff=m["max_logit_diff"],
                   target_accuracy=m["target_accuracy"], ticket_accuracy=m["ticket_accuracy"], examples=m["examples"])
        log(f"  eps {_label(row)}: agreement {m['top1_agreement']:.4f}, accuracy {m['ticket_accuracy']:.4f} vs "
            f"{m['target_accuracy']:.4f}, {row['random_ratio']:.1f}x random, {row['kept_ratio']:.2f}x kept, "
            f"{row['seconds']:.1f} s")
        tickets.append(row)
        del module
    return {"name": "bert", "class": cls, "config": cfg, "params": param_count(target), "train": train,
            "target_accuracy": t_acc, "test_examples": int(len(y_test)), "tickets": tickets}


def run(*, models: Sequence[str], quick: bool, context: int, max_bytes: int, lm_steps: int, lm_batch: int,
        lm_lr: float, bert_epochs: int, bert_batch: int, bert_lr: float, eps_values: Sequence[float], prompts: int,
        prompt_tokens: int, new_tokens: int, test_windows: int, seed: int, closest_eps: Sequence[float] = (),
        log: Callable = print) -> dict[str, Any]:
    """The record body (without the header): one entry per model, its target and its tickets."""
    from .._jit import warm_up
    from ..subsetsum import compile_kernels

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; valid: {', '.join(MODELS)}")
    if prompt_tokens + new_tokens > context:
        raise ValueError(f"prompt_tokens + new_tokens ({prompt_tokens} + {new_tokens}) exceed the context {context} "
                         "the models are trained on")
    compile_seconds = warm_up(compile_kernels)
    out: dict[str, Any] = {"numba_compile_seconds": compile_seconds, "models": []}
    if any(m in ("gpt2", "llama") for m in models):
        from ..data.text import load_pystdlib_chars

        data = load_pystdlib_chars(context=context, max_bytes=max_bytes)
        import torch

        counts = torch.bincount(data.y_train.flatten(), minlength=data.num_classes).double() + 1  # add-one
        unigram = math.exp(float(-(counts / counts.sum()).log()[data.y_test.flatten()].mean()))
        out["text_data"] = {**data.info, "train_windows": int(len(data.x_train)),
                            "test_windows": int(len(data.x_test)), "unigram_perplexity": unigram}
        for name in ("gpt2", "llama"):
            if name in models:
                out["models"].append(run_lm(name, data, quick=quick, steps=lm_steps, batch=lm_batch, lr=lm_lr,
                                            eps_values=eps_values, closest_eps=closest_eps, prompts=prompts,
                                            prompt_tokens=prompt_tokens,
                                            new_tokens=new_tokens, test_windows=test_windows, seed=seed, log=log))
    if "bert" in models:
        out["models"].append(run_bert(quick=quick, epochs=bert_epochs, batch=bert_batch, lr=bert_lr,
                                      eps_values=eps_values, closest_eps=closest_eps, seed=seed, log=log))
    return out


# --------------------------------------------------------------------------- report section
def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def goal_lines(models: list[dict]) -> list[str]:
    """One line per goal at eps 1e-3 (ours, not a paper's) and ticket there (fewest products, closest subsets), with
    the measured number and whether it is met."""
    lines = []
    for m in models:
        rows = [t for t in m["tickets"] if t["eps"] == GOAL_EPS]
        if not rows:
            lines.append(f"* {m['class']}: no ticket at eps {GOAL_EPS:g} in this record: not measured.")
        for row in rows:
            lines += _goal_lines(m, row)
    return lines


def _goal_lines(m: dict, row: dict) -> list[str]:
    from .sections import pct

    lines = []
    label = f"{m['class']}" + (" (closest subsets)" if row.get("subsets") == "closest" else "")
    if "perplexity_ratio" in row:
        d = row["perplexity_ratio"] - 1
        lines.append(f"* {label}, eps {GOAL_EPS:g}: ticket perplexity {row['ticket_perplexity']:.4f} vs target "
                     f"{row['target_perplexity']:.4f} ({100 * d:+.3f} %), goal within "
                     f"{100 * GOAL_PERPLEXITY:g} %: {_met(abs(d) <= GOAL_PERPLEXITY)}.")
        lines.append(f"* {label}, eps {GOAL_EPS:g}: next-token top-1 agreement {pct(row['top1_agreement'])} % "
                     f"({row['positions']:,} positions), goal >= {pct(GOAL_AGREEMENT, 1)} %: "
                     f"{_met(row['top1_agreement'] >= GOAL_AGREEMENT)}.")
        lines.append(f"* {label}, eps {GOAL_EPS:g}: greedy `generate()` of {row['new_tokens']} tokens identical "
                     f"to the target's on {row['generate_identical']} / {row['prompts']} prompts "
                     f"({pct(row['generate_identical_share'], 0)} %), goal >= {pct(GOAL_GENERATE, 0)} %: "
                     f"{_met(row['generate_identical_share'] >= GOAL_GENERATE)}.")
    else:
        lines.append(f"* {label}, eps {GOAL_EPS:g}: top-1 agreement {pct(row['top1_agreement'])} % "
                     f"({row['examples']} test images), goal >= {pct(GOAL_AGREEMENT, 1)} %: "
                     f"{_met(row['top1_agreement'] >= GOAL_AGREEMENT)}.")
    return lines


def beyond_lines(models: list[dict]) -> list[str]:
    """The goals' numbers at each eps below :data:`GOAL_EPS` (how much smaller eps closes a gap)."""
    from .sections import pct

    lines = []
    for m in models:
        for t in m["tickets"]:
            if t["eps"] >= GOAL_EPS:
                continue
            bits = [f"top-1 agreement {pct(t['top1_agreement'])} %"]
            if "perplexity_ratio" in t:
                bits = [f"perplexity {100 * (t['perplexity_ratio'] - 1):+.3f} %", *bits,
                        f"`generate()` identical on {t['generate_identical']} / {t['prompts']} prompts"]
            lines.append(f"* {m['class']}, eps {_label(t)}: " + ", ".join(bits) + f"; {t['random_ratio']:.1f}x "
                         f"random, {t['kept_ratio']:.2f}x kept, {t['seconds']:.1f} s.")
    return lines


def _divergence_note(m: dict) -> str:
    notes = []
    for t in m["tickets"]:
        div = t.get("divergences") or []
        if not div:
            continue
        margins = sorted(d["target_margin"] for d in div)
        small = sum(1 for v in margins if v <= t["max_logit_diff"])
        notes.append(f"eps {_label(t)}: {len(div)} prompt(s) differ; at the first differing token the target's "
                     f"top-1 minus top-2 logit is {', '.join(f'{v:.3g}' for v in margins[:8])}"
                     f"{' ...' if len(margins) > 8 else ''} ({small} of them within the ticket's max |logit "
                     f"difference| {t['max_logit_diff']:.2g} on the test windows: a near-tie flipped)")
    return f"{m['class']}: " + "; ".join(notes) + "." if notes else ""


def render(record: Record, ctx: Context) -> str:
    """The docs/results.md section of one record (called by ``slth report``)."""
    from .sections import pct, provenance, table

    d = record.data
    s = d["settings"]
    out = ["## Downloaded model classes\n",
           "Tickets of the model classes people download, as they are: transformers' `GPT2LMHeadModel`, "
           "`LlamaForCausalLM` (grouped-query attention, RMSNorm, rotary embeddings) and "
           "`BertForSequenceClassification`, small configs built in code (nothing downloaded), trained here briefly, "
           "then constructed by `slth.construct` (module replacement: torch.fx cannot trace them). Each ticket is "
           "saved, loaded and rebuilt into a fresh instance of its class (`ticket.to_module(model=cls(config))`); "
           "that model is measured, its own `forward` and `generate()`. *Random / kept*: random params and kept params "
           "over the target's weights; *seconds*: the construction's work (numba compilation excluded). Each "
           "ticket takes, per weight, the fewest random products within eps (`construct`'s default, `sparse=True`: "
           "errors spread up to eps); an eps marked *closest* is a second ticket of the same random network that "
           "takes each weight's closest subset instead (`sparse=False`, the minimal-error SubsetSum: more products "
           "kept, errors far below eps).\n"]
    lms = [m for m in d["models"] if "target_perplexity" in m]
    if lms:
        info = d.get("text_data", {})
        out.append("### Causal language models on Python standard library characters\n")
        out.append(f"Data: `pystdlib-chars` (context {info.get('context')}, {info.get('train_windows', 0):,} "
                   f"training / {info.get('test_windows', 0):,} test windows, Python "
                   f"{info.get('python_version', '?')} stdlib, "
                   f"corpus sha256 {str(info.get('corpus_sha256', '?'))[:12]}); tokens are characters "
                   f"({info.get('vocab')}). Targets trained with transformers' default init (initializer_range 0.02) "
                   f"for {s['lm_steps']} AdamW steps of {s['lm_batch']} windows (lr {s['lm_lr']:g}, one-cycle) so "
                   "that they are real models, not near-tie random ones: their own test perplexity and next-character "
                   "accuracy are in the table (a unigram model of the training characters, add-one smoothed, has "
                   "test perplexity "
                   f"{info.get('unigram_perplexity', float('nan')):.1f}). Perplexity = "
                   "exp(mean cross-entropy per next character) over the test windows; agreement = same top-1 next "
                   f"character; generate = greedy `generate()` of {s['new_tokens']} new tokens after the first "
                   f"{s['prompt_tokens']} characters of {s['prompts']} test windows spread over the split, counted "
                   "when the whole continuation is the target's.\n")
        rows = []
        for m in lms:
            tr = m["train"]
            for t in m["tickets"]:
                rows.append([m["class"], f"{m['params']:,}", f"{tr['steps']} ({tr['seconds']:.0f} s)",
                             _label(t), f"{t['target_perplexity']:.4f}", pct(t["target_accuracy"]),
                             f"{t['ticket_perplexity']:.4f}", f"{100 * (t['perplexity_ratio'] - 1):+.3f} %",
                             pct(t["top1_agreement"]), f"{t['max_logit_diff']:.2g}",
                             f"{t['generate_identical']} / {t['prompts']}", pct(t["generate_token_agreement"]),
                             f"{t['random_ratio']:.1f}x", f"{t['kept_ratio']:.2f}x",
                             f"{t['seconds']:.1f}" + ("" if t["eps_met"] else " (eps not met)")])
        out.append(table(["model", "params", "training steps", "eps", "target ppl", "target acc. %", "ticket ppl",
                          "ticket vs target", "top-1 agreement %", "max abs logit diff", "generate identical",
                          "generated tokens agreeing %", "random / target", "kept / target", "seconds"], rows))
        why = []
        for m in lms:
            for t in m["tickets"]:
                g = t.get("margins")
                if g is None:
                    continue
                med = g["disagreement_margin_median"]
                why.append([m["class"], _label(t), f"{g['disagreements']:,} / {t['positions']:,}",
                            "-" if med is None else f"{med:.3g} (max {g['disagreement_margin_max']:.3g})",
                            f"{g['margin_median']:.3g}", f"{g['diff_median']:.2g} / {g['diff_p99']:.2g}",
                            pct(g["near_tie_share"])])
        if why:
            out.append("\nWhy tickets and targets disagree: at the positions where the top-1 tokens differ the "
                       "target's "
                       "own margin (top-1 minus top-2 logit) is small, against its median margin over all positions; "
                       "*near-ties*: the share of all positions whose margin is below twice the 99th percentile of the "
                       "per-position max |logit difference| (both logits move by at most that, so a ticket this close "
                       "can flip them). Greedy generation diverges for good at the first such flip on its path.\n")
            out.append(table(["model", "eps", "positions that differ", "target margin there (median)",
                              "target margin, all positions (median)", "per-position max abs logit diff (median / p99)",
                              "near-ties %"], why))
        notes = [n for n in (_divergence_note(m) for m in lms) if n]
        if notes:
            out.append("\nWhere greedy continuations differ: " + " ".join(notes) + "\n")
        else:
            out.append("")
    bert = next((m for m in d["models"] if m["name"] == "bert"), None)
    if bert is not None:
        tr = bert["train"]
        out.append("### BERT sequence classification (digits as tokens)\n")
        out.append(f"Task: scikit-learn's 8x8 digits (slth's `digits` split, {bert['test_examples']} test images) as "
                   "a token sequence, a `[CLS]` token then the 64 pixel values 0..16 as tokens, 10 classes. Target "
                   f"trained {tr['epochs']} epochs ({tr['steps']} AdamW steps of {tr['batch']}, lr {tr['lr']:g}, "
                   f"{tr['seconds']:.0f} s); {bert['params']:,} params. One flipped image is "
                   f"{100 / bert['test_examples']:.2f} % agreement.\n")
        rows = [[bert["class"], _label(t), pct(t["target_accuracy"]), pct(t["ticket_accuracy"]),
                 pct(t["top1_agreement"]), f"{t['max_logit_diff']:.2g}", f"{t['random_ratio']:.1f}x",
                 f"{t['kept_ratio']:.2f}x", f"{t['seconds']:.1f}" + ("" if t["eps_met"] else " (eps not met)")]
                for t in bert["tickets"]]
        out.append(table(["model", "eps", "target acc. %", "ticket acc. %", "top-1 agreement %",
                          "max abs logit diff", "random / target", "kept / target", "seconds"], rows))
        out.append("")
    lines = goal_lines(d["models"])
    out.append("### Goals (ours, at eps 1e-3)\n")
    out.append("\n".join(lines) + "\n")
    beyond = beyond_lines(d["models"])
    if beyond:
        out.append("Below the goals' eps (not goals, measured in the same run):\n\n" + "\n".join(beyond) + "\n")
    for m in d["models"]:
        for row in (t for t in m["tickets"] if t["eps"] == GOAL_EPS):
            closest = " (closest subsets)" if row.get("subsets") == "closest" else ""
            ctx.summary.append((f"{m['class']} ticket vs target at eps {GOAL_EPS:g}{closest}",
                                "goal (ours): agreement >= 99.5 %"
                                + ("; perplexity within 1 %; generate identical >= 90 %" if "perplexity_ratio" in row
                                   else ""),
                                f"{pct(row['top1_agreement'])} %" + (
                                    f"; {100 * (row['perplexity_ratio'] - 1):+.3f} %; "
                                    f"{row['generate_identical']}/{row['prompts']}" if "perplexity_ratio" in row
                                    else "")))
    out.append(provenance(d))
    return "\n".join(out)
