"""The Ticket: seed + masks over a seeded random network, with its report, file I/O and modules."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from .. import ticketfile
from .graph import Graph
from .kept import KeptLinear, block_counts
from .modules import Leaf, check_model, install
from .network import STORAGES, LayerLayout, a_tensors, apply_redraws, b_rows

KIND = "constructed"
TIMINGS = ("seconds", "compile_seconds")  # stats that differ between runs of the same ticket
# random_module() refuses networks above this many parameters unless asked (max_params=None): the
# random network of a large target is n times the target's size and is rarely needed densely.
MAX_RANDOM_PARAMS = 100_000_000
# to_module() / random_module() draw each second random layer this many values at a time (rows of b.weight, drawn
# alone bit for bit, network.b_rows): the float64 draw, its mask and its product never exist for a whole layer
FILL_BLOCK_VALUES = 1 << 24


def _mask_rows(mask: ticketfile.PackedMask, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` (of the first dimension) of a packed mask, unpacked alone."""
    if not mask.size:  # an empty tensor (a constant's first layer has no inputs)
        return np.zeros((stop - start, *mask.shape[1:]), dtype=bool)
    row = mask.size // mask.shape[0]
    lo, hi = start * row, stop * row
    bits = np.unpackbits(mask.bits[lo // 8 : (hi + 7) // 8], bitorder="little")
    return bits[lo % 8 : lo % 8 + hi - lo].astype(bool).reshape((stop - start, *mask.shape[1:]))


def _kept_counts(mask: ticketfile.PackedMask, units: int, block_values: int) -> np.ndarray:
    """Kept weights per target weight of a pair's second layer (``block_counts``), from its mask alone, a block
    of rows at a time."""
    rows_total, hidden = mask.shape
    rows = max(1, block_values // max(1, hidden))
    return np.concatenate([block_counts(_mask_rows(mask, s, min(rows_total, s + rows)), units)
                           for s in range(0, rows_total, rows)])


class MaskView(Mapping):
    """A ticket's masks by parameter name, each unpacked to a bool tensor when read (the ticket holds bits)."""

    def __init__(self, packed: Mapping[str, ticketfile.PackedMask]):
        self._packed = packed

    def __getitem__(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self._packed[name].unpack())

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


@dataclass
class Ticket:
    """A pruned random network: ``to_module()`` params == ``random_module()`` params × ``masks``."""

    seed: int
    config: dict[str, Any]  # method, eps, ops, layers, output_scale, ...
    packed: dict[str, ticketfile.PackedMask]  # parameter name -> its mask as bits (``masks`` unpacks them)
    redraws: np.ndarray  # (R, 4) int64: layer, round, row, col
    stats: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict, compare=False)  # how this run went; not saved

    @property
    def masks(self) -> MaskView:
        """Parameter name -> bool tensor (unpacked from :attr:`packed` on each read)."""
        return MaskView(self.packed)

    @property
    def layouts(self) -> list[LayerLayout]:
        return [LayerLayout(**layer) for layer in self.config["layers"]]

    @property
    def replaces_modules(self) -> bool:
        """Built by module replacement (``construct(..., construction="modules")`` or a model torch.fx cannot
        trace): the ticket is the model's own class, rebuilt in a fresh instance by ``to_module(model=fresh)``."""
        return self.config.get("construction") == "modules"

    @property
    def leaves(self) -> list[Leaf]:
        """The replaced modules of a module-replacement ticket (empty for a traced one)."""
        return [Leaf.from_json(d) for d in self.config.get("modules", [])]

    @property
    def folds(self) -> dict[str, list[str]]:
        """A module-replacement ticket built with example inputs: {norm path: its readers' paths} for every norm
        whose affine it folded into the Linear layers that read it (the norm keeps its normalisation only, each
        reader's pair realises W diag(gamma), b + W beta); empty otherwise."""
        return {norm: list(readers) for norm, readers in self.config.get("folds", {}).items()}

    @property
    def graph(self) -> Graph:
        """The ticket's construction graph, read from ``config["ops"]`` (planned join factors included)."""
        if self.replaces_modules:
            raise ValueError(f"this ticket replaced the modules of a {self.config['model']} and has no construction "
                             f"graph (the model was not traced: {self.config['untraced']})")
        return Graph.from_json(self.config["ops"])

    def _prefixes(self) -> list[str]:
        """Per layer, where its pair sits in the ticket's module (its parameters' name prefix)."""
        if self.replaces_modules:
            prefixes = {layer: prefix for leaf in self.leaves for layer, prefix in zip(leaf.layers, leaf.prefixes)}
            return [prefixes[i] for i in range(len(prefixes))]
        return [str(pos) for pos in self.graph.layer_positions()]

    def _layer_blocks(self, block_values: int):
        """(parameter name, first row, its seeded values after redraws) for every layer: the first layer's tensors
        whole, ``b.weight`` in blocks of rows of at most ``block_values`` values (at least one row), so that only a
        block's draw is in memory at a time."""
        redraws = np.asarray(self.redraws, dtype=np.int64).reshape(-1, 4)
        for index, (prefix, layout) in enumerate(zip(self._prefixes(), self.layouts)):
            for name, arr in a_tensors(self.seed, index, layout).items():
                yield f"{prefix}.{name}", 0, arr
            mine = redraws[redraws[:, 0] == index]  # in order: replayed per block as for the whole tensor
            rows = max(1, block_values // max(1, layout.row_size))
            for start in range(0, layout.d_out, rows):
                stop = min(layout.d_out, start + rows)
                block = b_rows(self.seed, index, layout, start, stop)
                inside = mine[(mine[:, 2] >= start) & (mine[:, 2] < stop)]
                apply_redraws(self.seed, index, layout, block, inside, row_offset=start)
                yield f"{prefix}.b.weight", start, block

    def _replacements(self, storage: str = "dense") -> dict[str, nn.Module]:
        """A module-replacement ticket's new modules (zero weights), by the path they replace."""
        layouts = self.layouts
        built: dict[str, nn.Module] = {}
        for leaf in sorted(self.leaves, key=lambda leaf: leaf.kind == "tied_linear"):  # a tied head after its table
            built[leaf.path] = leaf.module(layouts, built.get(leaf.options.get("tie", "")), storage)
        return built

    def _param_shapes(self) -> dict[str, tuple]:
        if self.replaces_modules:
            with torch.device("meta"):  # shapes only: nothing allocated (a large ticket's pairs are gigabytes)
                built = self._replacements()
            return {f"{path}.{name}": tuple(p.shape) for path, m in built.items() for name, p in m.named_parameters()}
        return {name: tuple(p.shape) for name, p in self._skeleton().named_parameters()}

    def _skeleton(self) -> nn.Sequential:
        return self.graph.module(self.layouts, self.config["output_scale"])

    def _fill(self, masked: bool, device, model: nn.Module | None = None,
              block_values: int = FILL_BLOCK_VALUES, storage: str = "dense") -> nn.Module:
        module: nn.Module
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        if storage == "kept":
            if not self.replaces_modules:
                raise ValueError("storage='kept' rebuilds tickets built by module replacement (to_module(model=...)); "
                                 "this ticket is its own traced network: use storage='dense'")
            if device is not None and torch.device(device).type != "cpu":
                raise ValueError(f"storage='kept' runs on the CPU (numba kernels), not on {device!r}: use "
                                 "storage='dense' for another device")
        kept: dict[str, KeptLinear] = {}
        if self.replaces_modules:
            if model is None:
                raise ValueError(
                    f"this ticket replaced the weight-holding modules of a {self.config['model']}; pass a fresh "
                    "instance of that class to rebuild it in: to_module(model=...) (its own weights are not used)")
            host: nn.Module = model
            leaves = self.leaves
            check_model(host, leaves, self.layouts, self.config["model"])
            built = {path: m.to(device) for path, m in self._replacements(storage).items()}
            params = {f"{path}.{name}": p for path, m in built.items() for name, p in m.named_parameters()}
            kept = {f"{path}.{name}.weight": m for path, mod in built.items() for name, m in mod.named_modules()
                    if isinstance(m, KeptLinear)}
        else:
            if model is not None:
                raise ValueError("model= is for tickets built by module replacement; this ticket is its own network "
                                 "(to_module() builds it)")
            module = self._skeleton().to(device)
            params = dict(module.named_parameters())
        with torch.no_grad():
            for name, start, arr in self._layer_blocks(block_values):
                if name in kept:  # only the kept weights are stored, each written in its place
                    if start == 0:
                        kept[name].reserve(_kept_counts(self.packed[name], kept[name].units, block_values))
                    kept[name].add_rows(start, arr.reshape(len(arr), -1),
                                        _mask_rows(self.packed[name], start, start + len(arr)))
                    continue
                value = torch.from_numpy(arr).to(device)
                if masked:
                    value = value * torch.from_numpy(_mask_rows(self.packed[name], start, start + len(arr))).to(device)
                params[name][start : start + len(arr)].copy_(value)
        for layer in kept.values():
            layer.finish()
        if self.replaces_modules:
            module = install(host, leaves, built).to(device)
        return module.eval()

    def random_module(self, *, max_params: int | None = MAX_RANDOM_PARAMS, device=None,
                      model: nn.Module | None = None) -> nn.Module:
        """The unpruned random network (same parameter names as :meth:`to_module`; ``model`` as there).

        Refuses (``ValueError``) when it has more than ``max_params`` parameters; pass ``max_params=None``
        to build it anyway. ``device``: build it there (e.g. ``"cuda"``).
        """
        total = int(self.stats.get("random_params", 0)) or sum(lay.random_params for lay in self.layouts)
        if max_params is not None and total > max_params:
            raise ValueError(
                f"the random network has {total:,} parameters (> max_params={max_params:,}, about "
                f"{4 * total / 2**30:.1f} GiB as float32); it is never needed to use the ticket (to_module() "
                "builds the pruned one). Pass max_params=None to materialise it anyway.")
        return self._fill(False, device, model)

    def to_module(self, *, device=None, model: nn.Module | None = None, storage: str = "dense") -> nn.Module:
        """The ticket: every weight is 0 or exactly the seeded random weight. ``device``: move it there.

        A ticket built by module replacement (:attr:`replaces_modules`) is the model's own class: pass a fresh
        instance, ``to_module(model=GPT2LMHeadModel(config))`` (as ``slth.supermask.from_ticket(path, model=)``):
        it is checked (every replaced path present, of the ticket's kind and sizes; else ``ValueError`` before any
        change), each replaced module becomes its pruned pair in place (the instance's own weights of those
        modules are never read) and it is returned in eval mode.

        ``storage="kept"`` (module-replacement tickets, CPU, float32, inference only): each Linear-like or embedding
        pair's second layer holds only the weights its mask keeps (:mod:`slth.construction.kept`), so memory scales
        with the kept weights (about a fifth of the random ones at eps 1e-3), not the random network; the pair
        stays in the data path, its outputs those of the dense rebuild to float32 rounding (another summation
        order). Conv pairs and constants stay dense. A backward through it, or reading a pair's dense ``weight``,
        raises ``RuntimeError``."""
        return self._fill(True, device, model, storage=storage)

    def digest(self) -> str:
        """SHA-256 of everything that defines the ticket: seed, config, masks, redraws and the stats
        except the wall-clock ``seconds`` and ``compile_seconds``. Equal digests = the same ticket, bit for bit."""
        h = hashlib.sha256()
        stats = {k: v for k, v in self.stats.items() if k not in TIMINGS}
        h.update(json.dumps([int(self.seed), self.config, stats], sort_keys=True).encode())
        for name in sorted(self.packed):
            m = self.packed[name]
            h.update(name.encode())
            h.update(str(m.shape).encode())
            h.update(m.big_endian_bits().tobytes())  # = np.packbits of the bool mask, as digests always were
        h.update(np.ascontiguousarray(self.redraws, dtype=np.int64).tobytes())
        return h.hexdigest()

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the ticket (seed, config, packed masks, redraw records, stats) atomically."""
        config = dict(self.config, kind=KIND, stats=self.stats)
        tf = ticketfile.TicketFile(
            seed=self.seed,
            config=config,
            masks=dict(self.packed),
            extras={"redraws": np.asarray(self.redraws, dtype=np.int64).reshape(-1, 4)},
            format_version=4 if self.replaces_modules else max(self.graph.format_version(),
                                                               2 if "input_range" in self.config else 1),
        )
        return ticketfile.save(path, tf)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Ticket:
        """Read a ticket written by :meth:`save`; a foreign or damaged file raises ``TicketFileError``."""
        tf = ticketfile.load(path, packed_masks=True)
        config = dict(tf.config)
        if config.pop("kind", None) != KIND:
            raise ticketfile.TicketFileError(f"{path}: not a constructed ticket (kind {tf.config.get('kind')!r})")
        stats = config.pop("stats", {})
        try:
            ticket = cls(
                seed=tf.seed,
                config=config,
                packed=cast("dict[str, ticketfile.PackedMask]", dict(tf.masks)),  # packed_masks=True
                redraws=tf.extras.get("redraws", np.zeros((0, 4), np.int64)),
                stats=stats,
            )
            expected = ticket._param_shapes()
        except (KeyError, TypeError, ValueError) as exc:
            raise ticketfile.TicketFileError(f"{path}: ticket config is malformed ({exc})") from None
        got = {name: tuple(m.shape) for name, m in ticket.packed.items()}
        if got != expected:
            bad = sorted(name for name in set(got) | set(expected) if got.get(name) != expected.get(name))
            raise ticketfile.TicketFileError(
                f"{path}: masks do not match the network layout ("
                + "; ".join(f"{name}: file {got.get(name, 'missing')}, layout {expected.get(name, 'none')}"
                            for name in bad)
                + ")")
        return ticket

    def summary(self) -> str:
        s = self.stats
        return (
            f"{self.config['method']} ticket, eps={self.config['eps']}: n per layer {s['n_per_layer']}, "
            f"random params {s['random_params']:,} ({s['random_params'] / s['target_params']:.1f}x target), "
            f"kept {s['kept_params']:,} ({s['kept_params'] / s['target_params']:.2f}x target), "
            f"max weight error {s['max_weight_error']:.3g}, failures {s['failures']}, {s['seconds']:.1f} s"
            + (f" (+ {s['compile_seconds']:.1f} s compiling, once)" if s.get("compile_seconds", 0) >= 0.05 else "")
        )


