"""Benchmarks, one home: every measurement behind ``slth bench <name>`` (results go to docs/benchmarks.md with
the machine and date). The CLI only dispatches: ``subsetsum`` and ``supermask-step`` have typed options
(:mod:`slth.cli.bench`); every other entry of :data:`BENCHMARKS` is a module here whose ``main(argv)`` parses
its own options (``slth bench <name> --help``).

* :mod:`slth.bench.subsetsum` -- the SubsetSum engine against the MIP references (``slth bench subsetsum``).
* :mod:`slth.bench.supermask` -- a supermask training step against a dense one, and a peer edge-popup in the
  style of the reference code (``slth bench supermask-step``; every model and method: ``supermask-steps``).

The package sits above the trainer (it times training steps and constructions); importing it imports nothing
heavy: each benchmark's module is imported when its command runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    """A benchmark run as ``slth bench <name> [options]``: ``main(argv)`` of :mod:`slth.bench.<module>`."""

    name: str
    module: str
    summary: str


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("supermask-steps", "supermask",
              "Supermask training steps against the dense step, every model and method; markdown tables"),
    Benchmark("supermask-hf", "supermask_hf",
              "Edge-popup supermasks on tiny GPT-2 and Llama (stdlib characters): test perplexity before and after"),
    Benchmark("construct-scale", "construct_scale",
              "Construction at scale: a ResNet-18- or GPT-2-small-shaped target, one backend and worker count"),
    Benchmark("construct-cnn", "construct_cnn",
              "Tickets of trained CNNs (LeNet-5 on MNIST, ResNet-20 on Fashion-MNIST) against their targets"),
    Benchmark("construct-gpu", "construct_gpu",
              "The torch SubsetSum path and ticket materialisation on a CUDA GPU against the CPU"),
    Benchmark("construct-hf", "construct_hf",
              "Module-replacement tickets of tiny GPT-2 and Llama: perplexity, agreement, generate()"),
    Benchmark("attention-product", "attention_product",
              "Attention constructions compared: per-projection pairs against the product construction"),
    Benchmark("input-range", "input_range",
              "Kept parameters of a standardised-input MNIST MLP with and without input_range"),
    Benchmark("cold-start", "cold_start",
              "First runs with an empty numba cache against the same runs with the cache filled"),
    Benchmark("train-ddp", "train_ddp",
              "slth train under torchrun (2 processes x 1 thread) against 1 process x 2 threads (CPU)"),
    Benchmark("train-gpu", "train_gpu",
              "Training steps per second on a CUDA GPU: dense against every supermask method, fp32 and bf16"),
    Benchmark("sparse-source-step", "sparse_source_step",
              "Supermask steps over a dense and an Erdos-Renyi source against the dense step, alternating rounds"),
    Benchmark("sparse-source-subsetsum", "sparse_source_subsetsum",
              "SubsetSum over an Erdos-Renyi sparse source: P(error <= eps) and kept products against n and p"),
)}


def run(name: str, argv: list[str]) -> int:
    """Run the registered benchmark ``name`` with the command-line options ``argv``; its exit status."""
    import importlib

    code = importlib.import_module(f"{__name__}.{BENCHMARKS[name].module}").main(argv)
    return int(code or 0)
