"""Tiling, the memory budget, HDF5 streaming and progress, around any kernel function.

:func:`tiled` computes a (layers, n1, n2) result panel by panel of rows, from *phases*:
callables ``phase(block, row0, r0, r1)`` that each do part of the work of rows r0..r1 - 1
into ``block[:, row0:row0 + r1 - r0, :]`` (for instance: the input Gram by BLAS, then the
layers by Numba).  In RAM every panel goes through phase 1, then every panel through
phase 2, ...; over the memory budget each panel goes through all phases in a buffer and is
written to an HDF5 dataset.  Symmetric results (``same``) need only the lower triangle of
each diagonal block; the rest is mirrored here.  This is the role of ``nt.batch`` in
neural-tangents: the kernel function knows nothing of memory or files.
"""

import errno
import math
import shutil
from pathlib import Path

import numpy as np

from .. import _files
from .._core.engine import mirror_lower
from .._core.config import KERNEL_TILE_ROWS
from ..linalg import resolve_memory
from ..errors import DiskFull, MemoryBudgetError


def tiled(phases, layers, n1, n2, same, *, memory, out=None, tile_rows=KERNEL_TILE_ROWS,
          progress=None):
    """Run ``phases`` over row panels of a (layers, n1, n2) result.

    Parameters
    ----------
    phases : sequence of callables ``phase(block, row0, r0, r1)``
        Each fills its share of rows r0..r1 - 1 of the result into ``block`` starting at
        row ``row0`` (only columns j <= i of the diagonal block when ``same``).
    layers, n1, n2 : int
        Shape of the result.
    same : bool
        Symmetric result (n1 == n2): panels hold their lower triangle, mirrored at the end.
    memory : int or str
        Budget for the result in RAM ("4GB", bytes, "auto": 75% of the available memory); a
        larger result is streamed to ``out``.
    out : path, optional
        HDF5 file (dataset ``kernel``) for a result over the budget.
    tile_rows : int
        Rows per panel.
    progress : callable, optional
        ``progress(done, total)`` in panel-phases of rows.

    Returns
    -------
    numpy.ndarray (layers, n1, n2) or str
        The result, or the path of the HDF5 file it was streamed to.
    """
    shape = (layers, n1, n2)
    nbytes, budget = 8 * math.prod(shape), resolve_memory(memory)
    panels = [(r0, min(n1, r0 + tile_rows)) for r0 in range(0, n1, tile_rows)]
    total, done = len(phases) * n1, 0

    def advance(rows):
        nonlocal done
        done += rows
        if progress:
            progress(done, total)

    if nbytes <= budget:  # in RAM: every panel through a phase, then the next phase
        array = np.empty(shape)
        for phase in phases:
            for r0, r1 in panels:
                phase(array, r0, r0, r1)
                advance(r1 - r0)
        if same:
            mirror_lower(array)
        return array
    if out is None:
        raise MemoryBudgetError(
            f"the kernel needs {nbytes / 1e9:.2f} GB, more than the memory budget of "
            f"{budget / 1e9:.2f} GB; give an HDF5 output path (out=..., --out K.h5) to "
            "stream it to disk, or raise --memory")
    import h5py

    out = Path(out)
    # A full disk met while h5py streams leaves HDF5 in a state that crashes Python:
    # refuse before the work.
    free = shutil.disk_usage(out.parent).free
    if free < nbytes * 1.01 + 2**20:
        raise DiskFull(errno.ENOSPC, f"{out.parent} has {free / 1e9:.3g} GB free; the kernel "
                       f"needs {nbytes / 1e9:.3g} GB: free space or write elsewhere")
    with _files.atomic_target(out) as tmp, h5py.File(tmp, "w") as h5:
        chunk = (1,) + tuple(min(s, 512) for s in shape[1:])
        dset = h5.create_dataset("kernel", shape=shape if layers > 1 else shape[1:],
                                 dtype="f8", chunks=chunk if layers > 1 else chunk[1:])
        for r0, r1 in panels:  # each panel through every phase, in a buffer, then written
            block = np.empty((layers, r1 - r0, r1 if same else n2))
            for phase in phases:
                phase(block, 0, r0, r1)
                advance(r1 - r0)
            _write_panel(dset, block, r0, r1, same)
    return str(out)


def _write_panel(dset, block, r0, r1, same):
    """Write a buffer's rows (and, symmetric, their mirror) to the HDF5 dataset."""
    c1 = block.shape[-1]
    data = block if dset.ndim == 3 else block[0]
    if same:  # the diagonal block holds its lower triangle only: mirror it
        diag = data[..., r0:r1]
        diag[...] = np.tril(diag) + np.swapaxes(np.tril(diag, -1), -1, -2)
    dset[..., r0:r1, :c1] = data
    if same:  # mirror the lower panel into the upper triangle now (no second pass)
        dset[..., :c1, r0:r1] = np.swapaxes(data, -1, -2)
