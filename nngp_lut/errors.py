"""The exceptions nngp-lut raises for expected failures, and its warnings.

Every expected failure — a user's bad input, a damaged file, a full disk, a matrix that is
not positive definite — is an :class:`NNGPError`.  Each subclass also derives from the
built-in exception that code written before this module caught (``ValueError``,
``OSError``, ...), so ``except ValueError`` keeps working.  The command line prints an
NNGPError as one line (exit status 1); anything else is a bug and keeps its traceback
(exit status 3).  See README.md, "Errors and exit status".
"""

import numpy as np


class NNGPError(Exception):
    """Base of every expected failure of nngp-lut: the message says what to do."""


class ParameterError(NNGPError, ValueError):
    """A setting that cannot be used (a grid, a size, a jitter rule, a depth)."""


class ArchitectureError(ParameterError):
    """A network description that cannot be evaluated (a layer in the wrong place)."""


class NotFusable(ArchitectureError):
    """The fused engine has no program for the network (it runs layer by layer instead,
    with a :class:`LayerwiseWarning`)."""


class DataError(NNGPError, ValueError):
    """Input data that cannot be used (missing, empty, non-numeric, NaN, wrong shape)."""


class ExpressionError(NNGPError, ValueError):
    """An activation expression outside the whitelist, or one that does not parse."""


class TableError(NNGPError):
    """A table file that cannot be used: not HDF5, not a table, wrong version, damaged."""


class DomainError(NNGPError, ValueError):
    """A variance outside the domain a table covers."""


class NonFiniteKernel(NNGPError, FloatingPointError):
    """A kernel with NaN or infinite entries: the variances overflow float64."""


class NotPositiveDefinite(NNGPError, np.linalg.LinAlgError):
    """The matrix (plus the largest jitter tried) is not numerically positive definite."""


class MemoryBudgetError(NNGPError, MemoryError):
    """A memory budget (--memory) too small for the work asked."""


class FileFailure(NNGPError, OSError):
    """A file or folder that cannot be read or written (missing, no permission, disk
    full); made by :func:`nngp_lut._files.os_failure` with advice."""


class OutputExists(FileFailure, FileExistsError):
    """An output file exists and overwriting it was not asked for (``force``/--force)."""


class DiskFull(FileFailure):
    """No space left on the device (ENOSPC, or a quota: EDQUOT)."""


class ScratchError(FileFailure):
    """The scratch directory cannot be used (too little free disk, a previous run's tiles)."""


class Busy(FileFailure):
    """Another nngp-lut process holds the lock of the same output or scratch directory."""


class MissingDependency(NNGPError, ImportError):
    """An optional extra (matplotlib, scikit-learn) is not installed."""


class ClusterError(NNGPError, ConnectionError):
    """A Dask scheduler that cannot be reached (--scheduler)."""


class NNGPWarning(UserWarning):
    """A result that is computed but probably not what the user wants."""


class DegenerateKernelWarning(NNGPWarning):
    """The kernel has collapsed: every correlation sits at the recursion's fixed point."""


class OneClassWarning(NNGPWarning):
    """Classification with a single class in the training labels."""


class LayerwiseWarning(NNGPWarning):
    """The fused engine cannot run a network: it is computed layer by layer (the same
    kernel, slower and with more memory)."""


class ToleranceWarning(NNGPWarning):
    """An estimate returned with its error before it met the requested tolerance (a point
    budget reached): the error estimate is still returned with it."""
