"""slth.train and the CLI: resume is exact, metrics are written, bad arguments give clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from slth.train import TrainConfig, random_crop_flip, train

torch.set_num_threads(1)
TINY = dict(model="fc", data="digits", hidden=(16,), epochs=2, batch_size=128, density=0.4, seed=3)


def _cli(args):
    from slth.cli import app

    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("method", ["edge-popup", "bernoulli", "iterand", "gem-miner", "dense"])
def test_resume_equals_uninterrupted_run(tmp_path, method):
    config = TrainConfig(method=method, **({"rerand_period": 5} if method == "iterand" else {}), **TINY)
    full = train(config, tmp_path / "full", quiet=True)
    part = train(config, tmp_path / "part", quiet=True, stop_after=1)
    assert part.metrics["epochs_done"] == 1 and not part.metrics["finished"]
    assert not json.loads((tmp_path / "part" / "metrics.json").read_text())["finished"]
    resumed = train(config, tmp_path / "part", resume=True, quiet=True)
    assert resumed.metrics["finished"] and resumed.metrics["train_loss"] == full.metrics["train_loss"]
    assert resumed.metrics["test_accuracy_per_epoch"] == full.metrics["test_accuracy_per_epoch"]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        if not key.endswith("_extra_state"):
            assert torch.equal(a[key], b[key]), key
    if method != "dense":
        from slth import ticketfile

        t_full = ticketfile.load(tmp_path / "full" / "ticket.slth")
        t_part = ticketfile.load(tmp_path / "part" / "ticket.slth")
        assert t_full.config == t_part.config and t_full.masks.keys() == t_part.masks.keys()
        assert all((t_full.masks[k] == t_part.masks[k]).all() for k in t_full.masks)


def test_metrics_and_learning(tmp_path):
    train(TrainConfig(method="edge-popup", **{**TINY, "epochs": 3, "hidden": (64,)}), tmp_path, quiet=True)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("test_accuracy", "train_loss", "density", "params", "seconds", "kept_params"):
        assert key in on_disk
    assert len(on_disk["train_loss"]) == 3 and on_disk["finished"]
    assert on_disk["params"] == 64 * 64 + 64 * 10
    assert on_disk["kept_params"] == round(0.4 * 64 * 64) + round(0.4 * 640)
    assert on_disk["test_accuracy"] > 0.6  # a random 40 % subnetwork is at chance (~0.1)
    assert on_disk["train_loss"][-1] < on_disk["train_loss"][0]


def test_existing_run_needs_resume_and_matching_config(tmp_path):
    config = TrainConfig(method="dense", **{**TINY, "epochs": 1})
    train(config, tmp_path, quiet=True)
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, tmp_path, quiet=True)
    with pytest.raises(ValueError, match="seed"):
        train(TrainConfig(method="dense", **{**TINY, "epochs": 1, "seed": 9}), tmp_path, resume=True, quiet=True)


@pytest.mark.parametrize("field,value,message", [
    ("method", "magnitude", "edge-popup"), ("model", "vgg", "unknown model 'vgg'; valid names: .*lenet5"),
    ("data", "imagenet", "unknown dataset 'imagenet'; valid names: .*fashion-mnist"),
    ("density", 0.0, "density"), ("density", 1.5, "density"), ("density", -0.2, "density"),
    ("width", 0, "width"), ("epochs", 0, "epochs"), ("init", "xavier", "signed-constant"),
    ("density", True, r"density \(kept fraction\) must lie in \(0, 1\], got True"),  # a bool is not 1.0
    ("hidden", (8,), "hidden sizes apply to the fc model only"),
    ("rerand_period", 0, "rerand_period .* got 0"), ("score_l2", -0.5, "score_l2 .* got -0.5"),
])
def test_bad_config_is_a_clear_error(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**TINY, "method": "edge-popup", **({"model": "vit"} if field == "hidden" else {}), field: value})


@pytest.mark.parametrize("density", [0.0, 1.5, True])
def test_dense_checks_the_density_it_records(density):
    with pytest.raises(ValueError, match=r"density \(kept fraction\) must lie in \(0, 1\]"):
        TrainConfig(**{**TINY, "method": "dense", "density": density})


def test_image_size_below_8_is_refused():
    with pytest.raises(ValueError, match="image_size must be >= 8, got 2"):
        TrainConfig(method="edge-popup", model="conv4", data="image-folder", data_dir="x", image_size=2)


def test_from_dict_refuses_unknown_fields():
    d = TrainConfig(**TINY).to_dict()
    assert TrainConfig.from_dict(d) == TrainConfig(**TINY)
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields: \['colour'\]"):
        TrainConfig.from_dict({**d, "colour": "red"})


@pytest.mark.parametrize("args,message", [
    (["--method", "magnitude"], "unknown method 'magnitude'"),
    (["--model", "vgg"], "unknown model 'vgg'"),
    (["--data", "imagenet"], "unknown dataset 'imagenet'"),
    (["--density", "0"], "density"),
    (["--density", "1.2"], "density"),
    (["--data", "mnist"], "needs data_dir"),
    (["--method", "gem-miner", "--score-l2", "-0.5"], "score_l2 (the score penalty's lambda) must be a finite number"),
    (["--method", "iterand", "--rerand-period", "0"], "rerand_period (optimizer steps between re-draws) must be an"),
    (["--method", "iterand", "--rerand-prob", "2"], "rerand_prob (probability of a re-draw) must lie in [0, 1], got 2"),
    (["--data", "pystdlib-chars", "--data-arg", "context=abc"], "option context='abc' of data set pystdlib-chars"),
])
def test_cli_bad_arguments(tmp_path, args, message):
    result = _cli(["train", "--out", str(tmp_path / "run"), "--quiet", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_train_writes_metrics_and_ticket(tmp_path):
    out = tmp_path / "run"
    result = _cli(["train", "--method", "biprop", "--model", "fc", "--data", "digits", "--density", "0.5",
                   "--hidden", "16", "--epochs", "1", "--seed", "1", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["density"] == pytest.approx(0.5, abs=1e-3) and metrics["method"] == "biprop"
    from slth.provenance import machine

    assert metrics["machine"] == machine() and "git_commit" in metrics  # one provenance for every record
    from slth.supermask import from_ticket

    assert from_ticket(out / "ticket.slth")(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_cli_train_logs_one_line_per_epoch_when_not_on_a_terminal(tmp_path):
    result = _cli(["train", "--method", "edge-popup", "--model", "fc", "--data", "digits", "--hidden", "16",
                   "--epochs", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "train loss" in line]
    assert [line.split(":")[0] for line in lines] == ["edge-popup fc epoch 1/2", "edge-popup fc epoch 2/2"]
    assert result.output.count("epoch 1/2") == 1  # the log line only: no final frame of a progress bar


def test_train_logs_each_epoch_once_to_a_file(tmp_path):
    """stdout redirected to a file (nohup, CI): each epoch is one line, not a line and then a bar's frame."""
    log = tmp_path / "log.txt"
    with log.open("w") as f:
        done = subprocess.run([sys.executable, "-m", "slth", "train", "--data", "digits", "--hidden", "16",
                               "--epochs", "2", "--threads", "1", "--out", str(tmp_path / "run")],
                              stdout=f, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    assert text.count("epoch 1/2") == 1 and text.count("epoch 2/2") == 1, text
    assert "━" not in text, text


def test_random_crop_flip_is_a_crop_of_the_padded_image():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    y = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert y.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        found = any(torch.equal(y[i], c) or torch.equal(y[i], c.flip(-1))
                    for r in range(5) for s in range(5) for c in [padded[i, :, r:r + 6, s:s + 6]])
        assert found


def test_width_sweep_writes_table_and_plot(tmp_path):
    from slth.experiments.width_sweep import width_sweep

    base = TrainConfig(method="dense", **{**TINY, "epochs": 1, "hidden": (8,)})
    result = width_sweep(base, ["edge-popup"], [1, 2], tmp_path, quiet=True, command="slth experiment width-sweep")
    assert [(r["method"], r["width"]) for r in result["runs"]] == [
        ("dense", 1.0), ("edge-popup", 1.0), ("edge-popup", 2.0)]
    assert result["command"] == "slth experiment width-sweep" and result["date"]
    wide = next(r for r in result["runs"] if r["method"] == "edge-popup" and r["k"] == 2)
    assert wide["params"] == 64 * 16 + 16 * 10  # width 2 doubles the hidden layer
    assert (tmp_path / "width_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "| edge-popup |" in (tmp_path / "width_sweep.md").read_text()


def test_step_benchmark_reports_both_steps():
    from slth.bench.supermask import step_times

    r = step_times("fc", "iterand", input_shape=(1, 8, 8), batch_size=16, steps=2, warmup=1, repeats=1, batches=3)
    assert r["dense_step_s"] > 0 and r["supermask_step_s"] > 0
    assert r["ratio"] == pytest.approx(r["supermask_step_s"] / r["dense_step_s"])
    assert r["batches"] == 3
    with pytest.raises(ValueError, match="batches must be at least 1"):
        step_times("fc", "iterand", input_shape=(1, 8, 8), batch_size=16, steps=1, warmup=1, repeats=1, batches=0)
    with pytest.raises(ValueError, match="the peer implementation is edge-popup's; got method 'biprop'"):
        step_times("fc", "biprop", input_shape=(1, 8, 8), batch_size=16, steps=1, warmup=1, repeats=1, peer=True)


def test_cifar10_training_with_augmentation(tmp_path):
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    data_dir = tmp_path / "cifar"
    data_dir.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"labels": rng.integers(0, 10, 8).tolist(), b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8)}
        (data_dir / name).write_bytes(pickle.dumps(batch, protocol=2))
    config = TrainConfig(method="iterand", model="resnet20", data="cifar10", data_dir=str(data_dir), width=0.25,
                         epochs=1, batch_size=16, density=0.5, rerand_period=1)
    run = train(config, tmp_path / "run", quiet=True)
    assert run.metrics["config"]["augment"] is True and run.metrics["finished"]
    assert (tmp_path / "run" / "ticket.slth").exists()


