"""Rebuilding a ticket with only its kept weights (``to_module(storage="kept")``, slth.construction.kept).

The kept storage must give the dense rebuild's outputs (to float32 rounding: the sums run in another order), hold
exactly the seeded random weights the masks keep, give the same bits on any number of numba threads, and refuse
what it cannot do (backward, a dense ``weight``, other devices, blocks over 64 units) by name.
"""

import re

import numba
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import slth
from slth.construction import Ticket
from slth.construction.kept import KeptLinear, block_counts, embedding_lookup, tied_head
from slth.construction.modules import EmbeddingLeaf, LeafPair, TiedHead
from slth.construction.network import LayerLayout, RandomPair

T = pytest.importorskip("transformers")

EPS = 1e-3


def _tiny_gpt2():
    return T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=32, bos_token_id=0,
                        eos_token_id=0, pad_token_id=0, initializer_range=0.1)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    torch.manual_seed(0)
    target = T.GPT2LMHeadModel(_tiny_gpt2()).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial LayerNorm affines (a fresh one is the identity, which needs no pair)
        for name, p in target.named_parameters():
            if ".ln_" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    ticket = slth.construct(target, eps=EPS, seed=0)
    loaded = Ticket.load(ticket.save(tmp_path_factory.mktemp("kept") / "t.slth"))
    dense = loaded.to_module(model=T.GPT2LMHeadModel(_tiny_gpt2()))
    kept = loaded.to_module(model=T.GPT2LMHeadModel(_tiny_gpt2()), storage="kept")
    return target, loaded, dense, kept


def _brute(values, mask, h):
    """y = h @ (values * mask).T in float64, the terms summed by numpy."""
    return h.astype(np.float64) @ np.where(mask, values, 0).astype(np.float64).T


def _kept(values, mask, units, columns, splits=()):
    layer = KeptLinear(values.shape[0], values.shape[1], units, columns)
    layer.reserve(block_counts(mask, units))
    bounds = [0, *sorted(set(splits)), values.shape[0]]
    for lo, hi in zip(bounds, bounds[1:]):
        if hi > lo:
            layer.add_rows(lo, values[lo:hi], mask[lo:hi])
    return layer.finish()


@settings(max_examples=40, deadline=None)
@given(d_in=st.integers(0, 5), d_out=st.integers(1, 6), units=st.sampled_from([1, 3, 8, 30, 32, 33, 64]),
       bias=st.integers(0, 64), tokens=st.integers(1, 4), density=st.floats(0, 1), columns=st.booleans(),
       seed=st.integers(0, 2**16), split=st.integers(0, 6))
def test_kernel_equals_a_brute_force_sum(d_in, d_out, units, bias, tokens, density, columns, seed, split):
    n_bias = min(bias, units)
    hidden = d_in * units + n_bias
    if hidden == 0:
        return
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1, 1, (d_out, hidden)).astype(np.float32)
    mask = rng.random((d_out, hidden)) < density
    h = rng.uniform(-2, 2, (tokens, hidden)).astype(np.float32)
    layer = _kept(values, mask, units, columns, splits=(split,))
    assert layer.kept == int(mask.sum())
    got = layer(torch.from_numpy(h)).numpy()
    want = _brute(values, mask, h)
    scale = np.abs(h).astype(np.float64) @ np.abs(np.where(mask, values, 0)).T.astype(np.float64)
    assert got.dtype == np.float32 and got.shape == (tokens, d_out)
    assert (np.abs(got - want) <= 1e-6 * scale + 1e-30).all()  # float32 rounding of a float64 sum


