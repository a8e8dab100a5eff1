"""Read a target network into a flat list of operations the construction understands."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

SUPPORTED = "Flatten, Linear, ReLU, Identity, Dropout (nested nn.Sequential allowed)"


@dataclass
class LinearSpec:
    """One target Linear: weight (d_out, d_in), optional bias, and where it sits."""

    path: str
    weight: np.ndarray  # float64
    bias: np.ndarray | None  # float64
    nonnegative_input: bool  # inputs are >= 0 (after a ReLU, or declared)
    relu_after: bool = False

    @property
    def d_out(self) -> int:
        return self.weight.shape[0]

    @property
    def d_in(self) -> int:
        return self.weight.shape[1]

    @property
    def params(self) -> int:
        return self.weight.size + (0 if self.bias is None else self.bias.size)


def _type_name(module) -> str:
    # TorchScript modules keep the Python class name in ``original_name``
    return getattr(module, "original_name", None) or type(module).__name__


def _walk(module, prefix: str):
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if _type_name(child) == "Sequential":
            yield from _walk(child, path)
        else:
            yield path, child


def _array(t: torch.Tensor, what: str) -> np.ndarray:
    arr = t.detach().to("cpu", torch.float64).numpy().copy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or inf")
    return arr


def parse_target(target, *, nonnegative_input: bool = False) -> tuple[list[dict], list[LinearSpec]]:
    """Return (ops, linears): ops is a JSON-able layout (``flatten`` / ``layer`` / ``relu``) of the target.

    Raises ``NotImplementedError`` naming the first unsupported layer and its position, ``ValueError``
    for NaN/inf weights or a network with no Linear layer.
    """
    if _type_name(target) != "Sequential":
        raise NotImplementedError(f"target must be an nn.Sequential of {SUPPORTED}; got {_type_name(target)}")
    ops: list[dict] = []
    linears: list[LinearSpec] = []
    nonneg = bool(nonnegative_input)
    for position, (path, module) in enumerate(_walk(target, "")):
        kind = _type_name(module)
        if kind == "Linear":
            weight = _array(module.weight, f"weight of Linear {path!r}")
            bias = None if module.bias is None else _array(module.bias, f"bias of Linear {path!r}")
            if linears and linears[-1].d_out != weight.shape[1]:
                raise ValueError(
                    f"Linear {path!r} expects {weight.shape[1]} inputs but the previous Linear gives {linears[-1].d_out}"
                )
            ops.append({"op": "layer", "index": len(linears)})
            linears.append(LinearSpec(path, weight, bias, nonneg))
            nonneg = False
        elif kind == "ReLU":
            ops.append({"op": "relu"})
            if ops[-2:-1] == [{"op": "layer", "index": len(linears) - 1}] and linears:
                linears[-1].relu_after = True
            nonneg = True
        elif kind == "Flatten":
            if linears:
                raise NotImplementedError(f"Flatten at position {position} ({path!r}) after a Linear is not supported")
            ops.append({"op": "flatten", "start_dim": int(module.start_dim), "end_dim": int(module.end_dim)})
        elif kind in ("Identity", "Dropout"):
            continue  # identity in eval mode
        else:
            raise NotImplementedError(
                f"layer {kind} at position {position} ({path!r}) is not supported by construct(); supported: {SUPPORTED}"
            )
    if not linears:
        raise ValueError("target has no Linear layer")
    return ops, linears


def mlp(arch: list[int] | str, *, bias: bool = True) -> nn.Sequential:
    """``Flatten, Linear, ReLU, ..., Linear`` for widths like ``[784, 500, 10]`` or ``"784-500-10"``."""
    if isinstance(arch, str):
        try:
            arch = [int(x) for x in arch.split("-")]
        except ValueError:
            raise ValueError(f"--arch must look like 784-500-10, got {arch!r}") from None
    if len(arch) < 2 or any(d < 1 for d in arch):
        raise ValueError(f"an MLP needs at least two positive widths, got {arch}")
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (d_in, d_out) in enumerate(zip(arch[:-1], arch[1:])):
        layers.append(nn.Linear(d_in, d_out, bias=bias))
        if i < len(arch) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def load_target(path, arch: str | None = None) -> nn.Sequential:
    """A target from a file: a state_dict (``torch.save``) of :func:`mlp` ``(arch)`` -- biases are
    inferred from its keys, a ``layers.`` prefix (slth's FC model) is accepted -- or, without ``arch``,
    a TorchScript module (``torch.jit.save``)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    if arch is None:
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ValueError(
                f"{path} is not a TorchScript module ({type(exc).__name__}); for a state_dict pass --arch, e.g. 784-500-10"
            ) from None
        return module.eval()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable state_dict file ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state_dict (a dict of tensors)")
    state = {k.removeprefix("layers."): v for k, v in state.items()}
    has_bias = any(k.endswith(".bias") for k in state)
    net = mlp(arch, bias=has_bias)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match --arch {arch}: {str(exc).splitlines()[0]}") from None
    return net.eval()
