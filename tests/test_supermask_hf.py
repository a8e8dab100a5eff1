"""Supermasks on the model classes people download: Hugging Face transformers' GPT-2 (Conv1D layers, an
output layer tied to the token embedding), Llama (grouped-query attention, rotary embeddings, SiLU-gated
MLP, LlamaRMSNorm) and BERT, built from tiny configs in code (nothing is downloaded). Each trains a few
steps, round-trips through ``to_ticket`` / ``from_ticket(model=fresh)`` bit for bit, and the causal LMs
generate from the rebuilt ticket. The rules they rely on (transposed Conv1D, library norms, ties) are also
tested on plain torch modules, without transformers."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slth import supermask as sm
from slth.supermask.apply import _supermask_hooks
from slth.supermask.init import GAIN
from slth.ticketfile import TicketFileError

VOCAB, SEQ = 64, 16


def _gpt2(**overrides):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=32,
                                     bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0, **overrides)  # no dropout: the losses are deterministic
    return lambda: transformers.GPT2LMHeadModel(config)


def _llama():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, hidden_act="silu",
                                      max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return lambda: transformers.LlamaForCausalLM(config)


def _bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=3,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return lambda: transformers.BertForSequenceClassification(config)


def _tokens(n=8, seed=0):
    return torch.randint(0, VOCAB, (n, SEQ), generator=torch.Generator().manual_seed(seed))


def _train(model, loss_fn, steps=6):
    """A few edge-popup steps; returns the losses and whether every score tensor got a non-zero gradient."""
    scores = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(scores, lr=0.1, momentum=0.9)
    model.train()
    losses, reached = [], set()
    for step in range(1, steps + 1):
        loss = loss_fn(model)
        opt.zero_grad()
        loss.backward()
        reached |= {i for i, p in enumerate(scores) if p.grad is not None and bool(p.grad.abs().sum() > 0)}
        opt.step()
        sm.after_step(model, step)
        losses.append(float(loss.detach()))
    sm.after_epoch(model, 1, 1)
    return losses, len(reached) == len(scores)


def _lm_loss(x):
    return lambda model: model(x, labels=x).loss


def _round_trip(model, make, tmp_path, x):
    """The ticket rebuilt into a fresh instance gives the supermasked model's eval logits bit for bit."""
    path = tmp_path / "hf.slth"
    sm.to_ticket(model, path)
    rebuilt = sm.from_ticket(path, model=make())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).logits, rebuilt(x).logits)
    return rebuilt


def test_gpt2_masks_its_conv1d_layers_keeps_the_tied_head_and_rebuilds(tmp_path):
    make = _gpt2()
    model = sm.apply_supermask(make(), sm.SupermaskConfig("edge-popup", 0.5), seed=1)
    report = sm.supermask_report(model)
    masked = {m.name for m in report.masked}
    assert {f"transformer.h.{i}.{layer}.weight" for i in range(2)
            for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")} <= masked
    assert {"transformer.wte.weight", "transformer.wpe.weight"} <= masked and len(masked) == 10
    assert report.tied == (("lm_head.weight", "transformer.wte.weight"),)
    frozen = {f.name: (f.value, f.role) for f in report.frozen}
    assert frozen["transformer.h.0.attn.c_attn.bias"] == ("zero", "bias")
    assert frozen["transformer.h.0.ln_1.weight"] == ("one", "norm")
    # the tie: one parametrization, one set of scores, the same effective tensor in both places
    head, wte = model.lm_head.parametrizations.weight, model.transformer.wte.parametrizations.weight
    assert head[0] is wte[0] and head.original is wte.original
    scores = [p for p in model.parameters() if p.requires_grad]
    assert len(scores) == 10
    model.eval()
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)

    x = _tokens()
    losses, reached = _train(model, _lm_loss(x))
    assert reached and losses[-1] < losses[0]
    ticket = sm.to_ticket(model)
    assert ticket.config["ties"] == {"lm_head.weight": "transformer.wte.weight"}
    assert "lm_head.weight" not in ticket.masks and "transformer.wte.weight" in ticket.masks
    rebuilt = _round_trip(model, make, tmp_path, x)
    assert rebuilt.lm_head.weight is rebuilt.transformer.wte.weight  # the tie where the class expects it
    prompt = x[:2, :4]
    with torch.no_grad():
        out = rebuilt.generate(prompt, max_new_tokens=4, do_sample=False)
        assert torch.equal(out, model.generate(prompt, max_new_tokens=4, do_sample=False))
    assert out.shape == (2, 8)


