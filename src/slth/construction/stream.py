"""Streaming construction: bounded chunks, checkpoints, worker processes and Ray.

A *chunk* is one block of output rows (units or channels) of one target layer. Its result
(:class:`~slth.construction.build.ChunkResult`) depends only on the seed, the layer's layout and the
target's rows -- every random value it uses is drawn for that block alone (``b_rows`` advances the
generator, redraws are keyed by their block) -- so chunks can run in any order, on any worker or
machine, and be merged into the same ticket. Memory per chunk is bounded by ``chunk_instances``
SubsetSum instances (their float64 values matrix), whatever the model size.

With a work directory every finished chunk is written atomically (``chunks/L<layer>_R<row>.npz``),
beside ``plan.json`` that fingerprints the target and every argument that changes a result. A run
with ``resume=True`` reuses every chunk file whose plan matches and computes only the rest; after a
``kill -9`` at most the chunks in flight are lost, and the merged ticket is bit-identical.

Backends: ``"local"`` (``workers`` processes on this machine; 1 = in this process) and ``"ray"``
(tasks on a Ray cluster, ``address`` as for ``ray.init``; Ray is an optional extra: ``pip install
slth[ray]``). The driver writes checkpoints and merges, so workers need no shared file system.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._hparams import CHUNK_INSTANCES
from .._io import atomic_write, atomic_write_text
from ..ticketfile import PackedMask
from .build import ChunkResult, LayerJob, solve_chunk
from .target import LinearSpec

BACKENDS = ("local", "ray")
PLAN_VERSION = 1


@dataclass(frozen=True)
class Chunk:
    layer: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"L{self.layer:04d}_R{self.start:07d}"


def plan_chunks(jobs: list[LayerJob], chunk_instances: int = CHUNK_INSTANCES) -> list[Chunk]:
    """Row blocks of every layer, each with at most ``chunk_instances`` instances (at least one row)."""
    chunks = []
    for job in jobs:
        lay = job.layout
        per_row = lay.d_in * lay.groups * lay.taps + (1 if lay.bias else 0)
        rows = max(1, chunk_instances // max(per_row, 1))
        chunks += [Chunk(job.index, r, min(r + rows, lay.d_out)) for r in range(0, lay.d_out, rows)]
    return chunks


def _task(job: LayerJob, start: int, stop: int, weight: np.ndarray, bias: np.ndarray | None) -> ChunkResult:
    return solve_chunk(job, start, stop, weight, bias)


def _chunk_args(jobs, specs, chunk: Chunk):
    spec = specs[chunk.layer]
    bias = None if spec.bias is None else spec.bias[chunk.start : chunk.stop]
    return jobs[chunk.layer], chunk.start, chunk.stop, spec.weight[chunk.start : chunk.stop], bias


# -- checkpoints -----------------------------------------------------------------------------------
def fingerprint(jobs: list[LayerJob], specs: list[LinearSpec], ops: list[dict], chunks: list[Chunk]) -> str:
    """SHA-256 of everything a chunk result depends on (target tensors, layouts, seed, eps, ...)."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": PLAN_VERSION, "ops": ops,
                         "jobs": [dict(vars(j), layout=j.layout.to_json(), device=None) for j in jobs],
                         "chunks": [(c.layer, c.start, c.stop) for c in chunks]}, sort_keys=True).encode())
    for spec in specs:
        h.update(np.ascontiguousarray(spec.weight, dtype=np.float64).tobytes())
        if spec.bias is not None:
            h.update(np.ascontiguousarray(spec.bias, dtype=np.float64).tobytes())
    return h.hexdigest()


