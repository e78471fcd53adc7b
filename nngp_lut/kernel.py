"""Deep NNGP kernels from F_phi tables.

A network is a sequence of steps, each mapping a kernel record (the covariance matrix and
the variances of both input sets) to the next one, as in Lee et al. (2018), eq. (5):

    K^0 = bias_var + weight_var <x, x'> / d                       (Dense on the inputs)
    K^l = bias_var + weight_var F_phi(K^{l-1}(x,x), K^{l-1}(x',x'), rho^{l-1})
                                                                   (Activation, then Dense)

:func:`deep_network` builds the plain fully connected network of ``depth`` hidden layers.
Any sequence of steps runs layer by layer through :meth:`Network.layerwise` (one full
matrix per step: the reference, and the route for new step types); the plain network also
runs fused (:meth:`Network.kernel`): tiles of the input Gram X1 X2^T from BLAS, every layer
applied to each entry in registers by a Numba kernel, the result kept in RAM or streamed
to HDF5 when it exceeds the memory budget.

References
----------
Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, Sections 2.3-2.5.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._core import kernel as _kern
from ._core.config import GRAM_DIAG_ROWS, KERNEL_TILE_ROWS, SHARED_VARIANCE_RTOL, SLICE_INTERVALS
from ._core.interp import normalized_many
from .data import parse_size, standardize_rows, validate_inputs
from .tables import Table, as_table

#: Default memory budget for a kernel matrix kept in RAM.
DEFAULT_MEMORY = "4GB"


# --- the kernel record and the steps ---------------------------------------------------------
@dataclass
class KernelRecord:
    """Covariance between two input sets and the variances of each (the diagonals)."""

    cov: np.ndarray  # (n1, n2)
    var1: np.ndarray  # (n1,)
    var2: np.ndarray  # (n2,)


@dataclass(frozen=True)
class Dense:
    """Affine step: K <- bias_var + weight_var * K (the fully connected layer)."""

    weight_var: float
    bias_var: float

    def __call__(self, rec):
        w, b = self.weight_var, self.bias_var
        return KernelRecord(b + w * rec.cov, b + w * rec.var1, b + w * rec.var2)


@dataclass(frozen=True)
class Nonlinearity:
    """Activation step through a table: K <- F_phi(q1, q2, K / sqrt(q1 q2))."""

    table: Table

    def __call__(self, rec):
        rho = rec.cov / np.sqrt(np.outer(rec.var1, rec.var2))
        np.clip(rho, -1.0, 1.0, out=rho)
        cov = self.table.F(rec.var1[:, None], rec.var2[None, :], rho)
        return KernelRecord(cov, self.table.second_moment(rec.var1),
                            self.table.second_moment(rec.var2))


@dataclass(frozen=True)
class Network:
    """A sequence of steps; see the module docstring."""

    steps: tuple

    def layerwise(self, x1, x2=None, *, all_depths=False):
        """The kernel step by step on full matrices.  Returns the output kernel, or with
        ``all_depths`` one kernel per Dense step (depth 0, 1, ...) stacked."""
        x1, x2, same = _inputs(x1, x2)
        d = x1.shape[1]
        rec = KernelRecord(x1 @ x2.T / d, np.einsum("ij,ij->i", x1, x1) / d,
                           np.einsum("ij,ij->i", x2, x2) / d)
        outs = []
        for step in self.steps:
            rec = step(rec)
            if isinstance(step, Dense):
                outs.append(rec.cov)
        return np.stack(outs) if all_depths else rec.cov

    # -- the fused plain network ------------------------------------------------------------
    def _plain(self):
        """(table, depth, weight_var, bias_var) if this is deep_network(...), else None."""
        s = self.steps
        if not s or not isinstance(s[0], Dense) or len(s) % 2 != 1:
            return None
        first = s[0]
        tables = set()
        for act, dense in zip(s[1::2], s[2::2]):
            if not (isinstance(act, Nonlinearity) and dense == first):
                return None
            tables.add(id(act.table))
        if len(tables) > 1:
            return None
        table = s[1].table if len(s) > 1 else None
        return table, (len(s) - 1) // 2, first.weight_var, first.bias_var

    def variances(self, x):
        """K^l(x, x) for every depth l = 0..L, shape (L + 1, n): the diagonal recursion."""
        plain = self._plain()
        if plain is None:
            raise ValueError("variances() needs a plain deep_network")
        table, depth, w, b = plain
        x = validate_inputs(x, "x")
        q = np.empty((depth + 1, x.shape[0]))
        q[0] = b + w * np.einsum("ij,ij->i", x, x) / x.shape[1]
        for l in range(depth):
            q[l + 1] = b + w * table.second_moment(q[l])
        return q

    def kernel(self, x1, x2=None, *, all_depths=False, depths=None, memory=DEFAULT_MEMORY,
               out=None, tile_rows=KERNEL_TILE_ROWS, gram=None, progress=None):
        """K^L(x1, x2) (or every depth with ``all_depths``), fused over layers.

        Parameters
        ----------
        x1, x2 : array_like (n1, d), (n2, d)
            Inputs; ``x2=None`` is the symmetric case (each pair computed once).
        all_depths : bool
            Return K^0..K^L stacked, shape (L + 1, n1, n2), from one pass.
        depths : sequence of int, optional
            Return only these depths (each 0..L), stacked in this order, from one pass.
        memory : int or str
            Budget for the result in RAM ("4GB", "500MB", bytes).  A larger result is
            streamed tile by tile into the HDF5 dataset ``kernel`` of ``out``.
        out : path, optional
            HDF5 file for a result above the budget (then required).
        tile_rows : int
            Rows per tile.
        gram : array (n1, n2), optional
            The input Gram x1 x2^T, when the caller has it already (a hyper-parameter
            search reuses it for every setting).
        progress : callable, optional
            ``progress(done, total)``, in rows: each row counts twice (its Gram, then its
            layers).

        Returns
        -------
        numpy.ndarray or str
            The kernel, or the path of the HDF5 file it was streamed to.
        """
        plain = self._plain()
        if plain is None:
            if depths is not None:
                raise ValueError("depths= needs a plain deep_network")
            return self.layerwise(x1, x2, all_depths=all_depths)
        table, depth, w, b = plain
        stacked = all_depths or depths is not None
        depths = list(range(depth + 1)) if all_depths else (
            [depth] if depths is None else [int(l) for l in depths])
        if not depths or min(depths) < 0 or max(depths) > depth:
            raise ValueError(f"depths must lie in 0..{depth}")
        if len(set(depths)) != len(depths):
            raise ValueError("depths must not repeat")
        slot = np.full(depth + 1, -1, dtype=np.int64)  # output layer of each depth, or -1
        slot[depths] = np.arange(len(depths))
        x1, x2, same = _inputs(x1, x2)
        n1, n2 = x1.shape[0], x2.shape[0]
        q1 = self.variances(x1)
        q2 = q1 if same else self.variances(x2)
        shape = (len(depths), n1, n2)
        sink = _Sink(shape, 8 * math.prod(shape), parse_size(memory), out)
        plan = None if depth == 0 or table is None else _Plan(table, q1[:-1], q2[:-1])
        d = x1.shape[1]
        if gram is not None and np.shape(gram) != (n1, n2):
            raise ValueError(f"gram has shape {np.shape(gram)}, expected {(n1, n2)}")
        gslot = slot[min(depths)]  # the layer the input Gram goes to, transformed in place
        panels = [(r0, min(n1, r0 + tile_rows)) for r0 in range(0, n1, tile_rows)]
        done = 0

        def step(rows):
            nonlocal done
            done += rows
            if progress:
                progress(done, 2 * n1)

        def gram_panel(block, row0, r0, r1):
            c1 = r1 if same else n2  # symmetric: the lower panel only, mirrored at the end
            dest = block[gslot, row0:row0 + r1 - r0, :c1]
            if gram is None:
                _gram_into(dest, x1, x2, r0, r1, c1, same)
            else:
                dest[...] = gram[r0:r1, :c1]
            step(r1 - r0)

        def layers_panel(block, row0, r0, r1):
            if plan is None:
                dest = block[gslot, row0:row0 + r1 - r0, :r1 if same else n2]
                dest *= w  # the order of slice_tile's b + w * g / d, for identical rounding
                dest *= 1.0 / d
                dest += b
            else:
                plan.run(block, row0, r0, r1, 1.0 / d, w, b, depth, slot, gslot,
                         r0 if same else -1)
            if same:  # the exact diagonal, from the variance recursion
                idx = np.arange(r1 - r0)
                block[:, row0 + idx, r0 + idx] = q1[depths, r0:r1]
            step(r1 - r0)

        if sink.h5 is None:
            # In RAM: every Gram panel (BLAS), then every panel's layers (Numba).  Interleaved,
            # each switch would cost up to ~0.1 s: OpenBLAS's idle thread spins that long
            # after a call and takes a core from Numba (relu n = 10000: 1.58 s -> 1.10 s).
            for r0, r1 in panels:
                gram_panel(sink.array, r0, r0, r1)
            for r0, r1 in panels:
                layers_panel(sink.array, r0, r0, r1)
        else:
            for r0, r1 in panels:
                block = sink.buffer(r0, r1, r1 if same else n2)
                gram_panel(block, 0, r0, r1)
                layers_panel(block, 0, r0, r1)
                sink.write(block, r0, r1, same)
        result = sink.finish(same)
        return result if isinstance(result, str) or stacked else result[0]


def deep_network(table, depth, weight_var, bias_var):
    """The fully connected network of ``depth`` hidden layers (DESIGN.md section 1).

    ``table`` is a :class:`Table`, a table path or an activation (built once, cached).
    """
    if int(depth) != depth or depth < 0:
        raise ValueError("depth must be a non-negative integer")
    if not (weight_var > 0 and bias_var >= 0 and math.isfinite(weight_var + bias_var)):
        raise ValueError("need weight_var > 0 and bias_var >= 0")
    dense = Dense(float(weight_var), float(bias_var))
    steps = [dense]
    if depth:
        act = Nonlinearity(as_table(table))
        steps += [act, dense] * int(depth)
    return Network(tuple(steps))


def nngp_kernel(x1, x2=None, *, phi="relu", depth, weight_var, bias_var, standardize=False,
                all_depths=False, memory=DEFAULT_MEMORY, out=None, progress=None):
    """The NNGP kernel K^L(x1, x2) of a deep fully connected network.

    Parameters
    ----------
    x1, x2 : array_like (n, d)
        Inputs; ``x2=None`` computes the symmetric kernel of x1 with itself.
    phi : str, Activation, Table or path
        The activation, or its table.
    depth : int
        Hidden layers L (0: the linear model on the inputs).
    weight_var, bias_var : float
        sigma_w^2 and sigma_b^2.
    standardize : bool
        Standardise each input across its features first (subtract its mean, divide by its
        standard deviation), as the paper's code does; off by default.
    all_depths, memory, out, progress
        See :meth:`Network.kernel`.

    References
    ----------
    Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, eq. (5).
    """
    if standardize:
        x1 = standardize_rows(x1, "x1")
        x2 = None if x2 is None else standardize_rows(x2, "x2")
    net = deep_network(phi, depth, weight_var, bias_var)
    return net.kernel(x1, x2, all_depths=all_depths, memory=memory, out=out, progress=progress)


def nngp_diag(x, *, phi="relu", depth, weight_var, bias_var, standardize=False):
    """K^L(x, x) for each input (the diagonal of :func:`nngp_kernel`)."""
    if standardize:
        x = standardize_rows(x, "x")
    return deep_network(phi, depth, weight_var, bias_var).variances(x)[-1]


# --- plumbing ----------------------------------------------------------------------------------
def _inputs(x1, x2):
    x1 = validate_inputs(x1, "x1")
    if x2 is None:
        return x1, x1, True
    x2 = validate_inputs(x2, "x2")
    if x2.shape[1] != x1.shape[1]:
        raise ValueError(f"x1 has {x1.shape[1]} features but x2 has {x2.shape[1]}")
    return x1, x2, False


def _gram_into(dest, x1, x2, r0, r1, c1, same):
    """dest = x1[r0:r1] x2[:c1]^T by BLAS, written in place (no temporary).  Symmetric
    panels make only the lower triangle of their diagonal block, in strips of
    GRAM_DIAG_ROWS rows (the upper triangle is mirrored later)."""
    if not same:
        np.matmul(x1[r0:r1], x2[:c1].T, out=dest)
        return
    if r0:
        np.matmul(x1[r0:r1], x1[:r0].T, out=dest[:, :r0])
    for a in range(r0, r1, GRAM_DIAG_ROWS):
        e = min(r1, a + GRAM_DIAG_ROWS)
        np.matmul(x1[a:e], x1[r0:e].T, out=dest[a - r0:e - r0, r0:e])


class _Plan:
    """What the tile kernel needs per layer: the slice path when every input shares one
    variance per layer (or phi is homogeneous), else the general path."""

    def __init__(self, table, q_rows, q_cols):
        self.table = table
        self.q_r = np.ascontiguousarray(q_rows)
        self.q_c = np.ascontiguousarray(q_cols)
        self.sq_d_r = np.sqrt(table.second_moment(self.q_r))
        self.sq_d_c = np.sqrt(table.second_moment(self.q_c))
        qa = np.concatenate((self.q_r, self.q_c), axis=1)
        # Standardised inputs share one variance per layer up to rounding (1e-16): one slice
        # at that variance serves all (the per-input factors stay exact).
        shared = np.all(qa.max(axis=1) <= qa.min(axis=1) * (1 + SHARED_VARIANCE_RTOL))
        self.slice = table.homogeneous or shared
        if self.slice:
            y = np.linspace(-1.0, 1.0, SLICE_INTERVALS + 1)
            rho = y * np.sqrt(2.0 - y * y)  # inverse of y = sqrt((1+rho)/2) - sqrt((1-rho)/2)
            depth = self.q_r.shape[0]
            self.slices = np.empty((depth, SLICE_INTERVALS, 4))
            for l in range(1 if table.homogeneous else depth):
                q = np.full(y.size, 1.0 if table.homogeneous else np.mean(qa[l]))
                self.slices[l] = _kern.slice_coefficients(
                    normalized_many(*table.interpolation_args(), q, q, rho))
            if table.homogeneous:
                self.slices[:] = self.slices[0]
            self.inv_sq_r = 1.0 / np.sqrt(self.q_r)
            self.inv_sq_c = 1.0 / np.sqrt(self.q_c)
        else:
            # Every variance the general path meets must lie in the table's domain.
            table.check_unequal_domain(qa.max())

    def run(self, out, out_row0, r0, r1, inv_d, w, b, depth, slot, gslot, diag_offset):
        """Rows r0..r1 - 1 of the kernel, in place in out[:, out_row0:...] (the input Gram
        in layer ``gslot``)."""
        if self.slice:
            _kern.slice_tile(out, out_row0, r0, r1 - r0, inv_d, w, b, self.inv_sq_r,
                             self.inv_sq_c, self.sq_d_r, self.sq_d_c, self.slices, depth,
                             slot, gslot, diag_offset)
            return
        _kern.general_tile(out, out_row0, r0, r1 - r0, inv_d, w, b, self.q_r, self.q_c,
                           self.sq_d_r, self.sq_d_c, *self.table.interpolation_args(), depth,
                           slot, gslot, diag_offset)


class _Sink:
    """Where tiles go: an array in RAM (tiles are computed in place), or an HDF5 dataset
    when over the memory budget (tiles computed in a buffer, then written)."""

    def __init__(self, shape, nbytes, budget, out):
        self.h5 = None
        if nbytes <= budget:
            self.array = np.empty(shape)
            return
        if out is None:
            raise MemoryError(f"the kernel needs {nbytes / 1e9:.2f} GB, more than the memory "
                              f"budget of {budget / 1e9:.2f} GB; give an HDF5 output path "
                              "(out=..., --out K.h5) to stream it to disk, or raise --memory")
        import h5py

        self.path = Path(out)
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.h5 = h5py.File(self.tmp, "w")
        chunk = (1,) + tuple(min(s, 512) for s in shape[1:])
        dset = self.h5.create_dataset("kernel", shape=shape if shape[0] > 1 else shape[1:],
                                      dtype="f8", chunks=chunk if shape[0] > 1 else chunk[1:])
        self.array = dset

    def buffer(self, r0, r1, c1):
        """A C-contiguous buffer for rows r0..r1 - 1, columns :c1 of every layer (HDF5)."""
        layers = self.array.shape[0] if self.array.ndim == 3 else 1
        return np.empty((layers, r1 - r0, c1))

    def write(self, block, r0, r1, same):
        """Write a buffer's rows (and, symmetric, their mirror) to the HDF5 dataset."""
        c1 = block.shape[-1]
        data = block if self.array.ndim == 3 else block[0]
        if same:  # the diagonal block holds its lower triangle only: mirror it
            diag = data[..., r0:r1]
            diag[...] = np.tril(diag) + np.swapaxes(np.tril(diag, -1), -1, -2)
        self.array[..., r0:r1, :c1] = data
        if same:  # mirror the lower panel into the upper triangle now (no second pass)
            self.array[..., :c1, r0:r1] = np.swapaxes(data, -1, -2)

    def finish(self, same):
        if self.h5 is None:
            if same:
                _kern.mirror_lower(self.array)
            return self.array
        self.h5.close()
        self.tmp.replace(self.path)
        return str(self.path)
