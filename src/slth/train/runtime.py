"""Where a training run executes: device, precision, and the process group under ``torchrun``.

None of this changes *what* is trained: models, masks, scores and frozen weights are drawn on the CPU from
the seed and then moved to the device; the data order is a function of (seed, epoch) whatever the number
of processes. So the device and the worker count are not part of a run's identity (a run may resume on
another device); the precision is (bf16/fp16 change the arithmetic).

Several processes: ``torchrun --nproc-per-node N -m slth train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`setup` then joins the process group (nccl on CUDA, gloo otherwise).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(device: str) -> None:
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N, mps")


def check_precision_name(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid names: {', '.join(PRECISIONS)}")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` is CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else the CPU; an explicit
    device that this machine lacks is an error, not a silent fallback."""
    check_device_name(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device == "mps":
        if not _mps_available():
            raise ValueError("device 'mps' requested, but this torch has no usable MPS backend")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested, but CUDA is not available (torch {torch.__version__}, "
                         f"torch.cuda.is_available() is False); use --device cpu")
    index = int(device.split(":")[1]) if ":" in device else (local_rank or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device cuda:{index} requested, but this machine has {count} CUDA device(s)")
    return torch.device("cuda", index)


def check_precision(device: torch.device, precision: str) -> None:
    check_precision_name(precision)
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 is not supported on the CPU (torch's CPU autocast computes in bf16); "
                         "use --precision bf16 or fp32 there, or fp16 on a GPU")


def autocast(device: torch.device, precision: str):
    """The forward pass's context: nothing for fp32 (bit for bit the plain computation), else autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str):
    """fp16 gradients need loss scaling; bf16 (fp32's exponent range) and fp32 do not."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


@dataclass
class Runtime:
    """Device, precision and process group of a run (``world_size`` 1 and ``backend`` None: one process)."""

    device: torch.device
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False  # this run started the process group, so it ends it

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict:
        return {"device": str(self.device), "precision": self.precision, "world_size": self.world_size,
                "backend": self.backend}

    def all_reduce(self, values: list[float]) -> list[float]:
        """Sum of ``values`` over all ranks (float64; the values themselves when alone)."""
        if not self.distributed:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def setup(device: str = "auto", precision: str = "fp32") -> Runtime:
    """Resolve the device, check the precision, and join the process group when started by torchrun
    (``WORLD_SIZE`` > 1), or use the one the caller already initialised."""
    import torch.distributed as dist

    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    initialized = dist.is_available() and dist.is_initialized()
    if initialized:
        world, rank = dist.get_world_size(), dist.get_rank()
    dev = resolve_device(device, local_rank if world > 1 else None)
    check_precision(dev, precision)
    if world <= 1:
        return Runtime(dev, precision)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if initialized:
        return Runtime(dev, precision, rank, world, local_rank, dist.get_backend(), owns_group=False)
    if not dist.is_available():
        raise ValueError(f"WORLD_SIZE={world}, but this torch has no torch.distributed")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "mps":
        raise ValueError("several processes on MPS are not supported; use --device cpu under torchrun")
    dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    return Runtime(dev, precision, dist.get_rank(), dist.get_world_size(), local_rank, backend, owns_group=True)