class WorkDir:
    """A construction's checkpoint directory: ``plan.json`` + one ``.npz`` per finished chunk."""

    def __init__(self, path: str | os.PathLike, digest: str, *, resume: bool):
        self.path = Path(path)
        self.chunks = self.path / "chunks"
        self.chunks.mkdir(parents=True, exist_ok=True)
        plan = self.path / "plan.json"
        if plan.exists():
            try:
                recorded = json.loads(plan.read_text()).get("fingerprint")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
                raise ValueError(f"work dir {self.path}: plan.json is damaged ({exc}); use a new --workdir") from None
            if recorded != digest:
                raise ValueError(f"work dir {self.path} holds chunks of a different construction (target, seed or "
                                 "arguments differ); use a new --workdir")
            if not resume and any(self.chunks.glob("*.npz")):
                raise ValueError(f"work dir {self.path} already holds finished chunks; pass --resume to reuse them "
                                 "or use a new --workdir")
        else:
            atomic_write_text(plan, json.dumps({"fingerprint": digest, "version": PLAN_VERSION}) + "\n")
        for tmp in self.chunks.glob(".*.tmp"):  # left by a killed run (atomic writes never rename them)
            tmp.unlink(missing_ok=True)

    def file(self, chunk: Chunk) -> Path:
        return self.chunks / f"{chunk.name}.npz"

    def done(self, chunk: Chunk) -> bool:
        return self.file(chunk).exists()

    def save(self, chunk: Chunk, r: ChunkResult) -> None:
        arrays = {"b_mask": r.b_mask.bits, "shape": np.array(r.b_mask.shape, np.int64),
                  "weight_errors": r.weight_errors,
                  "bias_errors": r.bias_errors, "failures": np.array(r.failures, np.int64), "redraws": r.redraws}

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays, sha256=np.frombuffer(_chunk_digest(arrays), np.uint8))

        atomic_write(self.file(chunk), write)

    def load(self, chunk: Chunk) -> ChunkResult:
        """A finished chunk, checked: its checksum (files written before checksums existed have none) and its
        row count against the plan; a damaged file names itself and how to recover."""
        path = self.file(chunk)
        fix = "delete it (it is recomputed on --resume) or use a new --workdir"
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # a truncated or foreign file: zipfile, numpy and OS errors alike
            raise ValueError(f"work dir chunk {path} is unreadable ({type(exc).__name__}); {fix}") from None
        names = ("b_mask", "shape", "weight_errors", "bias_errors", "failures", "redraws")
        if not set(names) <= set(arrays):
            raise ValueError(f"work dir chunk {path} lacks {sorted(set(names) - set(arrays))}; {fix}")
        stored = arrays.pop("sha256", None)
        if stored is not None and stored.tobytes() != _chunk_digest(arrays):
            raise ValueError(f"work dir chunk {path} fails its checksum; {fix}")
        shape = tuple(int(v) for v in arrays["shape"])
        if not shape or shape[0] != chunk.stop - chunk.start or arrays["b_mask"].size * 8 < int(np.prod(shape)):
            raise ValueError(f"work dir chunk {path} holds mask shape {shape}, the plan has "
                             f"{chunk.stop - chunk.start} rows for it; {fix}")
        try:
            mask = PackedMask(arrays["b_mask"][: (int(np.prod(shape)) + 7) // 8], shape)
        except ValueError as exc:
            raise ValueError(f"work dir chunk {path}: {exc}; {fix}") from None
        return ChunkResult(chunk.layer, chunk.start, chunk.stop, mask, mask.unpack().any(axis=(0, 2)),
                           arrays["weight_errors"], arrays["bias_errors"], int(arrays["failures"]),
                           arrays["redraws"].reshape(-1, 4).astype(np.int64))


def _chunk_digest(arrays: dict[str, np.ndarray]) -> bytes:
    """SHA-256 over a chunk file's arrays: name, dtype, shape and bytes of each, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.digest()


# -- executors -------------------------------------------------------------------------------------
def _init_worker(threads: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def _run_local(jobs, specs, todo: list[Chunk], workers: int) -> Iterator[tuple[Chunk, ChunkResult]]:
    if workers <= 1:
        for chunk in todo:
            yield chunk, _task(*_chunk_args(jobs, specs, chunk))
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:
        pending: dict = {}
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < 2 * workers:  # bounded in flight: memory stays bounded
                chunk = queue.pop(0)
                pending[pool.submit(_task, *_chunk_args(jobs, specs, chunk))] = chunk
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(finished, key=lambda f: (pending[f].layer, pending[f].start)):
                yield pending.pop(fut), fut.result()


def _run_ray(jobs, specs, todo: list[Chunk], workers: int, address: str | None) -> Iterator[tuple[Chunk, ChunkResult]]:
    try:
        import ray
    except ImportError:
        raise ImportError("the ray backend needs Ray: pip install 'slth[ray]' (or pip install ray)") from None
    started = False
    if not ray.is_initialized():
        kwargs = {"address": address} if address else {"num_cpus": max(1, workers)}
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
        started = True
    try:
        threads = max(1, (os.cpu_count() or 1) // max(1, workers)) if not address else 1

        @ray.remote(num_cpus=1)
        def remote_task(job, start, stop, weight, bias):
            _init_worker(threads)
            return solve_chunk(job, start, stop, weight, bias)

        pending: dict = {}
        queue = list(todo)
        limit = 2 * max(1, workers)
        while queue or pending:
            while queue and len(pending) < limit:
                chunk = queue.pop(0)
                pending[remote_task.remote(*_chunk_args(jobs, specs, chunk))] = chunk
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()


@dataclass
class RunInfo:
    """How one run went (not part of the ticket: it differs between runs of the same ticket)."""

    chunks: int = 0
    reused: int = 0
    computed: int = 0
    seconds: float = 0.0
    computed_names: list[str] = field(default_factory=list)


def run_chunks(jobs: list[LayerJob], specs: list[LinearSpec], chunks: list[Chunk], *, workers: int = 1,
               backend: str = "local", address: str | None = None, workdir: WorkDir | None = None,
               on_chunk: Callable[[Chunk], None] | None = None) -> tuple[dict[Chunk, ChunkResult], RunInfo]:
    """Compute every chunk not already in ``workdir``. Returns the in-memory results (empty with a work
    dir: they are on disk, read back per layer by :func:`take_layer_chunks`) and the run's :class:`RunInfo`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    start = time.perf_counter()
    todo = [c for c in chunks if workdir is None or not workdir.done(c)]
    info = RunInfo(chunks=len(chunks), reused=len(chunks) - len(todo))
    results: dict[Chunk, ChunkResult] = {}
    stream = (_run_ray(jobs, specs, todo, workers, address) if backend == "ray"
              else _run_local(jobs, specs, todo, workers))
    for chunk, result in stream:
        if workdir is not None:
            workdir.save(chunk, result)
        else:
            results[chunk] = result
        info.computed += 1
        info.computed_names.append(chunk.name)
        if on_chunk is not None:
            on_chunk(chunk)
    info.seconds = time.perf_counter() - start
    return results, info


def take_layer_chunks(layer: int, chunks: list[Chunk], results: dict[Chunk, ChunkResult],
                      workdir: WorkDir | None) -> list[ChunkResult]:
    """The chunk results of one layer, removed from ``results`` (so the merged layer replaces them in memory
    instead of adding to them) or read from the work dir."""
    mine = [c for c in chunks if c.layer == layer]
    return [results.pop(c) if c in results else workdir.load(c) for c in mine]
