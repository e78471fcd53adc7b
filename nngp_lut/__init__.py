"""nngp-lut: exact Bayesian inference with infinitely wide deep networks, by look-up tables.

The neural-network Gaussian process (NNGP) of Lee et al., "Deep Neural Networks as Gaussian
Processes" (ICLR 2018): the activation enters the kernel recursion only through
F_phi(q1, q2, rho) = E[phi(u) phi(v)], which nngp-lut tabulates once per activation.
"""

__version__ = "0.1.0"

from ._openblas import set_thread_timeout  # noqa: E402

set_thread_timeout()  # before anything imports numpy: OpenBLAS reads it once

from .activations import Activation, builtin_names, get_activation  # noqa: E402
from .tables import Table, build_table, cached_table, open_table  # noqa: E402

__all__ = ["Activation", "Table", "build_table", "builtin_names", "cached_table",
           "get_activation", "open_table", "__version__"]
