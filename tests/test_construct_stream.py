"""Streaming construction: chunks, workers, checkpoints, kill -9 / resume and the Ray backend give one ticket."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from slth.construction import Ticket, construct, mlp


def conv_net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4, 5))
    with torch.no_grad():
        net[1].running_var.uniform_(0.3, 2.0)
        net[1].running_mean.uniform_(-0.3, 0.3)
    return net.eval()


def test_chunking_does_not_change_the_ticket():
    net = conv_net()
    whole = construct(net, 0.02, seed=4, n=7)  # small n: many redraws, which must merge identically
    assert whole.stats["redraws"] > 0
    chunked = construct(net, 0.02, seed=4, n=7, chunk_instances=37)
    assert chunked.run["chunks"] > 3 * whole.run["chunks"]
    assert chunked.digest() == whole.digest()
    assert all(torch.equal(chunked.masks[k], whole.masks[k]) for k in whole.masks)
    assert (chunked.redraws == whole.redraws).all()


def test_workers_give_the_same_ticket():
    net = conv_net(1)
    one = construct(net, 0.01, seed=0, chunk_instances=200)
    two = construct(net, 0.01, seed=0, chunk_instances=200, workers=2)
    assert two.run["workers"] == 2 and two.run["computed"] == two.run["chunks"] > 4
    assert two.digest() == one.digest()


def test_workdir_resume_reuses_finished_chunks(tmp_path):
    net = conv_net(2)
    work = tmp_path / "work"
    first = construct(net, 0.01, seed=0, chunk_instances=150, workdir=str(work))
    files = sorted((work / "chunks").glob("*.npz"))
    assert len(files) == first.run["chunks"] > 4
    for f in files[1:3]:
        f.unlink()
    kept = {f.name: f.stat().st_mtime_ns for f in files if f.exists()}
    again = construct(net, 0.01, seed=0, chunk_instances=150, workdir=str(work), resume=True)
    assert (again.run["reused"], again.run["computed"]) == (len(files) - 2, 2)
    assert sorted(again.run["computed_names"]) == sorted(f.name[:-4] for f in files[1:3])
    assert {f: (work / "chunks" / f).stat().st_mtime_ns for f in kept} == kept  # finished chunks untouched
    assert again.digest() == first.digest()


def test_damaged_work_dir_files_are_refused_by_name(tmp_path):
    """A chunk that fails its checksum, has the wrong rows or cannot be read, and a damaged plan.json, each
    stop the resumed run with the file's name instead of building a wrong ticket."""
    import io

    import numpy as np

    net = conv_net(2)
    work = tmp_path / "work"
    construct(net, 0.01, seed=0, chunk_instances=150, workdir=str(work))
    files = sorted((work / "chunks").glob("*.npz"))
    original = files[0].read_bytes()

    def rewrite(**changes):
        with np.load(io.BytesIO(original), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays.update(changes)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        files[0].write_bytes(buf.getvalue())

    def resume():
        construct(net, 0.01, seed=0, chunk_instances=150, workdir=str(work), resume=True)

    with np.load(io.BytesIO(original), allow_pickle=False) as z:
        flipped = z["b_mask"].copy()
        shape = z["shape"].copy()
    flipped[0] ^= 1
    rewrite(b_mask=flipped)  # one mask bit changed, the stored checksum kept
    with pytest.raises(ValueError, match=f"{files[0].name} fails its checksum"):
        resume()
    shape[0] += 1
    from slth.construction.stream import _chunk_digest

    with np.load(io.BytesIO(original), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "sha256"}
    arrays["shape"] = shape
    rewrite(shape=shape, sha256=np.frombuffer(_chunk_digest(arrays), np.uint8))  # consistent, wrong rows
    with pytest.raises(ValueError, match="rows for it"):
        resume()
    files[0].write_bytes(original[:100])
    with pytest.raises(ValueError, match=f"{files[0].name} is unreadable"):
        resume()
    with np.load(io.BytesIO(original), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in ("sha256", "redraws")}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    files[0].write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=r"lacks \['redraws'\]"):
        resume()
    files[0].write_bytes(original)
    for padded in files:  # a chunk whose mask ends inside a byte: bits set past its last entry, checksum consistent
        with np.load(padded, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "sha256"}
        size = int(np.prod(arrays["shape"]))
        if size % 8:
            break
    assert size % 8, "the test needs a chunk whose mask ends inside a byte"
    kept = padded.read_bytes()
    arrays["b_mask"] = arrays["b_mask"].copy()
    arrays["b_mask"][(size + 7) // 8 - 1] = 0xFF
    buf = io.BytesIO()
    np.savez(buf, **arrays, sha256=np.frombuffer(_chunk_digest(arrays), np.uint8))
    padded.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=f"work dir chunk .*{padded.name}: packed mask of shape .* has bits set past"):
        resume()
    padded.write_bytes(kept)
    files[0].write_bytes(original)
    resume()  # the intact file is reused
    (work / "plan.json").write_text("{not json")
    with pytest.raises(ValueError, match="plan.json is damaged"):
        resume()