@settings(max_examples=25, deadline=None)
@given(num=st.integers(1, 9), dim=st.integers(1, 5), n=st.sampled_from([1, 5, 15, 32, 40]),
       tokens=st.integers(1, 5), density=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_embedding_and_tied_head_kernels_equal_a_brute_force_sum(num, dim, n, tokens, density, seed):
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1, 1, (dim, num * n)).astype(np.float32)
    mask = rng.random((dim, num * n)) < density
    first = rng.random((num, n)).astype(np.float32)  # the first layer's outputs on each token's one-hot
    layer = _kept(values, mask, n, columns=True, splits=(dim // 2,))
    table = np.einsum("dkm,km->dk", np.where(mask, values, 0).reshape(dim, num, n).astype(np.float64), first)
    idx = rng.integers(0, num, tokens)
    got = embedding_lookup(layer, torch.from_numpy(first), torch.from_numpy(idx)).numpy()
    np.testing.assert_allclose(got, table[:, idx].T, rtol=1e-6, atol=1e-6)
    x = rng.uniform(-1, 1, (2, tokens, dim)).astype(np.float32)
    got = tied_head(layer, torch.from_numpy(first), torch.from_numpy(x)).numpy()
    assert got.shape == (2, tokens, num)
    np.testing.assert_allclose(got, x.astype(np.float64) @ table, rtol=1e-5, atol=1e-5)


def _with_threads(k, fn):
    old = numba.get_num_threads()
    numba.set_num_threads(k)
    try:
        return fn()
    finally:
        numba.set_num_threads(old)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_kernels_give_the_same_bits_on_one_and_two_threads():
    rng = np.random.default_rng(0)
    d_out, units, d_in = 37, 30, 41
    values = rng.uniform(-1, 1, (d_out, d_in * units + 15)).astype(np.float32)
    mask = rng.random(values.shape) < 0.2
    h = torch.from_numpy(rng.uniform(-1, 1, (9, values.shape[1])).astype(np.float32))
    rows, cols = _kept(values, mask, units, False), _kept(values, mask, units, True)
    emb = _kept(values[:, : d_in * 15], mask[:, : d_in * 15], 15, True)
    first = torch.from_numpy(rng.random((d_in, 15)).astype(np.float32))
    x = torch.from_numpy(rng.uniform(-1, 1, (9, d_out)).astype(np.float32))
    idx = torch.from_numpy(rng.integers(0, d_in, 9))
    runs = [lambda: rows(h), lambda: cols(h), lambda: embedding_lookup(emb, first, idx),
            lambda: tied_head(emb, first, x)]
    for run in runs:
        one, two = _with_threads(1, run), _with_threads(2, run)
        assert torch.equal(one.view(torch.int32), two.view(torch.int32))


def _pairs(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, (LeafPair, EmbeddingLeaf))}


def test_kept_storage_holds_exactly_the_seeded_weights_the_masks_keep(gpt2):
    _, loaded, dense, kept = gpt2
    dense_pairs, kept_pairs = _pairs(dense), _pairs(kept)
    assert dense_pairs.keys() == kept_pairs.keys() and len(kept_pairs) == 2 + 2 * (4 + 2) + 1  # wte, wpe, ln_f
    total = 0
    for name, pair in kept_pairs.items():
        assert isinstance(pair.b, KeptLinear) and pair.b.columns == isinstance(pair, EmbeddingLeaf)
        assert torch.equal(pair.a.weight, dense_pairs[name].a.weight)
        w, m = dense_pairs[name].b.weight.detach(), loaded.masks[f"{name}.b.weight"]
        if pair.b.columns:  # token by token: (token, output, unit)
            n = pair.a.weight.shape[1]
            w, m = (t.unflatten(1, (-1, n)).transpose(0, 1) for t in (w, m))
        assert torch.equal(pair.b.values.view(torch.int32), w[m].view(torch.int32))  # the random weights, bit for bit
        total += pair.b.kept
    assert total == sum(int(loaded.masks[k].sum()) for k in loaded.masks if k.endswith(".b.weight"))
    assert sum(b.numel() for b in kept.buffers()) < 0.5 * sum(p.numel() for p in dense.parameters())


def test_kept_rebuild_computes_what_the_dense_rebuild_computes(gpt2):
    target, _, dense, kept = gpt2
    g = torch.Generator().manual_seed(0)
    dense_pairs, kept_pairs = _pairs(dense), _pairs(kept)
    with torch.no_grad():
        for name, pair in kept_pairs.items():  # leaf by leaf: Conv1D, LayerNorm affines, embeddings
            if isinstance(pair, EmbeddingLeaf):
                x = torch.randint(0, pair.a.weight.shape[0], (3, 5), generator=g)
            else:
                x = torch.randn(3, 5, pair.a.weight.shape[0], generator=g)
            torch.testing.assert_close(pair(x), dense_pairs[name](x), rtol=1e-5, atol=1e-5)
        assert isinstance(kept.lm_head, TiedHead) and kept.lm_head.embedding is kept.transformer.wte
        h = torch.randn(2, 4, 32, generator=g)
        torch.testing.assert_close(kept.lm_head(h), dense.lm_head(h), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(kept.transformer.wte.table(3, 9), dense.transformer.wte.table(3, 9))
        x = torch.randint(0, 64, (4, 12), generator=g)
        torch.testing.assert_close(kept(x).logits, dense(x).logits, rtol=1e-4, atol=1e-4)
        prompts = torch.randint(1, 64, (8, 6), generator=g)
        settings_ = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
        got, want = kept.generate(prompts, **settings_), dense.generate(prompts, **settings_)
    assert torch.equal(got, want)  # the same greedy tokens as the dense rebuild
    with torch.no_grad():
        assert (target.generate(prompts, **settings_) == got).all(dim=1).float().mean() >= 0.75


def test_kept_rebuild_of_linear_layers_with_redraws():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 4))
    ticket = slth.construct(net, eps=0.01, n=4, seed=0, construction="modules")  # n too small: redraws
    assert len(ticket.redraws) > 0 and ticket.replaces_modules

    def fresh():
        return nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 4))

    dense = ticket.to_module(model=fresh())
    for block in (1, 7, 10**9):  # rows added a row at a time, across row boundaries, whole layers
        kept = ticket._fill(True, None, fresh(), block_values=block, storage="kept")
        for name in ("0", "2"):
            w, m = dense.get_submodule(name).b.weight.detach(), ticket.masks[f"{name}.b.weight"]
            assert torch.equal(kept.get_submodule(name).b.values, w[m])
        x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            torch.testing.assert_close(kept(x), dense(x), rtol=1e-5, atol=1e-6)


