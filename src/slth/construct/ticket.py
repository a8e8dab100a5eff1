"""The Ticket: seed + masks over a seeded random network, with its report, file I/O and modules."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import ticketfile
from .network import LayerLayout, apply_redraws, build_module, layer_prefixes, layer_tensors

KIND = "constructed"


@dataclass
class Ticket:
    """A pruned random network: ``to_module()`` params == ``random_module()`` params × ``masks``."""

    seed: int
    config: dict[str, Any]  # method, eps, ops, layers, output_scale, ...
    masks: dict[str, torch.Tensor]  # parameter name -> bool tensor
    redraws: np.ndarray  # (R, 4) int64: layer, round, row, col
    stats: dict[str, Any]

    @property
    def layouts(self) -> list[LayerLayout]:
        return [LayerLayout(**layer) for layer in self.config["layers"]]

    def _random_state(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for index, (prefix, layout) in enumerate(zip(layer_prefixes(self.config["ops"]), self.layouts)):
            tensors = layer_tensors(self.seed, index, layout)
            apply_redraws(self.seed, index, layout, tensors["b.weight"], self.redraws)
            for name, arr in tensors.items():
                state[f"{prefix}.{name}"] = torch.from_numpy(arr)
        return state

    def _skeleton(self) -> nn.Sequential:
        return build_module(self.config["ops"], self.layouts, self.config["output_scale"])

    def random_module(self) -> nn.Sequential:
        """The unpruned random network (same parameter names as :meth:`to_module`)."""
        module = self._skeleton()
        state = self._random_state()
        with torch.no_grad():
            for name, param in module.named_parameters():
                param.copy_(state[name])
        return module.eval()

    def to_module(self) -> nn.Sequential:
        """The ticket: every weight is 0 or exactly the seeded random weight."""
        module = self._skeleton()
        state = self._random_state()
        with torch.no_grad():
            for name, param in module.named_parameters():
                param.copy_(state[name] * self.masks[name])
        return module.eval()

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the ticket (seed, config, packed masks, redraw records, stats) atomically."""
        config = dict(self.config, kind=KIND, stats=self.stats)
        tf = ticketfile.TicketFile(
            seed=self.seed,
            config=config,
            masks={k: v.numpy() for k, v in self.masks.items()},
            extras={"redraws": np.asarray(self.redraws, dtype=np.int64).reshape(-1, 4)},
        )
        return ticketfile.save(path, tf)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Ticket":
        """Read a ticket written by :meth:`save`; a foreign or damaged file raises ``TicketFileError``."""
        tf = ticketfile.load(path)
        config = dict(tf.config)
        if config.pop("kind", None) != KIND:
            raise ticketfile.TicketFileError(f"{path}: not a constructed ticket (kind {tf.config.get('kind')!r})")
        stats = config.pop("stats", {})
        try:
            ticket = cls(
                seed=tf.seed,
                config=config,
                masks={k: torch.from_numpy(v) for k, v in tf.masks.items()},
                redraws=tf.extras.get("redraws", np.zeros((0, 4), np.int64)),
                stats=stats,
            )
            expected = {name: tuple(p.shape) for name, p in ticket._skeleton().named_parameters()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ticketfile.TicketFileError(f"{path}: ticket config is malformed ({exc})") from None
        got = {name: tuple(m.shape) for name, m in ticket.masks.items()}
        if got != expected:
            raise ticketfile.TicketFileError(f"{path}: masks do not match the network layout ({sorted(set(got) ^ set(expected))})")
        return ticket

    def summary(self) -> str:
        s = self.stats
        return (
            f"{self.config['method']} ticket, eps={self.config['eps']}: n per layer {s['n_per_layer']}, "
            f"random params {s['random_params']:,} ({s['random_params'] / s['target_params']:.1f}x target), "
            f"kept {s['kept_params']:,} ({s['kept_params'] / s['target_params']:.2f}x target), "
            f"max weight error {s['max_weight_error']:.3g}, failures {s['failures']}, {s['seconds']:.1f} s"
        )


