"""nngp-lut: exact Bayesian inference with infinitely wide deep networks, by look-up tables.

The neural-network Gaussian process (NNGP) of Lee et al., "Deep Neural Networks as Gaussian
Processes" (ICLR 2018): the activation enters the kernel recursion only through
F_phi(q1, q2, rho) = E[phi(u) phi(v)], which nngp-lut tabulates once per activation.

``import nngp_lut`` sets no process-wide flag and loads its submodules (and numpy) on first
use: ``nngp_lut.build_table``, ``nngp_lut.linalg``, ``nngp_lut.sklearn`` (needs the
``sklearn`` extra), ...  See :func:`set_openblas_idle_timeout` for the one OpenBLAS setting
the ``nngp-lut`` command makes.
"""

import importlib

from ._openblas import set_openblas_idle_timeout

__version__ = "0.1.0"

#: Public submodules, imported on first attribute access.
SUBMODULES = ("activations", "cluster", "data", "expectation", "formats", "gp", "kernel", "linalg",
              "paper", "plots", "search", "sklearn", "tables")
#: Public names of submodules, re-exported here (name -> submodule).
_EXPORTS = {"Activation": "activations", "builtin_names": "activations",
            "get_activation": "activations", "Table": "tables", "build_table": "tables",
            "cached_table": "tables", "open_table": "tables", "nngp_kernel": "kernel",
            "nngp_diag": "kernel", "deep_network": "kernel", "NNGPRegressor": "gp",
            "evaluate": "gp", "load_dataset": "data",
            "gaussian_expectation": "expectation", "gaussian_probability": "expectation"}

__all__ = sorted(_EXPORTS) + ["__version__", "set_openblas_idle_timeout", *SUBMODULES]


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'nngp_lut' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
