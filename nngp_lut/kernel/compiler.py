"""Compile a network of the layer algebra into a program for the fused engine.

One compiler for every network.  The walk over the layer tree asks each layer to lower
itself (:meth:`nngp_lut.kernel.layers.Layer.lower`): it emits ops on registers (register 0
holds the main chain, each live branch of a FanOut takes a free one until its FanIn), each
op carrying the spatial shapes it maps between (vectors of features are maps of one
position).  The per-input vectors an activation or a normalisation needs (the variance
K_{h,h}(x, x) of each position of each input, its moments, the normalisers) come from the
diagonal recursion of the same layers (``apply`` on diagonal-only records), chunk by chunk
of inputs, so a full-covariance diagonal record of every input never exists at once.
``nngp_lut/_core/engine.py`` interprets the program on every tile of pairs.

Passes over the program, available to every network:

* **the input Gram by BLAS**: for vector inputs the engine's input op reads X1 X2^T, which
  one BLAS call per panel wrote into the result (``Program.gram``);
* **a Dense folded into the op before it**: an input or activation op ends with the affine
  step of a Dense that follows it on the same register (one pass less over the registers);
* **slices**: an activation whose table is homogeneous, or whose inputs all share one
  variance at that layer (standardised inputs, after a LayerNorm), reads a 1-D slice of its
  table in the correlation (``_core.engine``) instead of the table itself.

A network with no program (two activations that need their own unequal-variance tables, too
many live branches, units of variance 0 before an activation) raises :class:`NotFusable`;
:class:`~nngp_lut.kernel.network.Network` then computes it layer by layer and says so with a
:class:`~nngp_lut.errors.LayerwiseWarning`.
"""

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from .._core import engine as _eng
from .._core.config import (COLUMN_RUN, COMPOSITE_RTOL, COMPOSITE_TOL, SHARED_VARIANCE_RTOL,
                            SLICE_INTERVALS, SLICE_VARIANCE_MAX_NTK)
from .._core.engine import IDENTITY_AFFINE, slice_coefficients
from .._core.interp import GRID_SIZE, normalized_many
from ..errors import NotFusable
from .layers import check_readout, readout_points, serial
from .spatial import input_record, plain_pad, positional, spatial_shape, window_index

__all__ = ["NotFusable", "Program", "compile_network", "diagonal_prefix", "engine_inputs",
           "run"]

#: Registers a program may use (a branch each): fixed so the engine's buffers are small.
MAX_REGISTERS = 16
#: Bytes of diagonal records held at once while the per-input vectors are computed.
VECTOR_CHUNK_BYTES = 200_000_000
#: Entries (maps times pairs) of one register of a block of pairs, and the most pairs of a
#: block (the SIMD axis of the engine's loops), for full maps and for diagonal maps; a
#: program of vectors (maps of one entry) takes COLUMN_RUN pairs a block.  Full maps: 4
#: registers of 32768 doubles (K, Theta and two scratch maps) stay within a core's L2
#: cache, and a map larger than that goes one pair at a time, its rows the SIMD axis (2x
#: faster than 2 pairs a block at 16x16, measured).  Diagonal maps: an activation's
#: look-ups run over the J pairs at each position, and a run's fixed cost dominates short
#: runs: at 28x28, depth 8, J = 128 took 7.4 ns per position-layer against 9 ns at J = 32
#: (one thread, bench/bench_engine_profile.py), although the block outgrows L2.
BLOCK_ENTRIES, MAX_BLOCK = 32768, 32
BLOCK_ENTRIES_DIAGONAL, MAX_BLOCK_DIAGONAL = 131072, 128