def _cli(*args):
    return [sys.executable, "-c", "from slth.cli import main; main()", *map(str, args)]


def test_kill_9_then_resume_gives_the_identical_ticket(tmp_path):
    torch.manual_seed(0)
    net = mlp([256, 400, 10], bias=True).eval()
    model = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(net), str(model))
    work, out = tmp_path / "work", tmp_path / "t.slth"
    args = ["construct", model, "-o", out, "--eps", "0.001", "--n", "16", "--workdir", work,
            "--chunk-instances", "3000"]
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = work / "chunks"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(chunks.glob("*.npz"))) < 6 and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {f.name: f.stat().st_mtime_ns for f in chunks.glob("*.npz")}
    assert len(finished) >= 6 and not out.exists(), "the run finished before it could be killed"
    r = subprocess.run(_cli(*args, "--resume"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(finished)} reused" in r.stdout
    assert {f: (chunks / f).stat().st_mtime_ns for f in finished} == finished  # no finished chunk redone
    assert not list(chunks.glob(".*.tmp"))
    resumed = Ticket.load(out)
    clean = construct(net, 0.001, n=16)
    assert resumed.digest() == clean.digest()
    assert clean.digest() in r.stdout.replace("\n", "")


def test_ray_backend_equals_local():
    ray = pytest.importorskip("ray")
    net = conv_net(3)
    local = construct(net, 0.01, seed=0, chunk_instances=200)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a local Ray cluster for this test
    try:
        distributed = construct(net, 0.01, seed=0, chunk_instances=200, backend="ray", workers=2)
    finally:
        ray.shutdown()
    assert distributed.run["backend"] == "ray" and distributed.run["computed"] == local.run["chunks"]
    assert distributed.digest() == local.digest()


def test_merging_chunks_that_do_not_cover_the_rows_once_is_refused():
    import numpy as np

    from slth.construction.build import LayerJob, merge_layer, solve_chunk
    from slth.construction.network import LayerLayout

    layout = LayerLayout(d_in=2, d_out=3, n=8, signed_input=True, bias=False, relu_after=False)
    job = LayerJob(0, layout, seed=0, scale=1.0, bias_scale=1.0, eps=0.1, method="pensia", sparse=False)
    w = np.random.default_rng(0).uniform(-1, 1, (3, 2))
    first, rest = solve_chunk(job, 0, 1, w[:1], None), solve_chunk(job, 1, 3, w[1:], None)
    assert merge_layer(job, [rest, first]).masks["b.weight"].shape == layout.b_shape  # any order
    for chunks in ([first], [rest], [first, first, rest], [first, rest, rest]):
        with pytest.raises(ValueError, match="chunks of layer 0 do not cover its 3 rows exactly once"):
            merge_layer(job, chunks)


def test_bad_backend_and_workers():
    net = conv_net()
    with pytest.raises(ValueError, match="unknown backend"):
        construct(net, 0.05, backend="spark")
    with pytest.raises(ValueError, match="workers"):
        construct(net, 0.05, workers=0)
    with pytest.raises(ValueError, match="chunk_instances"):
        construct(net, 0.05, chunk_instances=0)


def test_torch_search_path_gives_the_same_ticket():
    # the path a GPU runs (device="cuda"), exercised on the CPU: bit-identical to the numba kernel
    net = conv_net(4)
    numba_ticket = construct(net, 0.01, seed=0, sparse=False)
    torch_ticket = construct(net, 0.01, seed=0, sparse=False, device="cpu")
    assert torch_ticket.digest() == numba_ticket.digest()
    with pytest.raises(ValueError, match="sparse=False"):
        construct(net, 0.01, device="cpu")
    module = torch_ticket.to_module(device="cpu")
    assert all(p.device.type == "cpu" for p in module.parameters())


# -- refusals, each fails when its check is deleted (formerly tests/test_safety_construction.py) -----------------------


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()


def test_workdir_of_another_construction_is_refused(tmp_path):
    construct(_mlp(), 0.05, n=4, seed=0, workdir=str(tmp_path))
    with pytest.raises(ValueError, match=r"holds chunks of a different construction .*use a new --workdir"):
        construct(_mlp(), 0.05, n=4, seed=1, workdir=str(tmp_path), resume=True)


def test_workdir_with_chunks_needs_resume(tmp_path):
    first = construct(_mlp(), 0.05, n=4, seed=0, workdir=str(tmp_path))
    with pytest.raises(ValueError, match=r"already holds finished chunks; pass --resume"):
        construct(_mlp(), 0.05, n=4, seed=0, workdir=str(tmp_path))
    again = construct(_mlp(), 0.05, n=4, seed=0, workdir=str(tmp_path), resume=True)
    assert again.digest() == first.digest() and again.run["computed"] == 0


def test_ray_backend_without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"the ray backend needs Ray: pip install 'slth\[ray\]'"):
        construct(_mlp(), 0.05, n=4, backend="ray")
