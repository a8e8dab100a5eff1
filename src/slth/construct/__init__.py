"""Strong tickets by construction: a trained ReLU MLP -> a pruned seeded random network.

See :func:`construct` and docs/construction.md.
"""

from .api import construct
from .network import BlockLinear, LayerLayout, RandomPair, Scale
from .target import mlp, parse_target
from .ticket import Ticket

__all__ = ["construct", "Ticket", "mlp", "parse_target", "LayerLayout", "BlockLinear", "RandomPair", "Scale"]
