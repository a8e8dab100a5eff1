"""One-time numba compilation, kept apart from the timings a user reads.

numba compiles a kernel on its first call in a process, or loads it from its on-disk cache
(``NUMBA_CACHE_DIR``, else ``__pycache__`` beside the source). A cold start (an empty cache) costs
seconds that belong to no particular job, so a job calls :func:`warm_up` with the compile functions of the kernels it
needs *before* its clock starts and reports the returned seconds separately (``ticket.stats``:
``"seconds"`` is the work, ``"compile_seconds"`` the warm-up). Kernels already warm in this process
cost nothing and return 0.

Where no cache directory can be written (a read-only install: ``NUMBA_CACHE_DIR`` unset or not
writable, ``__pycache__`` beside the source not writable, no writable user cache directory) numba does
not fall back: ``cache=True`` raises ``RuntimeError("cannot cache function ...: no locator available")``
when the kernel module is imported.  :func:`ensure_cache` (called by every kernel module before its
decorators run) then points numba at a directory under the system's temporary directory, with a
warning; the kernels still compile once per machine, not once per process.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable

_WARM: set[Callable[[], object]] = set()


def _probe():  # pragma: no cover - never called; its code object is relabelled with a module's file
    pass


def ensure_cache(module_file: str) -> None:
    """Make sure numba has somewhere to cache the kernels of ``module_file`` (see the module docstring)."""
    import numba
    from numba.core.caching import FunctionCache

    probe = _probe
    probe.__code__ = _probe.__code__.replace(co_filename=os.path.abspath(module_file))
    try:
        FunctionCache(probe)
        return
    except RuntimeError:
        pass
    fallback = os.path.join(tempfile.gettempdir(), f"slth-numba-cache-{os.getuid() if hasattr(os, 'getuid') else 0}")
    warnings.warn(f"numba cannot write its cache for {module_file} (read-only install?); caching the compiled "
                  f"kernels in {fallback} instead (set NUMBA_CACHE_DIR to choose)", RuntimeWarning, stacklevel=2)
    numba.config.CACHE_DIR = fallback


def warm_up(*kernels: Callable[[], object]) -> float:
    """Compile (or load from numba's cache) kernels by calling each of ``kernels`` once (each kernel module
    offers one such function, e.g. :func:`slth.subsetsum.compile_kernels`); returns the seconds this call
    spent, 0.0 when they were already warm in this process."""
    bad = [k for k in kernels if not callable(k)]
    if bad:
        raise TypeError(f"warm_up takes the kernel modules' compile functions, got {bad!r}")
    todo = [k for k in dict.fromkeys(kernels) if k not in _WARM]
    if not todo:
        return 0.0
    start = time.perf_counter()
    for kernel in todo:
        kernel()
        _WARM.add(kernel)
    return time.perf_counter() - start