@pytest.mark.parametrize("model", ["fc", "lenet5"])
def test_peer_edge_popup_computes_what_slth_edge_popup_computes(model):
    # the step benchmark's reference implementation (hidden-networks' GetSubnet) must time the same training
    import torch
    import torch.nn.functional as F

    from slth.bench.supermask import peer_edge_popup
    from slth.supermask import SupermaskConfig, build

    cfg = SupermaskConfig("edge-popup", density=0.5)
    ours, peer = (build(model, (1, 28, 28), 10, seed=3, supermask=cfg).train() for _ in range(2))
    peer = peer_edge_popup(peer)
    assert not any(".parametrizations." in n for n, _ in peer.named_parameters())
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    opts = [torch.optim.SGD([p for p in n.parameters() if p.requires_grad], lr=0.1, momentum=0.9) for n in (ours, peer)]
    for _ in range(3):
        outs = []
        for net, opt in zip((ours, peer), opts):
            out = net(x)
            opt.zero_grad()
            F.cross_entropy(out, y).backward()
            opt.step()
            outs.append(out.detach())
        torch.testing.assert_close(outs[0], outs[1])
    with pytest.raises(TypeError, match="edge-popup"):
        peer_edge_popup(build("fc", (1, 8, 8), 10, seed=0, supermask=SupermaskConfig("biprop")))


