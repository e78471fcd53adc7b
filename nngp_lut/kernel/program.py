"""Compile a network of the layer algebra into a program for the fused tile executor.

The program is a short array of ops on registers (one register per live branch), with the
per-input vectors each op needs (variances, their moments, normalisers) computed beforehand
from the diagonal recursion, and the activation's correlation slices (see
``nngp_lut/_core/kernel.py``).  One Numba loop (``program_tile``) interprets it on every
tile, so any serial/parallel composition of the layers runs fused, NNGP and NTK together.
"""

from dataclasses import dataclass

import numpy as np

from .._core import kernel as _kern
from .._core.config import SHARED_VARIANCE_RTOL, SLICE_INTERVALS, SLICE_VARIANCE_MAX_NTK
from .._core.interp import normalized_many
from .layers import (Activation, ArchitectureError, Dense, Dropout, FanInConcat, FanInSum,
                     FanOut, Identity, LayerNorm, Parallel, Serial, normalisers,
                     readout_points)

#: Registers a program may use (a branch each): fixed so the interpreter's buffers are small.
MAX_REGISTERS = 16
#: (w, b, a, c) of the affine step that changes nothing: K' = K, Theta' = Theta.
IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0)


class NotFusable(ArchitectureError):
    """The network has no fused program (it runs layer by layer instead)."""


@dataclass
class Program:
    """A compiled network; the arguments of ``_core.kernel.program_tile``."""

    ops: np.ndarray  # (n_ops, 4) int64
    params: np.ndarray  # (n_ops, 4) float64
    rows: np.ndarray  # (n_vectors, n1)
    cols: np.ndarray  # (n_vectors, n2)
    slices_f: np.ndarray  # (n_slices, SLICE_INTERVALS, 4)
    slices_df: np.ndarray
    table_args: tuple  # the directly interpolated table (or a dummy)
    n_regs: int
    with_ntk: bool
    diag1: dict  # {readout depth: the diagonal record of the rows there}
    diag2: dict


def _slice_grid():
    y = np.linspace(-1.0, 1.0, SLICE_INTERVALS + 1)
    return y * np.sqrt(2.0 - y * y)  # rho of y = sqrt((1+rho)/2) - sqrt((1-rho)/2)


def check_live(*variances):
    """Raise NotFusable when a unit of variance 0 reaches an activation: its kernel is the
    product of the two units' means (``Table._expectation``), which the ops do not have."""
    if not all(np.all(q > 0.0) for q in variances):
        raise NotFusable("units of variance 0 before an activation: an all-zero input, or "
                         "zero-bordered images under a layer with bias_var = 0")


class Registers:
    """The register file of a compiler (this one and the spatial one): register 0 holds the
    main chain, each live branch of a FanOut takes a free one until its FanIn."""

    def reset_registers(self):
        self.free = list(range(1, MAX_REGISTERS))
        self.n_regs = 1

    def register(self):
        if not self.free:
            raise NotFusable(f"more than {MAX_REGISTERS} live branches")
        reg = self.free.pop(0)
        self.n_regs = max(self.n_regs, reg + 1)
        return reg

    def release(self, regs):
        self.free = sorted(self.free + list(regs))


