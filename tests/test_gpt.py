"""pystdlib-chars (characters of the Python standard library's source) and the char-level gpt: the data set is
deterministic, the model causal, slth train and slth train-dense run on them (tiny: context 16, 1 layer, dim 16,
a few hundred windows, 1 epoch)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from slth.cli import app
from slth.data import check_data_args, load_dataset
from slth.data.text import VOCAB, _corpus, decode, encode, load_pystdlib_chars
from slth.models import build_model

TINY_DATA = ["--data", "pystdlib-chars", "--data-arg", "context=16", "--data-arg", "max_bytes=8000",
             "--data-arg", "test_every=2"]
TINY_GPT = ["--model", "gpt", "--model-arg", "dim=16", "--model-arg", "depth=1", "--model-arg", "heads=2"]
COMMON = ["--epochs", "1", "--device", "cpu", "--threads", "1"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_data_set_is_deterministic_and_reports_what_it_read():
    a = load_pystdlib_chars(context=16, max_bytes=8000, test_every=2)
    _corpus.cache_clear()  # read the files again
    b = load_dataset("pystdlib-chars", context=16, max_bytes=8000, test_every=2)
    assert a.info["corpus_sha256"] == b.info["corpus_sha256"] and len(a.info["corpus_sha256"]) == 64
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.info["python_version"] and a.info["test_files"] >= 1 and a.info["train_files"] >= 1
    assert a.num_classes == len(VOCAB) == 98 and a.input_shape == (16,)
    assert a.x_train.dtype == torch.int64 and 100 < len(a.x_train) < 2000
    assert torch.equal(a.x_train[:, 1:], a.y_train[:, :-1])  # targets are the inputs shifted by one
    assert torch.equal(a.x_train[1:, 0], a.y_train[:-1, -1])  # consecutive windows continue the text
    assert decode(encode("def f(x):\n\treturn 'é'")) == "def f(x):\n\treturn '\x00'"
    with pytest.raises(ValueError, match="unknown option 'ctx'"):
        check_data_args("pystdlib-chars", {"ctx": 8})
    with pytest.raises(ValueError, match="no options|its options: none"):
        check_data_args("digits", {"context": 8})


@pytest.mark.parametrize("tie", [False, True])
def test_gpt_is_causal(tie):
    torch.manual_seed(0)
    net = build_model("gpt", (16,), 98, dim=16, depth=1, heads=2, tie=tie).eval()
    idx = torch.randint(0, 98, (3, 16))
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 98
    with torch.no_grad():
        a, b = net(idx), net(changed)
    assert a.shape == (3, 16, 98)
    torch.testing.assert_close(a[:, :9], b[:, :9], rtol=0, atol=0)
    assert not torch.allclose(a[:, 9:], b[:, 9:])
    assert ("head.weight" in net.state_dict()) is not tie


@pytest.mark.parametrize("method", ["dense", "edge-popup"])
def test_train_writes_next_token_metrics(tmp_path, method):
    out = tmp_path / method
    r = invoke("train", "--method", method, *TINY_GPT, *TINY_DATA, *COMMON, "--quiet", "--out", out)
    assert r.exit_code == 0, r.output
    assert "perplexity" in r.output
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["test_accuracy"] <= 1 and 1 < m["test_perplexity"] < 1e4
    epoch = m["epochs"][-1]
    assert epoch["test_perplexity"] == pytest.approx(torch.tensor(epoch["test_loss"]).exp().item(), rel=1e-5)
    assert m["data_info"]["corpus_sha256"] == load_pystdlib_chars(16, 8000, 2).info["corpus_sha256"]
    assert m["config"]["data_args"] == [["context", 16], ["max_bytes", 8000], ["test_every", 2]]
    assert (out / "ticket.slth").exists() is (method != "dense")


def test_train_dense_model_reloads(tmp_path):
    from slth.construction.target import load_target

    path = tmp_path / "gpt.pt"
    r = invoke("train-dense", "--model", "gpt", *TINY_DATA, *COMMON, "-o", path)  # default dims: --arch gpt loads
    assert r.exit_code == 0, r.output
    saved = torch.load(path, weights_only=True)
    assert saved["model"] == "gpt" and saved["data_info"]["corpus_sha256"]
    assert saved["model_kwargs"]["input_shape"] == [16] and saved["model_kwargs"]["num_classes"] == 98
    rebuilt = build_model("gpt", **saved["model_kwargs"])
    rebuilt.load_state_dict(saved["state_dict"])
    target = load_target(path, "gpt", input_shape=(16,), num_classes=98)
    idx = load_pystdlib_chars(16, 8000, 2).x_test[:4]
    with torch.no_grad():
        out = rebuilt.eval()(idx)
        assert torch.equal(target(idx), out)
    assert saved["metrics"]["test_perplexity"] > 1
    r = invoke("train-dense", "--arch", "64-10", "--model", "gpt", "-o", tmp_path / "x.pt")
    assert r.exit_code == 2 and "not both" in r.output


def test_train_dense_model_args_travel_to_construct(tmp_path):
    """A target trained with non-default --model-arg values reloads by name, from the sizes its file names."""
    from slth.construction.target import load_target

    path = tmp_path / "gpt-small.pt"
    r = invoke("train-dense", *TINY_GPT, *TINY_DATA, *COMMON, "-o", path)
    assert r.exit_code == 0, r.output
    saved = torch.load(path, weights_only=True)
    rebuilt = build_model("gpt", **saved["model_kwargs"])
    rebuilt.load_state_dict(saved["state_dict"])
    target = load_target(path, "gpt")  # shape, classes and dims come from the file
    idx = load_pystdlib_chars(16, 8000, 2).x_test[:4]
    with torch.no_grad():
        assert torch.equal(target(idx), rebuilt.eval()(idx))
