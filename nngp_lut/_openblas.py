"""Let OpenBLAS's idle threads sleep sooner: an explicit setting, made before numpy loads.

nngp-lut alternates BLAS calls (Gram panels, Cholesky tiles) with Numba parallel loops on
the same cores.  After each call OpenBLAS's worker threads keep spinning for 2^28 cycles
(~0.1 s) in case more work comes, and a Numba loop started meanwhile gets one core instead
of two.  With OPENBLAS_THREAD_TIMEOUT=20 (2^20 cycles, ~0.3 ms) the depth-3 tanh kernel of
2000 MNIST images takes 0.059 s instead of 0.07-0.10 s (medians of 7, 2 cores).

OpenBLAS reads the variable once, when numpy loads it.  ``import nngp_lut`` does not set it
(a library import sets no process-wide flag); the ``nngp-lut`` command does, first thing
(nngp_lut/cli/__init__.py).  In a program of your own, call
:func:`set_openblas_idle_timeout` before anything imports numpy, or set the variable in the
environment.  Results are unaffected either way.
"""

import os
import sys

#: log2 of the cycles an idle OpenBLAS thread spins before it sleeps.
THREAD_TIMEOUT = "20"


def set_openblas_idle_timeout(log2_cycles: int | str = THREAD_TIMEOUT) -> bool:
    """Set OPENBLAS_THREAD_TIMEOUT (idle OpenBLAS threads sleep after 2^log2_cycles cycles).

    Acts only before numpy is imported (OpenBLAS reads the variable once, when numpy loads
    it) and never overrides a value already in the environment.

    Returns
    -------
    bool
        True if the setting takes effect in this process: numpy is not loaded yet and the
        variable now holds ``log2_cycles`` (or already held a value of yours).
    """
    if "numpy" in sys.modules:
        return False
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", str(log2_cycles))
    return True