class _Compiler(Registers):
    def __init__(self, with_ntk):
        self.with_ntk = with_ntk
        self.ops, self.params = [], []
        self.rows, self.cols = [], []
        self.slices_f, self.slices_df, self.slice_keys = [], [], {}
        self.general = None
        self.reset_registers()

    def emit(self, code, a, b=0, c=0, params=(0.0, 0.0, 0.0, 0.0)):
        self.ops.append((code, a, b, c))
        self.params.append(params)

    def affine(self, reg, params):
        """A Dense on register ``reg``: folded into the op before it when that op is an
        input or activation on the same register with no affine step yet."""
        last = self.ops[-1]
        if (last[0] in (_kern.OP_INPUT, _kern.OP_ACTIVATION) and last[1] == reg
                and self.params[-1] == IDENTITY_AFFINE):
            self.params[-1] = params
        else:
            self.emit(_kern.OP_DENSE, reg, params=params)

    def vector(self, *pairs):
        """Store per-input vectors (row, column) pairs; the index of the first."""
        base = len(self.rows)
        for r, c in pairs:
            self.rows.append(np.asarray(r, dtype=np.float64))
            self.cols.append(np.asarray(c, dtype=np.float64))
        return base

    # -- one layer ----------------------------------------------------------------------------
    def layer(self, layer, reg, d1, d2):
        """Emit ``layer`` on register(s) ``reg`` with diagonal records d1, d2 (tuples for
        branches).  Returns the new (reg, d1, d2)."""
        if isinstance(layer, Serial):
            for child in layer.children:
                reg, d1, d2 = self.layer(child, reg, d1, d2)
            return reg, d1, d2
        if isinstance(layer, Parallel):
            if not isinstance(reg, tuple) or len(reg) != len(layer.children):
                layer.apply(d1)  # raises the ArchitectureError that says what is wrong
            out = [self.layer(ch, r, a, b)
                   for ch, r, a, b in zip(layer.children, reg, d1, d2)]
            return tuple(zip(*out))
        new1, new2 = layer.apply(d1), layer.apply(d2)
        if isinstance(layer, Dense):
            a, c = layer.ntk_coefficients(d1.width) if self.with_ntk else (0.0, 0.0)
            self.affine(reg, (layer.weight_var, layer.bias, a, c))
        elif isinstance(layer, Activation):
            self.activation(layer.table, reg, d1, d2)
        elif isinstance(layer, LayerNorm):
            v = self.vector((normalisers(d1.var1), normalisers(d2.var1)))
            self.emit(_kern.OP_NORMALIZE, reg, v)
        elif isinstance(layer, FanOut):
            regs = [reg] + [self.register() for _ in range(int(layer.n) - 1)]
            for r in regs[1:]:
                self.emit(_kern.OP_COPY, reg, r)
            return tuple(regs), new1, new2
        elif isinstance(layer, (FanInSum, FanInConcat)):
            first, rest = reg[0], reg[1:]
            for r, weight in zip(reg, layer.weights(d1)):
                if weight != 1.0:
                    self.emit(_kern.OP_SCALE, r, params=(weight, 0.0, 0.0, 0.0))
            for r in rest:
                self.emit(_kern.OP_ADD, r, first)
            self.release(rest)
            return first, new1, new2
        elif not isinstance(layer, (Identity, Dropout)):
            raise NotFusable(f"{type(layer).__name__} has no fused op")
        return reg, new1, new2

    def activation(self, table, reg, d1, d2):
        q1, q2 = d1.var1, d2.var1
        check_live(q1, q2)
        ntk = self.with_ntk
        dd = (lambda q: np.sqrt(table.derivative_second_moment(q))) if ntk else np.ones_like
        v = self.vector((q1, q2), (1.0 / np.sqrt(q1), 1.0 / np.sqrt(q2)),
                        (np.sqrt(table.second_moment(q1)), np.sqrt(table.second_moment(q2))),
                        (dd(q1), dd(q2)))
        qa = np.concatenate((q1, q2))
        # Standardised inputs share one variance per layer up to rounding (1e-16): one slice
        # at that variance serves all (the per-input factors stay exact).
        shared = qa.max() <= qa.min() * (1 + SHARED_VARIANCE_RTOL)
        if shared and ntk and qa.max() > SLICE_VARIANCE_MAX_NTK \
                and qa.max() <= table.unequal_variance_max:
            shared = False  # the derivative slices would lose digits: interpolate the table
        if table.homogeneous or shared:
            q = 1.0 if table.homogeneous else float(np.mean(qa))
            key = (id(table), q)
            if key not in self.slice_keys:
                self.slice_keys[key] = len(self.slices_f)
                rho = _slice_grid()
                qq = np.full(rho.size, q)
                self.slices_f.append(_kern.slice_coefficients(
                    normalized_many(*table.interpolation_args(), qq, qq, rho)))
                self.slices_df.append(_kern.slice_coefficients(
                    normalized_many(*table.interpolation_args(True), qq, qq, rho))
                    if ntk else self.slices_f[-1])
            self.emit(_kern.OP_ACTIVATION, reg, v, self.slice_keys[key], IDENTITY_AFFINE)
            return
        if self.general is not None and self.general is not table:
            raise NotFusable("two activations need their unequal-variance tables")
        table.check_unequal_domain(qa.max())
        if ntk:
            table._require_derivative()
        self.general = table
        self.emit(_kern.OP_ACTIVATION, reg, v, -1, IDENTITY_AFFINE)

    def table_args(self):
        t = self.general
        if t is None:  # never read: every activation has a slice
            z2, z3 = np.zeros((1, 1)), np.zeros((1, 1, 1))
            return (z2, z2, 0.0, 1.0, 0.0, z3, z3, 0.0, 1.0, False, 0.0)
        f_n, x0, dx, _, lin2, f3, x30, dx3, sqrt_axis, warp3 = t.interpolation_args()
        df_n, df3 = (t.df_normalized, t.unequal_df_normalized) if self.with_ntk else (f_n, f3)
        return (f_n, df_n, x0, dx, lin2, f3, df3, x30, dx3, sqrt_axis, warp3)


