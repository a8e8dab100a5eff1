"""The random network a ticket prunes: its layout, its seeded weights and its PyTorch modules.

Each target ``Linear(d_in -> d_out)`` becomes two random layers with a ReLU between them, as in
Pensia et al. (2020), Sec. 2.3-2.4:

* ``a`` -- :class:`BlockLinear`, the first random layer *in its block-diagonal form*: input j feeds
  its own ``units`` hidden units through scalars ``a.weight[j, m]``; hidden unit ``j * units + m``
  computes ``relu(a.weight[j, m] * x_j)``. This is the dense first layer ``M1`` of the theorem with every
  off-block entry already pruned (they can never be used). When the input can be negative, ``units =
  2n``: the first ``n`` scalars are positive (they carry ``relu(x_j)``) and the last ``n`` negative (they
  carry ``relu(-x_j)``); for nonnegative inputs ``units = n`` and all are positive. Magnitudes are
  i.i.d. U[0, 1]; the deterministic signs give each group the law of U[-1,1] conditioned on its sign.
  With a target bias, ``a.bias`` adds ``n`` constant units ``relu(beta_m) = beta_m``, beta ~ U[0, 1]:
  the bias is then approximated like a weight on a constant input of 1.
* ``b`` -- ``nn.Linear(d_in * units + n_bias, d_out, bias=False)``, dense, entries i.i.d. U[-1, 1].

Hence the products ``b.weight[k, unit] * |a.weight[j, m]|`` follow U[-1,1]·U[0,1] (``"product-relu"``),
and target weight ``W[k, j]`` is a SubsetSum over the ``n`` products of one block.

All random tensors come from ``numpy.random.Generator(PCG64(SeedSequence([seed, layer, tensor])))``:
the same seed gives bit-identical weights on every platform. A *redraw* (a block whose draw could not
reach its target, see ``construct``) replaces the block ``b.weight[k, col:col + n]`` by values from
``SeedSequence([seed, layer, 3, round, k, col])``; redraws are recorded in the ticket and replayed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

A_WEIGHT, A_BIAS, B_WEIGHT, REDRAW = 0, 1, 2, 3


@dataclass(frozen=True)
class LayerLayout:
    d_in: int
    d_out: int
    n: int  # random values per SubsetSum instance
    signed_input: bool  # two sign groups per input
    bias: bool
    relu_after: bool

    @property
    def groups(self) -> int:
        return 2 if self.signed_input else 1

    @property
    def units(self) -> int:
        return self.groups * self.n

    @property
    def n_bias(self) -> int:
        return self.n if self.bias else 0

    @property
    def hidden(self) -> int:
        return self.d_in * self.units + self.n_bias

    @property
    def random_params(self) -> int:
        """Block-structured count: a's block-diagonal entries (+ bias units) and b dense."""
        return self.d_in * self.units + self.n_bias + self.d_out * self.hidden

    @property
    def dense_theorem_params(self) -> int:
        """Count with the first random layer fully dense before pruning (Pensia et al.'s M1)."""
        return self.hidden * self.d_in + self.n_bias + self.d_out * self.hidden

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("d_in", "d_out", "n", "signed_input", "bias", "relu_after")}


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


def layer_tensors(seed: int, index: int, layout: LayerLayout) -> dict[str, np.ndarray]:
    """The seeded random tensors (float32) of layer ``index`` before any redraw."""
    mag = _rng(seed, index, A_WEIGHT).random((layout.d_in, layout.units)).astype(np.float32)
    if layout.signed_input:
        mag[:, layout.n :] *= -1
    out = {"a.weight": mag}
    if layout.bias:
        out["a.bias"] = _rng(seed, index, A_BIAS).random(layout.n_bias).astype(np.float32)
    out["b.weight"] = _rng(seed, index, B_WEIGHT).uniform(-1.0, 1.0, (layout.d_out, layout.hidden)).astype(np.float32)
    return out


def redraw_values(seed: int, index: int, round_: int, row: int, col: int, n: int) -> np.ndarray:
    return _rng(seed, index, REDRAW, round_, row, col).uniform(-1.0, 1.0, n).astype(np.float32)


def apply_redraws(seed: int, index: int, layout: LayerLayout, b_weight: np.ndarray, redraws: np.ndarray) -> None:
    """Replay recorded redraws (rows ``(layer, round, row, col)``) of layer ``index`` in order."""
    for layer, round_, row, col in redraws:
        if layer == index:
            b_weight[row, col : col + layout.n] = redraw_values(seed, index, round_, row, col, layout.n)


class BlockLinear(nn.Module):
    """First random layer in block-diagonal form: hidden unit (j, m) = weight[j, m] * x_j (+ bias units)."""

    def __init__(self, d_in: int, units: int, n_bias: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d_in, units))
        self.bias = nn.Parameter(torch.zeros(n_bias)) if n_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x.unsqueeze(-1) * self.weight).flatten(-2)
        if self.bias is not None:
            h = torch.cat([h, self.bias.expand(*x.shape[:-1], -1)], dim=-1)
        return h

    def extra_repr(self) -> str:
        d_in, units = self.weight.shape
        n_bias = 0 if self.bias is None else self.bias.numel()
        return f"d_in={d_in}, units_per_input={units}, bias_units={n_bias}"


class RandomPair(nn.Module):
    """``b(relu(a(x)))``: the two random layers that stand for one target Linear."""

    def __init__(self, layout: LayerLayout):
        super().__init__()
        self.a = BlockLinear(layout.d_in, layout.units, layout.n_bias)
        self.b = nn.Linear(layout.hidden, layout.d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class Scale(nn.Module):
    """Fixed output factor (a buffer, not a weight): undoes the per-layer rescaling of the targets."""

    def __init__(self, factor: float):
        super().__init__()
        self.register_buffer("factor", torch.tensor(float(factor)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def build_module(ops: list[dict], layouts: list[LayerLayout], output_scale: float) -> nn.Sequential:
    """The network skeleton (zero weights) with the target's layout; parameter names are stable."""
    modules: list[nn.Module] = []
    for op in ops:
        if op["op"] == "flatten":
            modules.append(nn.Flatten(op["start_dim"], op["end_dim"]))
        elif op["op"] == "relu":
            modules.append(nn.ReLU())
        elif op["op"] == "layer":
            modules.append(RandomPair(layouts[op["index"]]))
        else:  # pragma: no cover - written by us
            raise ValueError(f"unknown op {op!r}")
    if output_scale != 1.0:
        modules.append(Scale(output_scale))
    return nn.Sequential(*modules)


def layer_prefixes(ops: list[dict]) -> list[str]:
    """Module name (index in the Sequential) of each RandomPair, in layer order."""
    return [str(pos) for pos, op in enumerate(ops) if op["op"] == "layer"]
