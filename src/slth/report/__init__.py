"""``slth report``: regenerate docs/results.md from the recorded run JSONs in docs/results/.

Every ``*.json`` record names its renderer with an ``"experiment"`` key (records written by
``slth experiment width-sweep`` and ``slth train`` are recognised by their shape); ``*.md`` files in the
results directory are fragments included verbatim. Renderers write their PNG plots next to the
records and return markdown that puts each reproduced number beside the paper's. The generated file
is a pure function of the records (no timestamps of its own), and every image it links must exist.
"""

from ..experiments.sections import Context, Record, ReportError
from .core import generate, kinds, load_records, render

__all__ = ["kinds", "Context", "Record", "ReportError", "generate", "load_records", "render"]
