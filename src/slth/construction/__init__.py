"""Strong tickets by construction: a trained network -> a pruned seeded random network (``slth.construct``).

See :func:`construct` and docs/construction.md.
"""

from .api import construct
from .bound import certified_bound
from .network import BlockLinear, LayerLayout, RandomPair, Scale
from .report import measure, weight_errors
from .target import mlp, parse_target
from .ticket import Ticket

__all__ = ["construct", "Ticket", "certified_bound", "measure", "weight_errors", "mlp", "parse_target",
           "LayerLayout", "BlockLinear", "RandomPair", "Scale"]
