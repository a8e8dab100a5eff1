"""slth train under torchrun: 2 CPU processes (gloo) reach the one-process result, write one ticket, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from slth.train import TrainConfig, train

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--model", "fc", "--data", "digits", "--hidden", "64", "--batch-size", "64", "--seed", "2", "--device", "cpu",
        "--quiet"]


def _torchrun(args: list[str], nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_two_processes_match_one_and_resume(tmp_path):
    torch.set_num_threads(1)
    one = train(TrainConfig(method="bernoulli", model="fc", data="digits", hidden=(64,), batch_size=64, seed=2,
                            epochs=3, device="cpu"), tmp_path / "one", quiet=True)

    full = _torchrun(["-m", "slth", "train", "--method", "bernoulli", "--epochs", "3", *ARGS,
                      "--out", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr[-3000:]
    assert full.stdout.count("test accuracy") == 1  # one summary line, from rank 0
    m = _metrics(tmp_path / "full")
    assert (m["world_size"], m["backend"], m["device"]) == (2, "gloo", "cpu") and m["finished"]
    assert abs(m["test_accuracy"] - one.metrics["test_accuracy"]) <= 0.01, (m, one.metrics["test_accuracy"])
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["checkpoint.pt", "metrics.json", "ticket.slth"]

    # frozen weights never synchronised or changed: the checkpoint's equal the seeded draw
    ckpt = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    from slth.supermask import build

    supermask = TrainConfig(method="bernoulli").supermask_config()
    rebuilt = build("fc", (1, 8, 8), 10, seed=2, hidden=[64], supermask=supermask, init="signed-constant").state_dict()
    originals = [k for k in rebuilt if k.endswith("original")]
    assert originals and all(torch.equal(ckpt["model"][k], rebuilt[k]) for k in originals)

    # interrupted after epoch 1 (a driver calling train(..., stop_after=1) under torchrun), then resumed
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        from slth.train import TrainConfig, train
        train(TrainConfig(method="bernoulli", model="fc", data="digits", hidden=(64,), batch_size=64, seed=2,
                          epochs=3, device="cpu"), {str(tmp_path / "part")!r}, quiet=True, stop_after=1)
    """))
    part = _torchrun([str(driver)])
    assert part.returncode == 0, part.stderr[-3000:]
    assert _metrics(tmp_path / "part")["epochs_done"] == 1
    resumed = _torchrun(["-m", "slth", "train", "--method", "bernoulli", "--epochs", "3", *ARGS,
                         "--out", str(tmp_path / "part"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    r = _metrics(tmp_path / "part")
    assert r["finished"] and r["test_accuracy_per_epoch"] == m["test_accuracy_per_epoch"]
    assert r["train_loss"] == m["train_loss"]  # exact: same processes, same arithmetic


def test_global_batch_must_split_evenly(tmp_path):
    result = _torchrun(["-m", "slth", "train", "--method", "edge-popup", "--epochs", "1", "--hidden", "16",
                        "--batch-size", "63", "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")])
    assert result.returncode != 0
    assert "must be divisible by the number of processes 2" in result.stdout + result.stderr


def test_two_processes_stream_an_image_folder_with_batchnorm(tmp_path):
    from test_data_streamed import make_image_folder

    make_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    result = _torchrun(["-m", "slth", "train", "--method", "iterand", "--model", "resnet20", "--width", "0.25",
                        "--data", "image-folder", "--data-dir", str(tmp_path / "data"), "--image-size", "16",
                        "--workers", "1", "--batch-size", "8", "--epochs", "2", "--rerand-period", "1",
                        "--device", "cpu", "--quiet", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    m = _metrics(out)
    assert m["finished"] and m["world_size"] == 2 and len(m["test_accuracy_per_epoch"]) == 2
    from slth.supermask import from_ticket

    assert from_ticket(out / "ticket.slth")(torch.zeros(2, 3, 16, 16)).shape == (2, 3)


@pytest.mark.parametrize("method", ["l0-gauss", "l0-hc"])
def test_relaxed_gates_train_under_torchrun(tmp_path, method):
    # every rank draws the same noise (the layer's seed and draw count) and counts the same open gates, so the
    # penalty's switch agrees across ranks and the averaged gradient is the one-process gradient of the batch
    result = _torchrun(["-m", "slth", "train", "--method", method, "--epochs", "1", "--density", "0.3", *ARGS,
                        "--out", str(tmp_path / "run")])
    assert result.returncode == 0, result.stderr[-3000:]
    m = _metrics(tmp_path / "run")
    assert m["world_size"] == 2 and m["finished"] and m["config"]["method"] == method
    from slth.supermask import from_ticket, kept_count

    rebuilt = from_ticket(tmp_path / "run" / "ticket.slth")
    kept = [int((layer.weight != 0).sum()) for layer in rebuilt.modules() if isinstance(layer, torch.nn.Linear)]
    assert kept == [kept_count(64 * 64, 0.3), kept_count(64 * 10, 0.3)]


def test_two_processes_train_in_a_sparse_source(tmp_path):
    """slth train's generated --source options under torchrun: every process draws the same pattern from the
    seed (nothing synchronises it), the ticket rebuilds (its masks checked against the re-drawn pattern) and
    the accuracy is the one-process run's."""
    torch.set_num_threads(1)
    source = {"source": "erdos-renyi", "source_density": 0.5, "source_distribution": "erk"}
    config = TrainConfig(method="edge-popup", model="fc", data="digits", hidden=(64,), batch_size=64, seed=2,
                         epochs=2, device="cpu", density=0.3, **source)
    one = train(config, tmp_path / "one", quiet=True)
    run = _torchrun(["-m", "slth", "train", "--method", "edge-popup", "--epochs", "2", "--density", "0.3",
                     "--source", "erdos-renyi", "--source-density", "0.5", "--source-distribution", "erk", *ARGS,
                     "--out", str(tmp_path / "two")])
    assert run.returncode == 0, run.stderr[-3000:]
    m = _metrics(tmp_path / "two")
    assert m["world_size"] == 2 and m["config"]["source"] == "erdos-renyi"
    assert abs(m["test_accuracy"] - one.metrics["test_accuracy"]) <= 0.02, (m, one.metrics["test_accuracy"])
    from slth.supermask import from_ticket

    rebuilt = from_ticket(tmp_path / "two" / "ticket.slth")  # refuses masks outside the re-drawn source
    from slth.supermask import build
    from slth.supermask.apply import supermask_layers

    model = build("fc", (1, 8, 8), 10, seed=2, hidden=[64], supermask=config.resolved().supermask_config())
    modules = dict(rebuilt.named_modules())
    for key, _, p in supermask_layers(model):
        weight = modules[key].weight
        assert not weight[p.absent].any() and int((weight != 0).sum()) <= p.k