def compile_network(network, d1, d2, readouts, with_ntk):
    """The program of ``network`` for rows with diagonal record d1 and columns d2.

    Parameters
    ----------
    network : Layer
    d1, d2 : Kernels
        Diagonal-only records of the two input sets (``record.input_kernels(pairs=False)``).
    readouts : dict
        {depth: (nngp output layer, ntk output layer)} (-1: not wanted), depths numbered as
        ``layers.readout_points`` does.
    with_ntk : bool

    Raises
    ------
    NotFusable
        When a layer has no op (the caller then runs the network layer by layer).
    """
    comp = _Compiler(with_ntk)
    comp.emit(_kern.OP_INPUT, 0, params=IDENTITY_AFFINE)
    chain, points = readout_points(network)
    reg, diag1, diag2 = 0, {}, {}
    for index, layer in enumerate(chain):
        reg, d1, d2 = comp.layer(layer, reg, d1, d2)
        depth = points.index(index) if index in points else None
        if depth in readouts:
            if isinstance(reg, tuple):
                raise ArchitectureError("the network ends in branches: join them with "
                                        "FanInSum() or FanInConcat()")
            comp.emit(_kern.OP_OUTPUT, reg, *readouts[depth])
            diag1[depth], diag2[depth] = d1, d2
    n_slices = max(1, len(comp.slices_f))
    empty = np.zeros((n_slices, SLICE_INTERVALS, 4))
    slices_f = np.stack(comp.slices_f) if comp.slices_f else empty
    slices_df = np.stack(comp.slices_df) if comp.slices_df else empty
    rows = np.stack(comp.rows) if comp.rows else np.zeros((1, d1.var1.size))
    cols = np.stack(comp.cols) if comp.cols else np.zeros((1, d2.var1.size))
    return Program(np.array(comp.ops, dtype=np.int64), np.array(comp.params, dtype=np.float64),
                   np.ascontiguousarray(rows), np.ascontiguousarray(cols), slices_f, slices_df,
                   comp.table_args(), comp.n_regs, with_ntk, diag1, diag2)


def run_program(prog, out, out_row0, row0, nr, inv_d, gslot, diag_offset):
    """Rows row0 .. row0 + nr - 1 of the program's kernels, in place in
    out[:, out_row0:...] (the input Gram in layer ``gslot`` on entry)."""
    _kern.program_tile(out, out_row0, row0, nr, inv_d, prog.ops, prog.params, prog.rows,
                       prog.cols, prog.slices_f, prog.slices_df, *prog.table_args,
                       prog.n_regs, prog.with_ntk, gslot, diag_offset)
