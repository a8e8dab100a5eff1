"""The README's calls, as a user's type checker sees them (checked by tests/test_typing.py, never run)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import slth
from slth.construction import certified_bound, measure

target = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
ticket: slth.Ticket = slth.construct(target, eps=0.01, seed=0, nonnegative_input=True)
pruned: nn.Module = ticket.to_module()
ticket.save("t.slth")
same: bool = slth.Ticket.load("t.slth").digest() == ticket.digest()
bound: np.ndarray = certified_bound(ticket, target)  # one bound per output
print(measure(pruned, target, torch.zeros(1, 64), torch.zeros(1, dtype=torch.long)))
