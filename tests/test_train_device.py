"""slth.train on devices and precisions, the torch path every method takes off the CPU, and fit()."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from slth.train import TrainConfig, fit, runtime, train

torch.set_num_threads(1)
TINY = dict(model="fc", data="digits", hidden=(16,), epochs=2, batch_size=128, density=0.4, seed=3)


def _cli(args):
    from slth.cli import app

    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("field,value,message", [
    ("device", "tpu", "unknown device"), ("device", "cuda:x", "unknown device"), ("precision", "fp8", "precision"),
    ("workers", -1, "workers"), ("image_size", 32, "image-folder"),
])
def test_bad_runtime_config_is_a_clear_error(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**TINY, field: value})


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        TrainConfig(**TINY, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        runtime.check_precision(torch.device("cpu"), "fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available"):
        train(TrainConfig(**TINY, device="cuda"), tmp_path, quiet=True)
    result = _cli(["train", "--hidden", "16", "--epochs", "1", "--device", "cuda:1", "--quiet",
                   "--out", str(tmp_path / "cli")])
    assert result.exit_code == 2 and "CUDA is not available" in result.output
    assert runtime.resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("method", ["dense", "edge-popup", "bernoulli", "biprop", "gem-miner", "l0-gauss", "l0-hc"])
def test_cuda_training_rebuilds_on_the_cpu(tmp_path, method, precision):
    run = train(TrainConfig(method=method, **TINY, device="cuda", precision=precision), tmp_path, quiet=True)
    assert run.metrics["device"].startswith("cuda") and run.metrics["finished"]
    if method != "dense":
        _ticket_matches(tmp_path, run)


def _ticket_matches(out, run):
    from slth.data import load_dataset
    from slth.supermask import from_ticket, materialize
    from slth.train import evaluate

    data = load_dataset("digits")
    rebuilt = from_ticket(out / "ticket.slth")
    x = (data.x_test - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(data.std).view(1, -1, 1, 1)
    if run.metrics["precision"] == "fp32":
        assert evaluate(rebuilt, x, data.y_test) == run.metrics["test_accuracy"]
    trained = materialize(run.model.cpu())
    for key, value in trained.state_dict().items():
        assert torch.equal(value, rebuilt.state_dict()[key]), key


def test_bf16_on_cpu_trains(tmp_path):
    run = train(TrainConfig(method="edge-popup", **{**TINY, "hidden": (64,), "epochs": 3}, device="cpu",
                            precision="bf16"), tmp_path, quiet=True)
    assert run.metrics["precision"] == "bf16" and run.metrics["device"] == "cpu"
    assert run.metrics["test_accuracy"] > 0.6


@pytest.mark.parametrize("method", ["edge-popup", "bernoulli", "biprop", "iterand", "gem-miner", "l0-gauss", "l0-hc"])
def test_torch_path_of_every_method_trains_and_rebuilds(tmp_path, monkeypatch, method):
    """The path a GPU takes: the numba kernels refused, every method computes with torch operations."""
    import importlib

    for name in ("core", "methods", "apply"):
        module = importlib.import_module(f"slth.supermask.{name}")
        if hasattr(module, "_numba_ok"):
            monkeypatch.setattr(module, "_numba_ok", lambda *tensors: False)
    own = {"rerand_period": 3} if method == "iterand" else {}
    run = train(TrainConfig(method=method, **own, **TINY), tmp_path, quiet=True)
    assert run.metrics["finished"] and run.metrics["test_accuracy"] > 0.2
    _ticket_matches(tmp_path, run)


def test_resume_ignores_device_and_workers_but_not_precision(tmp_path):
    config = TrainConfig(method="edge-popup", **TINY, device="cpu")
    full = train(config, tmp_path / "full", quiet=True)
    train(config, tmp_path / "part", quiet=True, stop_after=1)
    with pytest.raises(ValueError, match="precision"):
        train(TrainConfig(method="edge-popup", **TINY, precision="bf16"), tmp_path / "part", resume=True, quiet=True)
    resumed = train(TrainConfig(method="edge-popup", **TINY, device="auto", workers=2), tmp_path / "part",
                    resume=True, quiet=True)
    assert resumed.metrics["train_loss"] == full.metrics["train_loss"]
    on_disk = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert on_disk["world_size"] == 1 and on_disk["backend"] is None and on_disk["device"] == "cpu"


def test_checkpoint_from_before_the_runtime_fields_resumes(tmp_path):
    config = TrainConfig(method="dense", **TINY)
    full = train(config, tmp_path / "full", quiet=True)
    train(config, tmp_path / "part", quiet=True, stop_after=1)
    ckpt = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    for key in ("device", "precision", "workers", "image_size"):
        del ckpt["config"][key]
    torch.save(ckpt, tmp_path / "part" / "checkpoint.pt")
    assert train(config, tmp_path / "part", resume=True, quiet=True).metrics["train_loss"] == full.metrics["train_loss"]


def _digits_loaders(batch_size=64):
    from torch.utils.data import DataLoader, TensorDataset

    from slth.data import load_dataset

    data = load_dataset("digits")
    g = torch.Generator().manual_seed(0)
    train_loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch_size, shuffle=True,
                              generator=g)
    return train_loader, DataLoader(TensorDataset(data.x_test, data.y_test), batch_size=500)


def test_fit_refuses_bad_input_before_it_trains_or_writes(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    train_loader, test_loader = _digits_loaders()
    config, out = TrainConfig(method="dense", epochs=1), tmp_path / "run"
    with pytest.raises(ValueError, match="resume needs an out directory"):  # not a silent fresh start
        fit(model, train_loader, test_loader, config, resume=True)
    with pytest.raises(ValueError, match=r"fit needs a train_loader with a length \(the cosine schedule"):
        fit(model, (batch for batch in train_loader), test_loader, config, out=out)
    with pytest.raises(ValueError, match="fit: train_loader yields no batches"):
        fit(model, [], test_loader, config, out=out)
    with pytest.raises(ValueError, match=r"the model has no trainable parameters \(requires_grad\)"):
        fit(model.requires_grad_(False), train_loader, test_loader, config, out=out)
    assert not out.exists()


def test_mps_without_mps_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    with pytest.raises(ValueError, match="device 'mps' requested, but this torch has no usable MPS backend"):
        runtime.resolve_device("mps")


def test_a_cuda_index_the_machine_lacks_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device cuda:3 requested, but this machine has 1 CUDA device\(s\)"):
        runtime.resolve_device("cuda:3")


def test_a_torchrun_variable_that_is_not_an_integer_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="environment variable WORLD_SIZE='two' is not an integer"):
        runtime.setup("cpu")


def test_torchrun_without_torch_distributed_is_a_clear_error(monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_available", lambda: False)
    with pytest.raises(ValueError, match="WORLD_SIZE=2, but this torch has no torch.distributed"):
        runtime.setup("cpu")


def test_torchrun_on_mps_is_refused_before_a_process_group_starts(monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("a process group was started"))
    with pytest.raises(ValueError, match="several processes on MPS are not supported; use --device cpu under torchrun"):
        runtime.setup("mps")


def test_fit_trains_a_dense_sequential(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    train_loader, test_loader = _digits_loaders()
    run = fit(model, train_loader, test_loader, TrainConfig(method="dense", epochs=3, lr=0.1), out=tmp_path)
    assert run.metrics["model"] == "Sequential" and run.metrics["data"] == "loader"
    assert run.metrics["test_accuracy"] > 0.85 and run.metrics["finished"]
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs_done"] == 3
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "ticket.slth").exists()


def test_fit_trains_a_supermask_and_resumes(tmp_path):
    from slth.supermask import SupermaskConfig, apply_supermask

    def model():
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64, bias=False), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 10, bias=False))
        return apply_supermask(net, SupermaskConfig("edge-popup", density=0.5), seed=0)

    config = TrainConfig(method="edge-popup", epochs=2)
    full = fit(model(), *_digits_loaders(), config, out=tmp_path / "full")  # method inferred: edge-popup
    assert full.metrics["method"] == "edge-popup" and full.metrics["kept_params"] == 32 * 64 + 320
    assert full.metrics["trainable_params"] == 64 * 64 + 640
    assert full.metrics["test_accuracy"] > 0.5
    fit(model(), *_digits_loaders(), config, out=tmp_path / "part", stop_after=1)
    resumed = fit(model(), *_digits_loaders(), config, out=tmp_path / "part", resume=True)
    assert resumed.metrics["epochs_done"] == 2 and resumed.metrics["train_loss"][0] == full.metrics["train_loss"][0]
    assert fit(model(), *_digits_loaders(), out=None).metrics["method"] == "edge-popup"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_iterand_trains_on_cuda_and_rebuilds_on_the_cpu(tmp_path):
    # the trainer used to refuse IteRand off the CPU (its re-draws were CPU tensors); its probe now passes
    run = train(TrainConfig(method="iterand", rerand_period=3, **TINY, device="cuda"), tmp_path, quiet=True)
    assert run.metrics["device"].startswith("cuda") and run.metrics["finished"]
    _ticket_matches(tmp_path, run)


def test_device_probe_refuses_a_hook_that_fails_there(monkeypatch):
    # the probe's logic, on the CPU: it runs IteRand's hook once on a 2x2 layer and turns a failure into a
    # clear refusal (CPU runs skip the probe; a fake device type stands for a GPU)
    from slth.supermask import SupermaskConfig, build
    from slth.supermask.methods import IteRand
    from slth.train.loop import _check_device_hooks

    model = build("fc", (1, 4, 4), 10, seed=0, hidden=(8,), supermask=SupermaskConfig("iterand"))

    class Fake:
        type = "fake"

        def __str__(self):
            return "fake:0"

    calls = []

    def probed(self, step, weight):
        calls.append(tuple(weight.shape))

    monkeypatch.setattr(IteRand, "to", lambda self, device: self)
    monkeypatch.setattr(torch, "zeros", lambda *shape, device=None, **kw: torch.ones(*shape, **kw) * 0)
    monkeypatch.setattr(IteRand, "after_step", probed)
    _check_device_hooks(model, Fake())
    assert calls == [(2, 2)]

    def broken(self, step, weight):
        raise RuntimeError("Expected all tensors to be on the same device")

    monkeypatch.setattr(IteRand, "after_step", broken)
    with pytest.raises(NotImplementedError, match="iterand cannot train on fake:0"):
        _check_device_hooks(model, Fake())


def _gpu_benchmark():
    from slth.bench import train_gpu

    return train_gpu


def test_gpu_benchmark_runs_its_loop_on_the_cpu(tmp_path, capsys):
    """``slth bench train-gpu``'s loop, dry-run on the CPU: every (model, precision, method) timed,
    the table printed, the record written."""
    out = tmp_path / "gpu.json"
    args = ["--device", "cpu", "--models", "fc,vit", "--methods", "dense,edge-popup,bernoulli", "--precisions",
            "fp32,bf16", "--steps", "1", "--warmup", "1", "--repeats", "1", "--batch-size", "8", "--out", str(out)]
    assert _gpu_benchmark().main(args) == 0
    record = json.loads(out.read_text())
    rows = {(r["model"], r["precision"], r["method"]): r for r in record["rows"]}
    assert set(rows) == {(m, p, k) for m in ("fc", "vit") for p in ("fp32", "bf16")
                         for k in ("dense", "edge-popup", "bernoulli")}
    assert all(r["steps_per_s"] > 0 for r in rows.values())
    assert record["device"].startswith("cpu")
    assert "| vit | bf16 | edge-popup |" in capsys.readouterr().out


def test_gpu_benchmark_refuses_an_unknown_device_and_says_when_there_is_no_gpu(capsys):
    bench = _gpu_benchmark()
    with pytest.raises(SystemExit, match="--device must be"):
        bench.main(["--device", "meta"])
    if not torch.cuda.is_available():
        assert bench.main([]) == 0
        assert "no CUDA device" in capsys.readouterr().out
