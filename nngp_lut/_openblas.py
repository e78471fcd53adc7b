"""Let OpenBLAS's idle threads sleep sooner: set before numpy loads OpenBLAS.

nngp-lut alternates BLAS calls (Gram panels, Cholesky tiles) with Numba parallel loops on
the same cores.  After each call OpenBLAS's worker threads keep spinning for 2^28 cycles
(~0.1 s) in case more work comes, and a Numba loop started meanwhile gets one core instead
of two.  With OPENBLAS_THREAD_TIMEOUT=20 (2^20 cycles, ~0.3 ms) the depth-3 tanh kernel of
2000 MNIST images takes 0.059 s instead of 0.07-0.10 s (medians of 7, 2 cores).

OpenBLAS reads the variable once, when numpy loads it, so this only acts when nngp_lut is
imported before numpy (always so for the ``nngp-lut`` command); results are unaffected
either way, and a value already set is never changed.
"""

import os
import sys

#: log2 of the cycles an idle OpenBLAS thread spins before it sleeps.
THREAD_TIMEOUT = "20"


def set_thread_timeout():
    """Set OPENBLAS_THREAD_TIMEOUT unless it is set or numpy is loaded already."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT)
