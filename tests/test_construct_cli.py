"""The construction CLI end to end on digits: train-dense -> construct -> evaluate (+ TorchScript targets)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from slth.cli import app
from slth.construction import Ticket, mlp

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_train_construct_evaluate(tmp_path):
    model = tmp_path / "model.pt"
    r = invoke("train-dense", "--arch", "64-16-10", "--data", "digits", "--epochs", "10", "-o", model)
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output
    ticket_path = tmp_path / "t.slth"
    r = invoke("construct", model, "--arch", "64-16-10", "--eps", "0.01", "--nonnegative-input", "-o", ticket_path)
    assert r.exit_code == 0, r.output
    assert "bits per target weight" in r.output
    ticket = Ticket.load(ticket_path)
    assert ticket.config["eps"] == 0.01 and ticket.config["nonnegative_input"]
    report = tmp_path / "report.json"
    r = invoke("evaluate", ticket_path, "--data", "digits", "--target", model, "--arch", "64-16-10", "--json", report)
    assert r.exit_code == 0, r.output
    rec = json.loads(report.read_text())
    assert rec["top1_agreement"] > 0.95
    assert abs(rec["ticket_accuracy"] - rec["target_accuracy"]) < 0.05
    assert rec["certified_bound"] >= rec["max_logit_diff"]
    assert max(rec["max_weight_error_per_layer"]) <= 0.01
    # a smaller input box gives a smaller certified bound
    small = tmp_path / "small.json"
    r = invoke("evaluate", ticket_path, "--target", model, "--arch", "64-16-10", "--box", "0", "0.5", "--json", small)
    assert r.exit_code == 0, r.output
    assert json.loads(small.read_text())["certified_bound"] < rec["certified_bound"]


def test_construct_torchscript_target(tmp_path):
    net = mlp([64, 8, 10])
    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    out = tmp_path / "t.slth"
    r = invoke("construct", path, "--eps", "0.05", "-o", out)
    assert r.exit_code == 0, r.output
    with torch.no_grad():
        x = torch.rand(16, 64)
        assert (Ticket.load(out).to_module()(x) - net(x)).abs().max() < 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["train-dense", "--arch", "64-x-10", "-o", "m.pt"], "784-500-10"),
        (["train-dense", "--arch", "784-16-10", "--data", "digits", "-o", "m.pt"], "does not fit digits"),
        (["construct", "missing.pt", "--arch", "64-8-10", "-o", "t.slth"], "no such model file"),
    ],
)
def test_cli_errors_are_clear(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = invoke(*args)
    assert r.exit_code != 0
    text = r.output + str(r.exception)
    assert message in text, text
    assert not (tmp_path / "t.slth").exists() and not (tmp_path / "m.pt").exists()


def test_state_dict_of_wrong_shape_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(mlp([64, 8, 10], bias=False).state_dict(), path)
    r = invoke("construct", path, "--arch", "64-9-10", "-o", tmp_path / "t.slth")
    assert r.exit_code == 2 and "does not match --arch" in r.output
    r = invoke("construct", path, "-o", tmp_path / "t.slth")  # no --arch: must be TorchScript
    assert r.exit_code == 2 and "not a TorchScript module" in r.output
    assert not (tmp_path / "t.slth").exists()
