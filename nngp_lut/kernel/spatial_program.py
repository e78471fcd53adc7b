"""Compile a network with spatial axes into a program for the fused spatial engine.

The sibling of :mod:`nngp_lut.kernel.program` for images, sequences and graphs: the same
walk over the layer tree, but every op carries the spatial shapes it maps between, and the
per-input vectors an activation or a normalisation needs are per position (the variance
K_{h,h}(x, x) of each position of each input, from the diagonal recursion of
:mod:`nngp_lut.kernel.spatial`).  Those vectors are computed chunk by chunk of inputs, so a
full-covariance diagonal record of every input never exists at once.
``nngp_lut/_core/spatial.py`` interprets the program on every tile of pairs.
"""

import math
from dataclasses import dataclass

import numpy as np

from .._core import spatial as _sp
from .._core.config import SLICE_INTERVALS
from .._core.interp import normalized_many
from .._core.kernel import slice_coefficients
from .layers import (Activation, Aggregate, AvgPool, Conv, Dense, Dropout,
                     FanInConcat, FanInSum, FanOut, Flatten, GlobalAvgPool, Identity,
                     LayerNorm, Parallel, Serial, check_readout, normalisers, readout_points,
                     serial)
from .program import NotFusable, Registers, _slice_grid, check_live
from .spatial import FULL_LAYERS, input_record, positional, spatial_shape, window_index

#: Bytes of diagonal records held at once while the per-input vectors are computed.
VECTOR_CHUNK_BYTES = 200_000_000
#: Entries (maps times pairs) of one register of a block of pairs: 4 registers of this many
#: doubles (K, Theta and two scratch maps) stay within a core's L2 cache.
BLOCK_ENTRIES = 32768
#: Most pairs of a block (the SIMD axis of the engine's loops).
MAX_BLOCK = 32


