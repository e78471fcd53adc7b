"""The ``nngp-lut`` command line (installed as ``nngp_lut.cli``): parsing, I/O, progress and
errors only; every number comes from the library."""

from nngp_lut import set_openblas_idle_timeout

# The command's one process-wide setting, made before any command module imports numpy
# (OpenBLAS reads it once, when numpy loads it); the library itself sets nothing.
set_openblas_idle_timeout()