def test_gpt2_conv1d_takes_the_fan_in_of_its_input_dimension():
    """Conv1D stores (in, out): its init and score scale use fan-in = weight.shape[0], as the Linear it is."""
    model = sm.apply_supermask(_gpt2()(), sm.SupermaskConfig("edge-popup", 0.5, init="signed-constant"), seed=2)
    for layer, fan in ((model.transformer.h[0].mlp.c_fc, 32), (model.transformer.h[0].mlp.c_proj, 128)):
        chain = layer.parametrizations.weight
        assert torch.allclose(chain.original.abs(), torch.full_like(chain.original, GAIN / math.sqrt(fan)))
        s = chain[0].scores.detach().abs().max()
        assert 0.9 / math.sqrt(fan) < s <= 1 / math.sqrt(fan)  # U(-1/sqrt(fan), 1/sqrt(fan)), 4096 draws


def test_gpt2_ticket_refuses_an_untied_instance_before_changing_it():
    make = _gpt2()
    model = sm.apply_supermask(make(), sm.SupermaskConfig("edge-popup", 0.5), seed=1)
    ticket = sm.to_ticket(model)
    untied = _gpt2(tie_word_embeddings=False)()
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    before = {k: v.clone() for k, v in untied.state_dict().items()}
    with pytest.raises(TicketFileError, match="lm_head.weight = transformer.wte.weight"):
        sm.from_ticket(ticket, model=untied)
    assert all(torch.equal(v, before[k]) for k, v in untied.state_dict().items())
    with pytest.raises(TicketFileError, match="ties none"):
        sm.materialize(model, into=_gpt2(tie_word_embeddings=False)())


def test_llama_with_grouped_query_attention_freezes_its_rmsnorms_and_rebuilds(tmp_path):
    make = _llama()
    model = sm.apply_supermask(make(), sm.SupermaskConfig("edge-popup", 0.5), seed=3)
    report = sm.supermask_report(model)
    assert len(report.masked) == 16 and report.tied == ()  # embed, 2 x (q, k, v, o, gate, up, down), lm_head
    assert {m.name: m.shape for m in report.masked}["model.layers.0.self_attn.k_proj.weight"] == (16, 32)
    norms = {f.name: (f.value, f.role) for f in report.frozen}
    assert norms == {**{f"model.layers.{i}.{n}.weight": ("one", "norm") for i in range(2)
                        for n in ("input_layernorm", "post_attention_layernorm")}, "model.norm.weight": ("one", "norm")}
    assert torch.equal(model.model.norm.weight, torch.ones(32))
    assert "model.rotary_emb.inv_freq" in report.buffers

    x = _tokens(seed=1)
    losses, reached = _train(model, _lm_loss(x))
    assert reached and losses[-1] < losses[0]
    rebuilt = _round_trip(model, make, tmp_path, x)
    with torch.no_grad():
        out = rebuilt.generate(x[:1, :4], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 8) and torch.equal(out[:, :4], x[:1, :4])


def test_bert_classifier_masks_every_linear_and_embedding_and_rebuilds(tmp_path):
    make = _bert()
    model = sm.apply_supermask(make(), sm.SupermaskConfig("edge-popup", 0.5), seed=4)
    report = sm.supermask_report(model)
    masked = {m.name for m in report.masked}
    linears = {f"{n}.weight" for n, m in make().named_modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    assert masked == linears and len(masked) == 3 + 2 * 6 + 2  # embeddings, 2 x 6 Linear, pooler, classifier
    assert {f.value for f in report.frozen if f.role == "bias"} == {"zero"}
    assert {f.role for f in report.frozen} == {"bias", "norm"}

    x, y = _tokens(seed=2), torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(3))
    losses, reached = _train(model, lambda m: F.cross_entropy(m(x).logits, y))
    assert reached and losses[-1] < losses[0]
    _round_trip(model, make, tmp_path, x)