def test_kept_storage_is_inference_only_and_says_so(gpt2):
    _, _, _, kept = gpt2
    x = torch.randint(0, 64, (2, 5))
    out = kept(x).logits  # grad enabled: the kernels' result refuses backward
    assert out.requires_grad
    with pytest.raises(RuntimeError, match="storage='kept'.*inference-only.*storage='dense'"):
        out.sum().backward()
    with pytest.raises(RuntimeError, match="no dense weight tensor: it holds only its kept weights"):
        kept.transformer.h[0].attn.c_attn.weight  # noqa: B018
    with pytest.raises(RuntimeError, match="no dense weight tensor"):
        kept.lm_head.weight  # noqa: B018
    with torch.no_grad():
        assert not kept(x).logits.requires_grad


def test_kept_storage_refusals_come_before_any_change(gpt2, tmp_path):
    _, loaded, _, _ = gpt2
    fresh = T.GPT2LMHeadModel(_tiny_gpt2())
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match=r"storage must be one of \('dense', 'kept'\), got 'sparse'"):
        loaded.to_module(model=fresh, storage="sparse")
    with pytest.raises(ValueError, match="storage='kept' runs on the CPU .* not on 'meta'"):
        loaded.to_module(model=fresh, storage="kept", device="meta")
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in before.items())
    traced = slth.construct(nn.Sequential(nn.Linear(3, 2)), eps=0.05, n=4, seed=0)
    with pytest.raises(ValueError, match="storage='kept' rebuilds tickets built by module replacement"):
        traced.to_module(storage="kept")
    with pytest.raises(ValueError, match=r"storage must be one of \('dense', 'kept'\), got 'sparse'"):
        traced.to_module(storage="sparse")  # a traced ticket reads no storage: refused all the same
    wide = slth.construct(nn.Sequential(nn.Linear(2, 2)), eps=0.05, n=33, seed=0, construction="modules")
    model = nn.Sequential(nn.Linear(2, 2))
    weight = model[0].weight.clone()
    with pytest.raises(ValueError, match="at most 64 random weights per target weight .* this pair has 66"):
        wide.to_module(model=model, storage="kept")
    assert isinstance(model[0], nn.Linear) and torch.equal(model[0].weight, weight)  # not replaced
    layer = KeptLinear(2, 4, 2)
    with pytest.raises(RuntimeError, match="reserve\\(\\) the layer before adding rows"):
        layer.add_rows(0, np.zeros((1, 4), np.float32), np.zeros((1, 4), bool))
    with pytest.raises(ValueError, match=r"reserve takes kept counts of shape \(2, 2\) once, got \(2, 3\)"):
        layer.reserve(np.zeros((2, 3), np.uint8))
    layer.reserve(np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="rows must come in order with 4 columns: expected row 0, got 1"):
        layer.add_rows(1, np.zeros((1, 4), np.float32), np.zeros((1, 4), bool))
    with pytest.raises(ValueError, match="rows 0:1: their mask keeps other weights than the reserved counts"):
        layer.add_rows(0, np.zeros((1, 4), np.float32), np.ones((1, 4), bool))
    with pytest.raises(RuntimeError, match="was not finished: it holds no weights yet"):
        layer(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="1 of 2 rows were added"):
        layer.add_rows(0, np.zeros((1, 4), np.float32), np.zeros((1, 4), bool))
        layer.finish()
    done = _kept(np.ones((2, 4), np.float32), np.ones((2, 4), bool), 2, False)
    with pytest.raises(RuntimeError, match="this kept layer is sealed"):
        done.add_rows(0, np.ones((1, 4), np.float32), np.ones((1, 4), bool))
    with pytest.raises(ValueError, match="runs on the CPU \\(numba\\); this layer is on meta"):
        _kept(np.ones((2, 4), np.float32), np.ones((2, 4), bool), 2, False).to("meta")(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="runs on the CPU in float32 .* got a torch.float64 tensor"):
        done(torch.zeros(1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected 4 features in the last dimension, got 3"):
        done(torch.zeros(1, 3))


def test_a_random_pair_refuses_a_storage_it_cannot_hold():
    with pytest.raises(ValueError, match=r"storage must be one of \('dense', 'kept'\), got 'bits'"):
        RandomPair(LayerLayout(3, 2, 4, True, False, False), storage="bits")
    conv = LayerLayout(3, 2, 4, True, False, False, kernel=(3, 3))
    with pytest.raises(ValueError, match="storage='kept' is for Linear-like pairs; a conv pair stays dense"):
        RandomPair(conv, storage="kept")
    assert isinstance(RandomPair(LayerLayout(3, 2, 4, True, True, False), storage="kept").b, KeptLinear)


@pytest.mark.parametrize(("args", "message"), [
    (["--ticket", "t.slth"], "--generate and --ticket are for --target hf-gpt2-small, not resnet18"),
    (["--target", "gpt2-small", "--generate", "4"], "--generate and --ticket are for --target hf-gpt2-small"),
    (["--target", "hf-gpt2-small", "--hf-layers", "1", "--hf-embd", "64", "--ticket", "t.slth", "--generate", "-1"],
     "--generate must be >= 0, got -1"),
    (["--target", "hf-gpt2-small", "--ticket", "missing.slth"], "no such --ticket file: missing.slth"),
    (["--target", "hf-gpt2-small", "--ticket", "t.slth", "--check-pairs"], "--check-pairs .* needs --ticket"),
    (["--target", "hf-gpt2-small", "--generate", "4", "--check-pairs"], "--check-pairs .* needs --ticket"),
    (["--target", "hf-gpt2-small", "--ticket", "t.slth", "--generate", "4", "--storage", "dense", "--check-pairs"],
     "needs --ticket, --generate N and --storage kept"),
])
def test_bench_construct_scale_refuses_options_it_would_ignore_before_any_work(args, message, tmp_path, monkeypatch,
                                                                               capsys):
    """``slth bench construct-scale``'s ticket options are refused by name before the (124M-parameter) target is
    built: an option another target ignores, a missing ticket, --check-pairs where it would not run."""
    from slth.bench import construct_scale

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.slth").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        construct_scale.main(args)
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err.splitlines()[-1])


def test_bench_check_pairs_rebuilds_each_pair_as_to_module_does(gpt2):
    """``slth bench construct-scale --check-pairs`` rebuilds every pair but the token embedding's densely, one at a
    time, and compares it with the kept one on the input it got: every pair is checked and agrees to float32
    rounding (its dense pair masked as ``to_module`` masks it)."""
    from slth.bench.construct_scale import _check_pairs

    _, loaded, _, kept = gpt2
    prompt = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(1))
    got = _check_pairs(loaded, kept, prompt)
    pairs = [name for name, m in kept.named_modules() if isinstance(m, (LeafPair, EmbeddingLeaf))]
    assert got["pairs_checked_against_dense"] == len(pairs) - 1  # all but transformer.wte
    assert got["pairs_max_relative_diff"] < 1e-5