@dataclass
class SpatialProgram:
    """A compiled spatial network; the arguments of ``_core.spatial.spatial_tile``."""

    ops: np.ndarray
    params: np.ndarray
    windows: np.ndarray
    agg: tuple  # CSR (ptr, idx, val) of the adjacency (or a dummy)
    slices_f: np.ndarray
    slices_df: np.ndarray
    table_args: tuple
    n_regs: int
    size: int  # entries of the largest map of a pair
    full: bool
    with_ntk: bool
    rows: np.ndarray  # (n1, m) per-input vectors
    cols_t: np.ndarray  # (m, n2)
    diag1: dict | None  # {readout depth: (var, ntk_var) of the rows}, or None

    @property
    def block(self):
        """Pairs that go through the ops together (J)."""
        return int(max(1, min(MAX_BLOCK, BLOCK_ENTRIES // self.size)))


def _hw(shape):
    """A spatial shape as (H, W): sequences and graphs are (L, 1), vectors (1, 1)."""
    return (tuple(shape) + (1, 1))[:2] if len(shape) < 2 else tuple(shape)


class _Compiler(Registers):
    def __init__(self, with_ntk, full):
        self.with_ntk, self.full = with_ntk, full
        self.ops, self.params, self.windows = [], [], []
        self.slices_f, self.slices_df, self.slice_keys = [], [], {}
        self.general = None
        self.adjacency = None
        self.reset_registers()
        self.size = 1
        self.vectors = []  # this walk's per-input vectors, in op order
        self.vec_len = 0

    # -- emission -----------------------------------------------------------------------------
    def emit(self, code, a, hw_in, hw_out, b=0, c=0, params=(0.0, 0.0, 0.0, 0.0),
             wy=None, wx=None, vec=-1):
        op = np.zeros(_sp.OP_FIELDS, dtype=np.int64)
        op[[_sp.OPF_CODE, _sp.OPF_A, _sp.OPF_B, _sp.OPF_C]] = code, a, b, c
        op[[_sp.OPF_H, _sp.OPF_W, _sp.OPF_HO, _sp.OPF_WO]] = *hw_in, *hw_out
        for table, field in ((wy, _sp.OPF_IY), (wx, _sp.OPF_IX)):
            if table is not None:
                op[field] = sum(w.size for w in self.windows)
                self.windows.append(_segments(*table))
        op[_sp.OPF_VEC] = vec
        self.ops.append(op)
        self.params.append(params)
        for h, w in (hw_in, hw_out):
            self.size = max(self.size, (h * w) ** 2 if self.full else h * w)

    def vector(self, *blocks):
        """Per-position vectors (n, P) each, stored side by side; their offset."""
        base = self.vec_len
        for block in blocks:
            block = np.asarray(block, dtype=np.float64)
            self.vectors.append(block.reshape(block.shape[0], -1))
            self.vec_len += self.vectors[-1].shape[1]
        return base

    # -- one layer ----------------------------------------------------------------------------
    def layer(self, layer, reg, d):
        if isinstance(layer, Serial):
            for child in layer.children:
                reg, d = self.layer(child, reg, d)
            return reg, d
        if isinstance(layer, Parallel):
            if not isinstance(reg, tuple) or len(reg) != len(layer.children):
                layer.apply(d)  # raises the ArchitectureError that says what is wrong
            out = [self.layer(ch, r, x) for ch, r, x in zip(layer.children, reg, d)]
            return tuple(r for r, _ in out), tuple(x for _, x in out)
        new = layer.apply(d)
        first = d[0] if isinstance(d, tuple) else d
        last = new[0] if isinstance(new, tuple) else new
        hw_in, hw_out = _hw(spatial_shape(first)), _hw(spatial_shape(last))
        if isinstance(layer, Dense):
            a, c = layer.ntk_coefficients(first.width) if self.with_ntk else (0.0, 0.0)
            self.emit(_sp.SOP_AFFINE, reg, hw_in, hw_out,
                      params=(layer.weight_var, layer.bias, a, c))
        elif isinstance(layer, Conv):
            self.conv(layer, reg, first, hw_in, hw_out)
        elif isinstance(layer, AvgPool):
            wy, wx = self.window_tables(first, layer.window_shape, layer.stride, layer.padding)
            self.emit(_sp.SOP_POOL, reg, hw_in, hw_out, wy=wy, wx=wx)
        elif isinstance(layer, Activation):
            self.activation(layer.table, reg, first, hw_in)
        elif isinstance(layer, LayerNorm):
            self.layernorm(layer, reg, first, hw_in)
        elif isinstance(layer, Flatten):
            self.emit(_sp.SOP_FLATTEN, reg, hw_in, hw_out)
        elif isinstance(layer, GlobalAvgPool):
            self.emit(_sp.SOP_GLOBAL_POOL, reg, hw_in, hw_out)
        elif isinstance(layer, Aggregate):
            if self.adjacency is not None and self.adjacency is not layer:
                raise NotFusable("two Aggregate layers with different adjacencies")
            self.adjacency = layer
            self.emit(_sp.SOP_AGGREGATE, reg, hw_in, hw_out)
        elif isinstance(layer, FanOut):
            regs = [reg] + [self.register() for _ in range(int(layer.n) - 1)]
            for r in regs[1:]:
                self.emit(_sp.SOP_COPY, reg, hw_in, hw_in, b=r)
            return tuple(regs), new
        elif isinstance(layer, (FanInSum, FanInConcat)):
            head, rest = reg[0], reg[1:]
            for r, weight in zip(reg, layer.weights(d)):
                if weight != 1.0:
                    self.emit(_sp.SOP_SCALE, r, hw_in, hw_in, params=(weight, 0.0, 0.0, 0.0))
            for r in rest:
                self.emit(_sp.SOP_ADD, r, hw_in, hw_in, b=head)
            self.release(rest)
            return head, new
        elif not isinstance(layer, (Identity, Dropout)):
            raise NotFusable(f"{type(layer).__name__} has no fused spatial op")
        return reg, new

    def window_tables(self, d, window, stride, padding):
        """The (out, k) input-position tables and strides along the height and the width."""
        shape = spatial_shape(d)
        wy = (window_index(shape[0], window[0], stride[0], padding), stride[0])
        if len(shape) == 2:
            return wy, (window_index(shape[1], window[1], stride[1], padding), stride[1])
        return wy, (np.zeros((1, 1), dtype=np.int64), 1)

    def conv(self, layer, reg, d, hw_in, hw_out):
        wy, wx = self.window_tables(d, layer.filter_shape, layer.stride, layer.padding)
        w, b = layer.weight_var, layer.bias
        a, c = 0.0, 0.0
        if self.with_ntk:
            if layer.parameterization == "ntk":
                a, c = w, b
            else:
                a = float(d.width * math.prod(layer.filter_shape))
                c = 0.0 if layer.bias_var is None else 1.0
        self.emit(_sp.SOP_CONV, reg, hw_in, hw_out, params=(w, b, a, c), wy=wy, wx=wx)

    def activation(self, table, reg, d, hw):
        q = positional(d.var1, d).reshape(d.var1.shape[0], -1)
        check_live(q)
        ntk = self.with_ntk
        blocks = [None, np.sqrt(table.second_moment(q))]
        if ntk:
            blocks.append(np.sqrt(table.derivative_second_moment(q)))
        if table.homogeneous:
            key = id(table)
            if key not in self.slice_keys:
                self.slice_keys[key] = len(self.slices_f)
                rho = _slice_grid()
                ones = np.ones(rho.size)
                self.slices_f.append(slice_coefficients(
                    normalized_many(*table.interpolation_args(), ones, ones, rho)))
                self.slices_df.append(slice_coefficients(
                    normalized_many(*table.interpolation_args(True), ones, ones, rho))
                    if ntk else self.slices_f[-1])
            blocks[0] = 1.0 / np.sqrt(q)
            slot = self.slice_keys[key]
        else:  # positions have their own variances: the table itself, entry by entry
            if self.general is not None and self.general is not table:
                raise NotFusable("two activations need their unequal-variance tables")
            table.check_unequal_domain(q.max())
            if ntk:
                table._require_derivative()
            self.general = table
            blocks[0] = q
            slot = -1
        self.emit(_sp.SOP_ACTIVATION, reg, hw, hw, c=slot, vec=self.vector(*blocks))

    def layernorm(self, layer, reg, d, hw):
        q = positional(d.var1, d).reshape(d.var1.shape[0], -1)
        if layer.over == "all":
            q = np.broadcast_to(q.mean(axis=1, keepdims=True), q.shape)
        self.emit(_sp.SOP_NORMALIZE, reg, hw, hw, vec=self.vector(normalisers(q)))

    # -- the whole network --------------------------------------------------------------------
    def walk(self, network, d, readouts):
        """Emit the program for records like ``d`` (diagonal-only); returns the vectors of
        d's inputs and {depth: (var, ntk_var)} at the readouts."""
        self.ops, self.params, self.windows, self.vectors, self.vec_len = [], [], [], [], 0
        self.reset_registers()
        hw0 = _hw(spatial_shape(d))
        self.emit(_sp.SOP_INPUT, 0, hw0, hw0)
        chain, points = readout_points(network)
        reg, diag = 0, {}
        for index, layer in enumerate(chain):
            reg, d = self.layer(layer, reg, d)
            depth = points.index(index) if index in points else None
            if depth in readouts:
                check_readout(d, depth)
                hw = _hw(spatial_shape(d))
                self.emit(_sp.SOP_OUTPUT, reg, hw, hw, b=readouts[depth][0],
                          c=readouts[depth][1])
                diag[depth] = (d.var1, d.ntk_var1)
        return self.vectors, diag


def _segments(idx, stride):
    """A window table (out, k) as the engine's runs: [k, stride, tptr[0..k], (lo, hi, start)
    per run] (see ``_core/spatial.py``)."""
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
    return np.array([k, stride, *tptr, *(v for seg in segs for v in seg)], dtype=np.int64)


def _chunk_rows(x, full):
    p = math.prod(x.shape[1:-1])
    per_input = 8 * 6 * (p * p if full else p)
    return max(1, int(VECTOR_CHUNK_BYTES // per_input))


def _vectors(comp, network, x, readouts, full, with_ntk):
    """The per-input vectors and readout diagonals of the inputs x, chunk by chunk."""
    blocks, diag = [], {}
    step = _chunk_rows(x, full)
    for s in range(0, x.shape[0], step):
        d = input_record(x[s:s + step], ntk=with_ntk, pairs=False, full=full)
        vectors, dg = comp.walk(network, d, readouts)
        n = min(step, x.shape[0] - s)
        blocks.append(np.concatenate(vectors, axis=1) if vectors else np.zeros((n, 1)))
        for depth, (var, ntk_var) in dg.items():
            diag.setdefault(depth, []).append((var, ntk_var))
    rows = np.ascontiguousarray(np.concatenate(blocks)) if len(blocks) > 1 else \
        np.ascontiguousarray(blocks[0])
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

    def has(layer, kinds):
        return any(isinstance(node, kinds) for node in layer.walk())

    vec = [i for i, layer in enumerate(chain) if has(layer, (Activation, LayerNorm))]
    mix = [i for i, layer in enumerate(chain) if has(layer, FULL_LAYERS)]
    if mix and vec and min(mix) <= max(vec):
        return None
    return chain[:max(vec) + 1] if vec else ()


def _input_vectors(comp, network, x, readouts, full, with_ntk):
    """:func:`_vectors`, or for full maps that :func:`diagonal_prefix` allows, the vectors
    from the diagonal recursion (then no readout diagonals: None)."""
    head = diagonal_prefix(network) if full else None
    if head is None:
        return _vectors(comp, network, x, readouts, full, with_ntk)
    rows = (_vectors(comp, serial(*head), x, {}, False, with_ntk)[0] if head
            else np.zeros((x.shape[0], 1)))
    # The program itself (the walk sets the ops) from one input's full record.
    comp.walk(network, input_record(x[:1], ntk=with_ntk, pairs=False, full=True), readouts)
    return rows, None


def compile_spatial(network, x1, x2, readouts, with_ntk, full):
    """The program of ``network`` for spatial inputs x1 (rows) and x2 (columns; None: the
    same).  ``readouts`` as :func:`nngp_lut.kernel.program.compile_network`.

    Raises
    ------
    NotFusable
        When a layer has no op (the caller then runs the network layer by layer).
    """
    comp = _Compiler(with_ntk, full)
    rows, diag1 = _input_vectors(comp, network, x1, readouts, full, with_ntk)
    cols = rows if x2 is None else \
        _input_vectors(comp, network, x2, readouts, full, with_ntk)[0]
    cols_t = np.ascontiguousarray(cols.T)
    n_slices = max(1, len(comp.slices_f))
    empty = np.zeros((n_slices, SLICE_INTERVALS, 4))
    windows = np.concatenate(comp.windows) if comp.windows else np.zeros(1, dtype=np.int64)
    if comp.adjacency is not None:
        import scipy.sparse

        a = scipy.sparse.csr_matrix(comp.adjacency.matrix)
        agg = (a.indptr.astype(np.int64), a.indices.astype(np.int64),
               a.data.astype(np.float64))
    else:
        agg = (np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros(1))
    return SpatialProgram(
        np.array(comp.ops, dtype=np.int64), np.array(comp.params, dtype=np.float64),
        windows.astype(np.int64), agg,
        np.stack(comp.slices_f) if comp.slices_f else empty,
        np.stack(comp.slices_df) if comp.slices_df else empty,
        _table_args(comp.general, with_ntk), comp.n_regs, comp.size, full, with_ntk,
        rows, cols_t, diag1)


def _table_args(t, with_ntk):
    if t is None:  # never read: every activation has a slice
        z2, z3 = np.zeros((1, 1)), np.zeros((1, 1, 1))
        return (z2, z2, 0.0, 1.0, 0.0, z3, z3, 0.0, 1.0, False, 0.0)
    f_n, x0, dx, _, lin2, f3, x30, dx3, sqrt_axis, warp3 = t.interpolation_args()
    df_n, df3 = (t.df_normalized, t.unequal_df_normalized) if with_ntk else (f_n, f3)
    return (f_n, df_n, x0, dx, lin2, f3, df3, x30, dx3, sqrt_axis, warp3)


def run_spatial(prog, out, out_row0, row0, nr, x1, x2, diag_offset):
    """Rows row0 .. row0 + nr - 1 of the program's kernels into out[:, out_row0:...]."""
    n_pos = math.prod(x1.shape[1:-1])
    n_chan = x1.shape[-1]
    f1 = x1.reshape(x1.shape[0], -1)
    f2t = np.ascontiguousarray(x2.reshape(x2.shape[0], -1).T)
    _sp.spatial_tile(out, out_row0, row0, nr, f1, f2t, n_pos, n_chan, prog.ops, prog.params,
                     prog.windows, prog.rows, prog.cols_t, *prog.agg, prog.slices_f,
                     prog.slices_df, *prog.table_args, prog.n_regs, prog.size, prog.block,
                     prog.full, prog.with_ntk, diag_offset)