@pytest.mark.parametrize("tie", [True, False])
def test_t5_ties_three_places_to_one_mask_and_freezes_its_t5_layernorms(tie, tmp_path):
    """T5 (tie_word_embeddings=False: transformers 5 still ties, without the decoder output's d_model**-0.5 scaling):
    every Linear and Embedding masked (relative_attention_bias too), each T5LayerNorm frozen at 1, a few steps of
    training, then from_ticket(model=fresh) bit for bit and the rebuilt model's own generate()."""
    transformers = pytest.importorskip("transformers")
    config = transformers.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0,
                                   tie_word_embeddings=tie)
    make = lambda: transformers.T5ForConditionalGeneration(config)  # noqa: E731
    model = sm.apply_supermask(make(), sm.SupermaskConfig("edge-popup", 0.5), seed=6)
    assert model.config.scale_decoder_outputs is tie
    report = sm.supermask_report(model)
    assert dict(report.tied) == {f"{place}.weight": "shared.weight"
                                 for place in ("encoder.embed_tokens", "decoder.embed_tokens", "lm_head")}
    layers = {f"{n}.weight" for n, m in make().named_modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    assert {m.name for m in report.masked} == layers - set(dict(report.tied))  # the tied places: shared's mask
    assert "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in layers
    assert {(f.value, f.role) for f in report.frozen} == {("one", "norm")}  # every T5LayerNorm, nothing else
    assert {f.name for f in report.frozen} == {n for n, _ in make().named_parameters() if "layer_norm" in n}
    x = _tokens(n=4, seed=4)
    losses, reached = _train(model, lambda m: m(input_ids=x, labels=x).loss)
    assert reached and losses[-1] < losses[0]
    model.eval()
    rebuilt = sm.from_ticket(sm.to_ticket(model, tmp_path / "t5.slth"), model=make())
    with torch.no_grad():
        assert torch.equal(model(input_ids=x, labels=x).logits, rebuilt(input_ids=x, labels=x).logits)
        out = rebuilt.generate(x[:2], max_new_tokens=4, do_sample=False)
        assert torch.equal(out, model.generate(x[:2], max_new_tokens=4, do_sample=False))
    assert rebuilt.lm_head.weight is rebuilt.shared.weight is rebuilt.encoder.embed_tokens.weight


# the rules themselves, on plain torch modules (no transformers needed)


class TinyLM(nn.Module):
    """A token embedding, a library-style RMSNorm and an output layer tied to the embedding."""

    def __init__(self, vocab=11, dim=8):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.norm = MyRMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(self.norm(self.emb(x)))


class MyRMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def test_a_tied_plain_torch_model_is_masked_once_and_its_ticket_keeps_the_tie(tmp_path):
    model = sm.apply_supermask(TinyLM(), sm.SupermaskConfig("iterand", 0.5, rerand_period=1), seed=5)
    assert sm.tied_tensors(model) == {"head.weight": "emb.weight"}
    assert [t.name for t in sm.prunable_tensors(model)] == ["emb.weight"]
    assert len([p for p in model.parameters() if p.requires_grad]) == 1
    assert len(list(_supermask_hooks(model))) == 1  # the trainer's hooks run once per step for the tied tensor
    assert torch.equal(model.norm.weight, torch.ones(8))  # a norm of the user's own code: frozen at 1
    x = torch.randint(0, 11, (4, 5), generator=torch.Generator().manual_seed(0))
    _, reached = _train(model, lambda m: F.cross_entropy(m(x).flatten(0, 1), x.flatten()), steps=3)
    assert reached
    assert set(sm.final_masks(model)) == {"emb.weight"}
    rebuilt = sm.from_ticket(sm.to_ticket(model, tmp_path / "t.slth"), model=TinyLM())
    assert rebuilt.head.weight is rebuilt.emb.weight
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


class Table(nn.Module):
    def __init__(self, table):
        super().__init__()
        self.table = table


class Shared(nn.Module):
    """A Linear whose weight is also a free parameter of another module: masked there, free here."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.extra = Table(self.fc.weight)

    def forward(self, x):
        return self.fc(x) + x @ self.extra.table


def test_a_tie_between_places_treated_differently_is_refused_naming_both():
    with pytest.raises(TypeError, match=r"'extra.table' is the same tensor as 'fc.weight'"):
        sm.apply_supermask(Shared(), sm.SupermaskConfig("edge-popup", 0.5), seed=0)


class MatrixNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4, 4))


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))


class AdaptiveNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))
        self.proj = nn.Linear(4, 4)


@pytest.mark.parametrize("layer", [MatrixNorm, Scale, AdaptiveNorm])
def test_only_elementwise_norms_are_frozen_other_weights_are_refused_with_advice(layer):
    model = nn.Sequential(nn.Linear(4, 4), layer())
    with pytest.raises(TypeError, match=rf"{layer.__name__} at '1' holds a weight 'weight'.*elementwise"):
        sm.apply_supermask(model, sm.SupermaskConfig("edge-popup", 0.5), seed=0)
    assert not sm.is_library_norm(model[1])


def test_a_library_norm_with_bias_is_frozen_at_one_and_zero():
    class T5StyleLayerNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(1, 4, 1))
            self.bias = nn.Parameter(torch.randn(1, 4, 1))

    model = sm.apply_supermask(nn.Sequential(nn.Linear(4, 4), T5StyleLayerNorm()), sm.SupermaskConfig(), seed=0)
    assert torch.equal(model[1].weight, torch.ones(1, 4, 1)) and torch.equal(model[1].bias, torch.zeros(1, 4, 1))


def test_a_conv1d_by_name_only_is_not_taken_for_a_transposed_linear():
    class Conv1D(nn.Module):  # no nx / nf: not transformers' layer
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4, 3))

    assert not sm.is_transposed_linear(Conv1D())
    with pytest.raises(TypeError, match="holds a weight 'weight'"):
        sm.apply_supermask(nn.Sequential(nn.Linear(4, 4), Conv1D()), sm.SupermaskConfig(), seed=0)
