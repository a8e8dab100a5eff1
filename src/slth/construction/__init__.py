"""Strong tickets by construction: a trained network -> a pruned seeded random network (``slth.construct``).

See :func:`construct` and docs/construction.md.
"""

from .api import construct, construct_with
from .bound import certified_bound
from .config import ConstructConfig, Execution
from .methods import METHODS, ConstructionMethod
from .network import BlockLinear, LayerLayout, RandomPair, RealisedKernels, Scale
from .report import measure, weight_errors
from .target import mlp, parse_target
from .ticket import Ticket

__all__ = ["construct", "construct_with", "ConstructConfig", "Execution", "METHODS", "ConstructionMethod", "Ticket",
           "certified_bound", "measure", "weight_errors", "mlp", "parse_target", "LayerLayout", "BlockLinear",
           "RandomPair", "RealisedKernels", "Scale"]
