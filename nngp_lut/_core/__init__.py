"""Numba kernels of nngp-lut.

Everything here is ``@njit`` code that takes arrays and scalars, never validates, and imports
nothing from the package above it.  The public modules (``nngp_lut.tables``,
``nngp_lut.kernel``, ...) validate their inputs and then call these kernels.
"""