@dataclass
class Program:
    """A compiled network; the arguments of ``_core.engine.engine_tile``."""

    ops: np.ndarray  # (n_ops, OP_FIELDS) int64
    params: np.ndarray  # (n_ops, 4) float64
    windows: np.ndarray
    agg: tuple  # CSR (ptr, idx, val) of the adjacency (or a dummy)
    slices: np.ndarray  # (n_slices, SLICE_INTERVALS, 8): F and Fdot by cell
    table_args: tuple  # the directly interpolated table (or a dummy)
    n_regs: int
    size: int  # entries of the largest map of a pair
    full: bool
    with_ntk: bool
    gram: bool  # the input op reads the Gram X1 X2^T from the result (vectors)
    rows: np.ndarray  # (n1, m) per-input vectors
    cols_t: np.ndarray  # (m, n2)
    diag1: dict | None  # {readout depth: (var, ntk_var) of the rows}, or None
    composite: "Composite | None" = None  # the whole program as one function of the Gram

    @property
    def block(self):
        """Pairs that go through the ops together (J)."""
        if self.size == 1:
            return COLUMN_RUN
        entries, most = ((BLOCK_ENTRIES, MAX_BLOCK) if self.full else
                         (BLOCK_ENTRIES_DIAGONAL, MAX_BLOCK_DIAGONAL))
        return int(max(1, min(most, entries // self.size)))


def check_live(q):
    """Raise NotFusable when a unit of variance 0 reaches an activation: its kernel is the
    product of the two units' means (``Table._expectation``), which the ops do not have."""
    if not np.all(q > 0.0):
        raise NotFusable("units of variance 0 before an activation: an all-zero input, or "
                         "zero-bordered images under a layer with bias_var = 0")


def _hw(shape):
    """A spatial shape as (H, W): sequences and graphs are (L, 1), vectors (1, 1)."""
    return (tuple(shape) + (1, 1))[:2] if len(shape) < 2 else tuple(shape)


#: Cells of each half (rho >= 0, rho < 0) of a slice: SLICE_INTERVALS in all.
SLICE_HALF = SLICE_INTERVALS // 2


def _slice_grid(midpoints=False):
    """rho at the nodes w = 0, 1/M, .., 1 of both halves of a slice (or at the cells'
    midpoints w = 1/2M, 3/2M, ..): rho = +-(1 - w^2)."""
    w = ((np.arange(SLICE_HALF) + 0.5) / SLICE_HALF if midpoints else
         np.linspace(0.0, 1.0, SLICE_HALF + 1))
    return np.concatenate([1.0 - w * w, w * w - 1.0])


def _slice_cells(f, df):
    """The (2 M, 8) look-up of a slice from F and Fdot at the nodes of ``_slice_grid``: per
    cell the cubic coefficients of F, then of Fdot (one cache line once aligned)."""
    n = SLICE_HALF + 1
    cells = np.empty((2 * SLICE_HALF, 8))
    for col, values in ((0, f), (4, df)):
        for half in range(2):
            cells[half * SLICE_HALF:(half + 1) * SLICE_HALF, col:col + 4] = \
                slice_coefficients(np.ascontiguousarray(values[half * n:(half + 1) * n]))
    return cells


class Compiler:
    """The state of one compilation: the ops of the last walk, the per-input vectors of each
    walk, the slices, and what the activations saw (their variances over every walk)."""

    def __init__(self, with_ntk, full, gram):
        self.with_ntk, self.full, self.gram = with_ntk, full, gram
        self.slices, self.slice_keys = [], {}
        self.general = None  # the one table activations without a slice interpolate
        self.adjacency = None
        self.seen = []  # per activation: [table, min q, max q, sum q, count]
        self.start()

    def start(self):
        """Reset what one walk emits."""
        self.ops, self.params, self.windows = [], [], []
        self.vectors, self.vec_len = [], 0
        self.activations = []  # (op index, vector offset, positions) per activation
        self.free, self.n_regs, self.size = list(range(1, MAX_REGISTERS)), 1, 1

    # -- registers ---------------------------------------------------------------------------
    def register(self):
        """A free register for a new branch."""
        if not self.free:
            raise NotFusable(f"more than {MAX_REGISTERS} live branches")
        reg = self.free.pop(0)
        self.n_regs = max(self.n_regs, reg + 1)
        return reg

    def release(self, regs):
        self.free = sorted(self.free + list(regs))

    # -- emission (what layers' ``lower`` call) -----------------------------------------------
    def emit(self, code, reg, d_in, d_out, b=0, c=0, params=(0.0, 0.0, 0.0, 0.0),
             windows=None, vec=-1):
        """Append an op on register ``reg`` mapping records like ``d_in`` to ``d_out``;
        ``windows`` = (window, stride, padding) of a Conv or AvgPool."""
        hw_in, hw_out = _hw(spatial_shape(d_in)), _hw(spatial_shape(d_out))
        op = np.zeros(_eng.OP_FIELDS, dtype=np.int64)
        op[[_eng.OPF_CODE, _eng.OPF_A, _eng.OPF_B, _eng.OPF_C]] = code, reg, b, c
        op[[_eng.OPF_H, _eng.OPF_W, _eng.OPF_HO, _eng.OPF_WO]] = *hw_in, *hw_out
        if windows is not None:
            for table, field in zip(self._window_tables(d_in, *windows),
                                    (_eng.OPF_IY, _eng.OPF_IX)):
                op[field] = sum(w.size for w in self.windows)
                self.windows.append(_segments(*table))
        op[_eng.OPF_VEC] = vec
        self.ops.append(op)
        self.params.append(tuple(params))
        for h, w in (hw_in, hw_out):
            self.size = max(self.size, (h * w) ** 2 if self.full else h * w)

    def affine(self, reg, d, params):
        """A Dense on register ``reg``: folded into the op before it when that op is an
        input or activation on the same register with no affine step yet."""
        last = self.ops[-1]
        if (last[_eng.OPF_CODE] in (_eng.OP_INPUT, _eng.OP_ACTIVATION)
                and last[_eng.OPF_A] == reg and self.params[-1] == IDENTITY_AFFINE):
            self.params[-1] = tuple(params)
        else:
            self.emit(_eng.OP_AFFINE, reg, d, d, params=params)

    def vector(self, *blocks):
        """Per-position vectors (n, P) of this walk's inputs, stored side by side; the
        offset of the first."""
        base = self.vec_len
        for block in blocks:
            block = np.asarray(block, dtype=np.float64)
            self.vectors.append(block.reshape(block.shape[0], -1))
            self.vec_len += self.vectors[-1].shape[1]
        return base

    def activation(self, table, reg, d, code=_eng.OP_ACTIVATION, params=IDENTITY_AFFINE,
                   mask=None):
        """An activation on register ``reg`` with the variances of record ``d``: its vectors
        are q, sqrt(E[phi^2](q)) and sqrt(E[phi'^2](q)) per position; :meth:`finish`
        chooses its look-up once every input's q is known.  ``code`` is the op that applies
        it (an OP_RECUR's cell, with its ``params``); ``mask`` (n, P) zeroes the outputs at
        padded positions (their q, which carries no meaning, becomes 1)."""
        q = positional(d.var1, d).reshape(d.var1.shape[0], -1)
        if mask is not None:
            q = np.where(mask > 0, q, 1.0)
        check_live(q)
        blocks = [q, np.sqrt(table.second_moment(q))]
        if self.with_ntk:
            blocks.append(np.sqrt(table.derivative_second_moment(q)))
        if mask is not None:
            blocks[1:] = [b * mask for b in blocks[1:]]
        index = len(self.activations)
        if index == len(self.seen):
            self.seen.append([table, np.inf, 0.0, 0.0, 0])
        seen = self.seen[index]
        seen[1:] = min(seen[1], q.min()), max(seen[2], q.max()), seen[3] + q.sum(), \
            seen[4] + q.size
        vec = self.vector(*blocks)
        self.activations.append((len(self.ops), vec, q.shape[1]))
        self.emit(code, reg, d, d, c=-1, params=params, vec=vec)

    def aggregate(self, layer):
        """Register the adjacency of an Aggregate (one per program)."""
        if self.adjacency is not None and self.adjacency != layer:
            raise NotFusable("two Aggregate layers with different adjacencies")
        self.adjacency = layer

    def _window_tables(self, d, window, stride, padding):
        """The (out, k) input-position tables and strides along the height and the width."""
        shape = spatial_shape(d)
        wy = (window_index(shape[0], window[0], stride[0], padding), stride[0])
        if len(shape) == 2:
            return wy, (window_index(shape[1], window[1], stride[1], padding), stride[1])
        return wy, (np.zeros((1, 1), dtype=np.int64), 1)

    # -- the whole network --------------------------------------------------------------------
    def walk(self, network, d, readouts, full_from=None):
        """Emit the program for records like ``d`` (diagonal-only); returns the vectors of
        d's inputs and {depth: (var, ntk_var)} at the readouts.  ``full_from``: d is a
        diagonal record of a program of full maps, whose layers from that index of the
        main chain on get a stand-in full record (:func:`_stand_in_full`)."""
        self.start()
        self.emit(_eng.OP_INPUT, 0, d, d, b=0 if self.gram else -1, params=IDENTITY_AFFINE)
        chain, points = readout_points(network)
        reg, diag = 0, {}
        for index, layer in enumerate(chain):
            if index == full_from:
                d = _stand_in_full(d)
            reg, d = layer.lower(self, reg, d)
            depth = points.index(index) if index in points else None
            if depth in readouts:
                check_readout(d, depth)
                self.emit(_eng.OP_OUTPUT, reg, d, d, b=readouts[depth][0],
                          c=readouts[depth][1])
                diag[depth] = (d.var1, d.ntk_var1)
        return self.vectors, diag

    def finish(self, rows, cols):
        """Choose each activation's look-up from the variances it saw over rows and columns:
        a slice (homogeneous phi, or one shared variance) turns its q vectors into
        1/sqrt(q) in place; else the table itself (one table per program)."""
        sides = [rows] if cols is rows else [rows, cols]
        for (op, vec, n), (table, q_min, q_max, q_sum, count) in zip(self.activations,
                                                                     self.seen):
            # Standardised inputs share one variance per layer up to rounding (1e-16): one
            # slice at that variance serves all (the per-input factors stay exact).
            shared = q_max <= q_min * (1 + SHARED_VARIANCE_RTOL)
            if shared and self.with_ntk and q_max > SLICE_VARIANCE_MAX_NTK \
                    and q_max <= table.unequal_variance_max:
                shared = False  # the derivative slices would lose digits: use the table
            if table.homogeneous or shared:
                q = 1.0 if table.homogeneous else q_sum / count
                slot = self._slice(table, q)
                for side in sides:
                    side[:, vec:vec + n] = 1.0 / np.sqrt(side[:, vec:vec + n])
            else:
                if self.general is not None and self.general is not table:
                    raise NotFusable("two activations need their unequal-variance tables")
                table.check_unequal_domain(q_max)
                if self.with_ntk:
                    table._require_derivative()
                self.general, slot = table, -1
            self.ops[op][_eng.OPF_C] = slot

    def _slice(self, table, q):
        """Index of the slice of ``table`` at variance ``q`` (F and Fdot)."""
        key = (id(table), q)
        if key not in self.slice_keys:
            self.slice_keys[key] = len(self.slices)
            rho = _slice_grid()
            qq = np.full(rho.size, q)
            f = normalized_many(*table.interpolation_args(), qq, qq, rho)
            df = normalized_many(*table.interpolation_args(True), qq, qq, rho) \
                if self.with_ntk else f
            self.slices.append(_slice_cells(f, df))
        return self.slice_keys[key]

    def table_args(self):
        t = self.general
        if t is None:  # never read: every activation has a slice
            z2, z3, g = np.zeros((1, 1)), np.zeros((1, 1, 1)), np.ones(GRID_SIZE)
            return (z2, z2, z3, z3, g, g)
        f_n, f3, grid_f, _ = t.interpolation_args()
        df_n, df3, grid_df, _ = t.interpolation_args(True) if self.with_ntk else \
            (f_n, f3, grid_f, None)
        return (f_n, df_n, f3, df3, grid_f, grid_df)


def _segments(idx, stride):
    """A window table (out, k) as the engine's runs and by outputs: [k, stride, tptr[0..k],
    (lo, hi, start) per run, idx (out, k), pad] (see ``_core/engine.py``)."""
    k = idx.shape[1]
    tptr, segs = [0], []
    for t in range(k):
        col, o = idx[:, t], 0
        while o < col.size:
            if col[o] < 0:
                o += 1
                continue
            lo = o
            while o + 1 < col.size and col[o + 1] == col[o] + stride:
                o += 1
            segs.append((lo, o + 1, int(col[lo])))
            o += 1
        tptr.append(len(segs))
    return np.array([k, stride, *tptr, *(v for seg in segs for v in seg), *idx.ravel(),
                     plain_pad(idx) if stride == 1 else -1], dtype=np.int64)


def _stack_aligned(slices):
    """The slices as one 64-byte aligned (n_slices, SLICE_INTERVALS, 8) array (zeros when
    there is none)."""
    return _aligned(np.stack(slices) if slices else np.zeros((1, SLICE_INTERVALS, 8)))


def _aligned(a):
    """A copy of ``a`` that starts on a 64-byte line (a cell of 8 coefficients: one line)."""
    buf = np.empty(a.size + 8)
    skip = (-buf.ctypes.data % 64) // 8
    out = buf[skip:skip + a.size].reshape(a.shape)
    out[...] = a
    return out


def _chunk_rows(x, full):
    p = math.prod(x.shape[1:-1])
    per_input = 8 * 6 * (p * p if full else p)
    return max(1, int(VECTOR_CHUNK_BYTES // per_input))


def _vectors(comp, network, x, readouts, full, with_ntk, masked):
    """The per-input vectors and readout diagonals of the inputs x, chunk by chunk."""
    blocks, diag = [], {}
    step = _chunk_rows(x, full)
    for s in range(0, x.shape[0], step):
        d = input_record(x[s:s + step], ntk=with_ntk, pairs=False, full=full, masked=masked)
        vectors, dg = comp.walk(network, d, readouts)
        n = min(step, x.shape[0] - s)
        blocks.append(np.concatenate(vectors, axis=1) if vectors else np.zeros((n, 1)))
        for depth, (var, ntk_var) in dg.items():
            diag.setdefault(depth, []).append((var, ntk_var))
    rows = np.ascontiguousarray(np.concatenate(blocks) if len(blocks) > 1 else blocks[0])
    diag = {depth: (np.concatenate([v for v, _ in parts]),
                    None if parts[0][1] is None else np.concatenate([t for _, t in parts]))
            for depth, parts in diag.items()}
    return rows, diag


def diagonal_prefix(network):
    """The head of the main chain that holds every layer with per-input vectors
    (activations, normalisations), when those vectors need only the inputs' diagonal
    self-covariances K_hh(x, x); else None.

    Convolutions and activations map the diagonal of a self-covariance to itself, so the
    variances of every position follow from the diagonal recursion (P entries per input)
    until a pooling or an aggregation mixes positions.  A network whose vectors all come
    before the first of those (a CNN read out by GlobalAvgPool, say) never needs the
    inputs' full self-covariances (P^2 entries each, in numpy: most of the time of a small
    pooled kernel); the readout diagonal then comes from the pairs (x, x) themselves."""
    chain = network.layers()

    def has(layer, attribute):
        return any(getattr(node, attribute) for node in layer.walk())

    vec = [i for i, layer in enumerate(chain) if has(layer, "reads_variances")]
    mix = [i for i, layer in enumerate(chain) if has(layer, "needs_full")]
    if mix and vec and min(mix) <= max(vec):
        return None
    return chain[:max(vec) + 1] if vec else ()


def _input_vectors(comp, network, x, readouts, full, with_ntk, masked):
    """:func:`_vectors`, or for full maps that :func:`diagonal_prefix` allows, the vectors
    from the diagonal recursion (then no readout diagonals: None)."""
    head = diagonal_prefix(network) if full and not masked else None
    if head is None:
        return _vectors(comp, network, x, readouts, full, with_ntk, masked)
    if not head:
        comp.walk(network, input_record(x[:1], ntk=with_ntk, pairs=False, full=True),
                  readouts)
        return np.zeros((x.shape[0], 1)), None
    rows = _vectors(comp, serial(*head), x, {}, False, with_ntk, False)[0]
    # The program itself (the walk sets the ops): the head on one input's diagonal record
    # (its ops and vectors do not depend on the off-diagonal entries), the rest, which
    # reads no variance, on a stand-in full record (only its shapes matter).
    comp.walk(network, input_record(x[:1], ntk=with_ntk, pairs=False, full=False),
              readouts, full_from=len(head))
    return rows, None


def _stand_in_full(d):
    """A full-map record of d's shapes, from the diagonal record d: K_{h,h'} = sqrt(K_hh
    K_h'h'), a covariance with d's diagonal (the layers after a program's head only need
    its shapes)."""
    def full(v):
        if v is None:
            return None
        flat = np.sqrt(np.abs(v.reshape(v.shape[0], -1)))
        outer = flat[:, :, None] * flat[:, None, :]
        return outer.reshape(v.shape + v.shape[1:])
    return d.replace(var1=full(d.var1), var2=full(d.var2), ntk_var1=full(d.ntk_var1),
                     ntk_var2=full(d.ntk_var2), full_spatial=True)


def compile_network(network, x1, x2, readouts, with_ntk, full=False, masked=False):
    """The program of ``network`` for inputs x1 (rows) and x2 (columns; None: the same).

    Parameters
    ----------
    network : Layer
    x1, x2 : ndarray
        Validated inputs: (n, d) vectors, or (n, *S, C) with spatial axes.
    readouts : dict
        {depth: (nngp output layer, ntk output layer)} (-1: not wanted), depths numbered as
        ``layers.readout_points`` does.
    with_ntk : bool
    full : bool
        The records hold every pair of positions (pooling, aggregation).
    masked : bool
        The inputs are sequences padded with NaN steps (the records carry masks).

    Raises
    ------
    NotFusable
        When the network has no program (the caller then runs it layer by layer).
    """
    comp = Compiler(with_ntk, full, gram=x1.ndim == 2)
    rows, diag1 = _input_vectors(comp, network, x1, readouts, full, with_ntk, masked)
    cols = rows if x2 is None else \
        _input_vectors(comp, network, x2, readouts, full, with_ntk, masked)[0]
    comp.finish(rows, cols)
    windows = np.concatenate(comp.windows) if comp.windows else np.zeros(1, dtype=np.int64)
    if comp.adjacency is not None:
        import scipy.sparse

        a = scipy.sparse.csr_matrix(comp.adjacency.matrix)
        agg = (a.indptr.astype(np.int64), a.indices.astype(np.int64),
               a.data.astype(np.float64))
    else:
        agg = (np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros(1))
    prog = Program(
        np.array(comp.ops, dtype=np.int64), np.array(comp.params, dtype=np.float64),
        windows.astype(np.int64), agg,
        _stack_aligned(comp.slices),
        comp.table_args(), comp.n_regs, comp.size, full, with_ntk, comp.gram,
        rows, np.ascontiguousarray(cols.T), diag1)
    if comp.gram:
        prog.composite = _composite(prog, x1, x1 if x2 is None else x2)
    return prog


class Composite(NamedTuple):
    """A program of vectors as one function of the input Gram entry g (``_composite``)."""

    cells: np.ndarray  # (SLICE_INTERVALS, 4 S): per cell the cubic of each output layer
    inv_norm: float  # 1 / |x|^2, the inputs' common squared norm: rho = g inv_norm
    layers: np.ndarray  # (S,) int64 the output layers
    gram_layer: int  # the layer the Gram is written to


def _composite(prog, x1, x2):
    """The program as one function of the input Gram entry g, tabulated in rho = g / |x|^2
    like a slice, or None.

    When every input has the same per-input vectors (the same norm, hence the same
    variance at every layer: standardised inputs), each op of a program of vectors is a
    function of the pair's own entries and of constants, so the kernel of every output
    layer is a function f(g) of the Gram entry alone.  It is run once on the nodes of
    ``_slice_grid`` (the engine itself, so the values are the program's) and read as a
    slice: one look-up per entry for the whole network instead of one per activation.  The
    cubic cells are checked against the program at every cell's midpoint (COMPOSITE_TOL);
    a network whose function they do not resolve (an NTK boundary layer at large
    variance) runs as it is.
    """
    vectors = np.concatenate([prog.rows, prog.cols_t.T])
    norms = np.concatenate([np.einsum("ij,ij->i", x, x) for x in (x1, x2)])
    for v in (vectors, norms[:, None]):
        if not (np.all(np.isfinite(v)) and
                np.all(np.abs(v - v[0]) <= COMPOSITE_RTOL * np.abs(v[0]))):
            return None
    if not norms[0] > 0.0:  # all-zero inputs: no correlation to tabulate in
        return None
    outputs = prog.ops[prog.ops[:, _eng.OPF_CODE] == _eng.OP_OUTPUT]
    layers = np.array([l for l in np.concatenate([outputs[:, _eng.OPF_B],
                                                  outputs[:, _eng.OPF_C]]) if l >= 0])
    gram_layer = int(prog.ops[0, _eng.OPF_B])
    rho = np.concatenate([_slice_grid(), _slice_grid(midpoints=True)])
    at_nodes, at_mid = np.split(_evaluate(prog, x1, rho * norms[0], layers, gram_layer),
                                [2 * SLICE_HALF + 2], axis=1)
    if not (np.all(np.isfinite(at_nodes)) and np.all(np.isfinite(at_mid))):
        return None  # overflow: the program runs and reports it
    n = SLICE_HALF + 1
    cells = np.concatenate([np.concatenate([slice_coefficients(f[:n]), slice_coefficients(
        f[n:])]) for f in at_nodes], axis=1)
    for s in range(layers.size):
        interpolated = cells[:, 4 * s:4 * s + 4] @ 0.5 ** np.arange(4)
        if np.max(np.abs(interpolated - at_mid[s])) > COMPOSITE_TOL * np.max(
                np.abs(at_nodes[s])):
            return None
    return Composite(_aligned(cells), 1.0 / norms[0], layers.astype(np.int64), gram_layer)


def _evaluate(prog, x1, g, layers, gram_layer):
    """The program's output layers (S, g.size) at the Gram entries g of inputs like x1 (one
    row input, one column per entry, every input with the first row's vectors)."""
    out = np.zeros((max(layers.max(), gram_layer) + 1, 1, g.size))
    out[gram_layer, 0] = g
    cols_t = np.repeat(prog.rows[:1].T, g.size, axis=1)
    one = replace(prog, rows=prog.rows[:1], cols_t=cols_t, composite=None)
    run(one, out, 0, 0, 1, engine_inputs(one, x1[:1], None), -1)
    return out[layers, 0]


def engine_inputs(prog, x1, x2):
    """The inputs as the engine reads them: x1 (n1, P C), x2 transposed (P C, n2), the
    positions P and channels C (a padded sequence's NaN steps as zeros); a program that
    reads the Gram needs none of them."""
    n_pos, n_chan = math.prod(x1.shape[1:-1]), x1.shape[-1]
    if prog.gram:
        return np.zeros((1, 1)), np.zeros((1, 1)), n_pos, n_chan
    x1, x2 = (np.nan_to_num(x.reshape(x.shape[0], -1), nan=0.0) for x in (x1, x2))
    return x1, np.ascontiguousarray(x2.T), n_pos, n_chan


def run(prog, out, out_row0, row0, nr, inputs, diag_offset):
    """Rows row0 .. row0 + nr - 1 of the program's kernels into out[:, out_row0:...];
    ``inputs`` from :func:`engine_inputs`, ``diag_offset`` as ``engine_tile``.  Returns how
    many of the values written are NaN or infinite."""
    nonfinite = np.zeros(nr, dtype=np.int64)
    if prog.composite is not None:
        c = prog.composite
        _eng.composite_tile(out, out_row0, nr, c.gram_layer, c.layers, c.cells, c.inv_norm,
                            diag_offset, nonfinite)
        return int(nonfinite.sum())
    _eng.engine_tile(out, out_row0, row0, nr, *inputs, prog.ops, prog.params, prog.windows,
                     prog.rows, prog.cols_t, *prog.agg, prog.slices,
                     *prog.table_args, prog.n_regs, prog.size, prog.block, prog.full,
                     prog.with_ntk, diag_offset, nonfinite)
    return int(nonfinite.sum())