def test_step_benchmark_times_the_peer_implementation():
    from slth.bench.supermask import step_times

    r = step_times("fc", "edge-popup", input_shape=(1, 8, 8), batch_size=16, steps=2, warmup=1, repeats=1, peer=True)
    assert r["peer_step_s"] > 0 and r["speedup"] == pytest.approx(r["peer_step_s"] / r["supermask_step_s"])
    with pytest.raises(ValueError, match="edge-popup"):
        step_times("fc", "biprop", input_shape=(1, 8, 8), batch_size=16, steps=1, warmup=1, repeats=1, peer=True)


def test_model_args_are_checked_converted_and_part_of_the_identity():
    cfg = TrainConfig(model="vit", model_args={"patch": "2", "depth": 1, "mlp_ratio": "1.5"})
    assert cfg.model_args == (("depth", 1), ("mlp_ratio", 1.5), ("patch", 2))  # sorted, typed as the defaults
    assert TrainConfig(model="vit", model_args=[("patch", 2), ("mlp_ratio", 1.5), ("depth", "1")]) == cfg
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.identity()["model_args"] == [["depth", 1], ["mlp_ratio", 1.5], ["patch", 2]]
    assert TrainConfig(model="vit").model_args == ()
    for model, args, message in [
        ("vit", {"patches": 2}, "unknown model argument 'patches' for vit; its arguments: depth, dim, heads"),
        ("fc", {"depth": 2}, "unknown model argument 'depth' for fc; its arguments: none"),
        ("vit", {"width": 2}, "'width' of vit is set by its own option"),
        ("fc", {"hidden": "8"}, "'hidden' of fc is set by its own option"),
        ("vit", {"patch": "2.5"}, "patch='2.5' of vit: expected int"),
        ("vit", {"patch": True}, "expected int"),
        ("vit", [("patch", 2), ("patch", 4)], "'patch' given twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(model=model, model_args=args)


def test_vit_trains_with_its_model_args_and_the_ticket_rebuilds_them(tmp_path):
    from slth.supermask import from_ticket

    cfg = TrainConfig(model="vit", data="digits", epochs=1, batch_size=256, seed=1, model_args={"patch": 2, "depth": 1})
    run = train(cfg, tmp_path, quiet=True)
    assert run.model.patch.weight.shape[-2:] == (2, 2) and len(run.model.encoder.layers) == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["config"]["model_args"] == [["depth", 1], ["patch", 2]]
    rebuilt = from_ticket(tmp_path / "ticket.slth")
    assert rebuilt.patch.weight.shape[-2:] == (2, 2) and len(rebuilt.encoder.layers) == 1
    with pytest.raises(ValueError, match="model_args"):
        train(TrainConfig(**{**cfg.to_dict(), "model_args": {"patch": 4, "depth": 1}}), tmp_path, resume=True,
              quiet=True)


def test_cli_model_arg(tmp_path):
    bad = _cli(["train", "--model", "vit", "--model-arg", "nope=1", "--epochs", "1", "--out", str(tmp_path / "a")])
    assert bad.exit_code == 2 and "unknown model argument 'nope' for vit" in bad.output, bad.output
    bad = _cli(["train", "--model", "vit", "--model-arg", "patch", "--epochs", "1", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output, bad.output
    good = _cli(["train", "--model", "vit", "--model-arg", "patch=2", "--model-arg", "depth=1", "--epochs", "1",
                 "--batch-size", "256", "--quiet", "--out", str(tmp_path / "c")])
    assert good.exit_code == 0, good.output
    config = json.loads((tmp_path / "c" / "metrics.json").read_text())["config"]
    assert config["model"] == "vit" and config["model_args"] == [["depth", 1], ["patch", 2]]
