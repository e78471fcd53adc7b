"""The fused tile executor: one Numba loop that interprets a compiled network.

A network of the layer algebra (nngp_lut/kernel/layers.py) compiles to a short program of
ops on registers (nngp_lut/kernel/program.py).  A tile arrives holding the input Gram and is
transformed in place: a short run of entries at a time goes through every op in registers
that stay in L1 (NNGP and NTK side by side), so no full-size temporary is made per layer.
Two activation steps exist:

* ``slice``: F = sqrt(D_i D_j) * s_l(rho), with s_l a 1-D table of the normalised F in
  y = sqrt((1 + rho) / 2) - sqrt((1 - rho) / 2) (rho = y sqrt(2 - y^2)).  Exact when every
  input has the same variance at layer l (s_l is the table's slice at that variance) and
  for homogeneous phi (s_l = s for every layer and variance).  y costs two square roots,
  is an analytic function of theta = arccos rho (so relu's kink at rho = 1 is smooth in it),
  and is uniform-grid friendly.
* ``general``: F from the 2-D table where q_i == q_j and the 3-D table otherwise.

References
----------
Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, eqs. (4)-(5).
"""

import math

import numpy as np
from numba import njit, prange

from .config import COLUMN_RUN, INTERP_POINTS, JIT, JIT_PARALLEL
from .interp import (blend, correlation, interp2, interp3, kappa_of, theta_of,
                     warp_mixed)


@njit(**JIT)
def slice_coefficients(values):
    """Per-interval cubic coefficients (Horner, in t = local coordinate in [0, 1]) of the
    4-point Lagrange interpolant of ``values`` on the uniform y grid (one-sided at the ends).
    Returns an (M, 4) array for M = values.size - 1 intervals."""
    m = values.size - 1
    c = np.empty((m, 4))
    for i in range(m):
        j = min(max(i, 1), m - 2)  # stencil j-1 .. j+2
        t0 = float(i - j)  # the interval starts at t0 in stencil coordinates
        f0, f1, f2, f3 = values[j - 1], values[j], values[j + 1], values[j + 2]
        # Newton form on nodes -1, 0, 1, 2, then re-expanded around t0.
        d1 = f1 - f0
        d2 = (f2 - 2.0 * f1 + f0) / 2.0
        d3 = (f3 - 3.0 * f2 + 3.0 * f1 - f0) / 6.0
        # p(t) = f0 + d1 (t+1) + d2 (t+1) t + d3 (t+1) t (t-1); shift t = t0 + s.
        a3 = d3
        a2 = d2 + d3 * (3.0 * t0)
        a1 = d1 + d2 * (2.0 * t0 + 1.0) + d3 * (3.0 * t0 * t0 - 1.0)
        a0 = f0 + d1 * (t0 + 1.0) + d2 * (t0 + 1.0) * t0 + d3 * (t0 + 1.0) * t0 * (t0 - 1.0)
        c[i, 0] = a0
        c[i, 1] = a1
        c[i, 2] = a2
        c[i, 3] = a3
    return c


@njit(**JIT)
def _row_of(p, half, nr, triangle):
    """Row of prange step p, half 0 or 1: on a triangle rows p and nr - 1 - p pair up (equal
    work per step); -1 when there is no such row."""
    p = np.int64(p)  # prange indices are unsigned
    if half == 0:
        return p
    q = np.int64(nr) - 1 - p
    return q if triangle and q != p else -1


@njit(**JIT)
def _row_end(i, nc, diag_offset):
    """Columns of row i: all, or on a diagonal block only j <= i + diag_offset (the upper
    triangle is mirrored afterwards)."""
    return nc if diag_offset < 0 else min(nc, i + diag_offset + 1)


@njit(**JIT)
def _general_normalized(f_n, x0, dx, lin2, f3, x30, dx3, sqrt_axis, warp3, q1, q2, rho, wa,
                        wb, wc):
    theta = theta_of(rho)
    if q1 == q2:
        return interp2(f_n, x0, dx, math.log(q1), blend(theta, kappa_of(q1), lin2), wa, wb)
    if q1 > q2:  # F is symmetric; one canonical order makes K(X1, X2) = K(X2, X1)^T exactly
        q1, q2 = q2, q1
    w = warp_mixed(theta, warp3 * math.sqrt(q2))
    if sqrt_axis:
        return interp3(f3, x30, dx3, math.sqrt(q1), math.sqrt(q2), w, wa, wb, wc)
    return interp3(f3, x30, dx3, math.log(q1), math.log(q2), w, wa, wb, wc)


# Op codes of a compiled network (nngp_lut/kernel/program.py writes them; one row of
# ``ops`` is [code, register a, argument b, argument c]).
# OP_INPUT and OP_ACTIVATION end with the affine step of a Dense (p0..p3 as OP_DENSE; the
# compiler folds a Dense that follows them into them, which saves a pass over the registers).
OP_INPUT = 0  # K[a] = <x_i, x_j> / d (the Gram in layer gslot), Theta[a] = 0; then affine
OP_DENSE = 1  # Theta[a] = p2 K[a] + p3 + p0 Theta[a];  K[a] = p1 + p0 K[a]
OP_ACTIVATION = 2  # K[a] = F(q_i, q_j, rho), Theta[a] *= Fdot, then affine; vectors from b,
#                    slice c or -1
OP_NORMALIZE = 3  # K[a], Theta[a] *= v_i v_j with v = rows/cols vector b
OP_COPY = 4  # register b = register a
OP_ADD = 5  # register b += register a
OP_SCALE = 6  # register a *= p0
OP_OUTPUT = 7  # out[b] = K[a] (b >= 0), out[c] = Theta[a] (c >= 0)


@njit(**JIT)
def _cubic(sl, k, t):
    return sl[k, 0] + t * (sl[k, 1] + t * (sl[k, 2] + t * sl[k, 3]))


@njit(**JIT_PARALLEL)
def program_tile(out, out_row0, row0, nr, inv_d, ops, params, rows, cols, slices_f,
                 slices_df, f_n, df_n, x0, dx, lin2, f3, df3, x30, dx3, sqrt_axis, warp3,
                 n_regs, with_ntk, gslot, diag_offset):
    """One tile of any compiled network, NNGP and (``with_ntk``) NTK, in place.

    out : (layers, N, nc) C-contiguous; the tile is its rows out_row0 .. out_row0 + nr - 1.
        On entry the input inner products <x_i, x_j> are in layer ``gslot``; OP_OUTPUT
        writes the layers it names.
    row0 : index of the tile's first row in ``rows``.
    ops, params : (n_ops, 4) int64 and float64, the program (see the OP_ codes).
    rows, cols : (n_vectors, n1), (n_vectors, n2) per-input vectors of the program: for an
        activation at b, q, 1 / sqrt(q), sqrt(E[phi^2](q)), sqrt(E[phi'^2](q)).
    slices_f, slices_df : (n_slices, M, 4) cubic coefficients of the normalised F and Fdot
        in y = sqrt((1 + rho) / 2) - sqrt((1 - rho) / 2) (see slice_coefficients).
    f_n ... warp3 : the table that activations without a slice (c = -1) interpolate
        directly, as in ``Table.interpolation_args`` (F and Fdot share the grids).
    diag_offset : >= 0 when column j = i + diag_offset is row i's own input (a symmetric
        panel): only j <= i + diag_offset is computed; -1 for a full tile.

    Each row runs through the program COLUMN_RUN columns at a time; the registers of a run
    stay in L1.  Each op is a few short loops; the activation splits into square roots
    (SIMD), look-ups (a gather, scalar) and scaling (SIMD), which the compiler vectorises
    only when they are separate loops (3.5x faster than fused, measured).
    """
    m = slices_f.shape[1]
    triangle = diag_offset >= 0
    steps = (nr + 1) // 2 if triangle else nr
    n_ops = ops.shape[0]
    for p in prange(steps):
        kk = np.empty((n_regs, COLUMN_RUN))
        tt = np.empty((n_regs, COLUMN_RUN))
        cell = np.empty(COLUMN_RUN, dtype=np.int64)
        frac = np.empty(COLUMN_RUN)
        f_val = np.empty(COLUMN_RUN)
        d_val = np.empty(COLUMN_RUN)
        wa = np.empty(INTERP_POINTS)
        wb = np.empty(INTERP_POINTS)
        wc = np.empty(INTERP_POINTS)
        for half in range(2):
            i = _row_of(p, half, nr, triangle)
            if i < 0:
                continue
            oi = out_row0 + i
            ri = row0 + i
            ncol = _row_end(i, out.shape[2], diag_offset)
            for c0 in range(0, ncol, COLUMN_RUN):
                r = min(ncol, c0 + COLUMN_RUN) - c0
                for o in range(n_ops):
                    code = ops[o, 0]
                    a = ops[o, 1]
                    ka = kk[a]
                    ta = tt[a]
                    if code == OP_INPUT:
                        w = params[o, 0]
                        b = params[o, 1]
                        ak = params[o, 2] * inv_d
                        c = params[o, 3]
                        wd = w * inv_d
                        for j in range(r):
                            g = out[gslot, oi, c0 + j]
                            ta[j] = ak * g + c
                            ka[j] = b + wd * g
                    elif code == OP_DENSE:
                        w = params[o, 0]
                        b = params[o, 1]
                        if with_ntk:
                            ak = params[o, 2]
                            c = params[o, 3]
                            for j in range(r):
                                ta[j] = ak * ka[j] + c + w * ta[j]
                        for j in range(r):
                            ka[j] = b + w * ka[j]
                    elif code == OP_ACTIVATION:
                        v = ops[o, 2]
                        s = ops[o, 3]
                        if s >= 0:
                            inv_r = rows[v + 1, ri]
                            inv_c = cols[v + 1, c0:c0 + r]
                            for j in range(r):
                                rho = correlation(ka[j], inv_r * inv_c[j])
                                y = math.sqrt(0.5 + 0.5 * rho) - math.sqrt(0.5 - 0.5 * rho)
                                u = (y + 1.0) * 0.5 * m
                                k = min(int(u), m - 1)
                                cell[j] = k
                                frac[j] = u - k
                            sf = slices_f[s]
                            for j in range(r):
                                f_val[j] = _cubic(sf, cell[j], frac[j])
                            if with_ntk:
                                sd = slices_df[s]
                                for j in range(r):
                                    d_val[j] = _cubic(sd, cell[j], frac[j])
                        else:
                            qa = rows[v, ri]
                            for j in range(r):
                                qb = cols[v, c0 + j]
                                rho = correlation(ka[j], 1.0 / math.sqrt(qa * qb))
                                f_val[j] = _general_normalized(f_n, x0, dx, lin2, f3, x30,
                                                               dx3, sqrt_axis, warp3, qa, qb,
                                                               rho, wa, wb, wc)
                                if with_ntk:
                                    d_val[j] = _general_normalized(df_n, x0, dx, lin2, df3,
                                                                   x30, dx3, sqrt_axis, warp3,
                                                                   qa, qb, rho, wa, wb, wc)
                        # K = sqrt(D_i D_j) F, Theta *= sqrt(Dd_i Dd_j) Fdot, then the affine
                        # step of a Dense that follows (w, b, ak, c; identity: 1, 0, 0, 0).
                        w = params[o, 0]
                        b = params[o, 1]
                        ws = w * rows[v + 2, ri]
                        sc = cols[v + 2, c0:c0 + r]
                        if with_ntk:
                            ak = params[o, 2] * rows[v + 2, ri]
                            c = params[o, 3]
                            we = w * rows[v + 3, ri]
                            ec = cols[v + 3, c0:c0 + r]
                            for j in range(r):
                                ta[j] = ak * f_val[j] * sc[j] + c + we * ta[j] * d_val[j] * ec[j]
                        for j in range(r):
                            ka[j] = b + ws * f_val[j] * sc[j]
                    elif code == OP_NORMALIZE:
                        v = ops[o, 2]
                        sr = rows[v, ri]
                        sc = cols[v, c0:c0 + r]
                        for j in range(r):
                            ka[j] *= sr * sc[j]
                        if with_ntk:
                            for j in range(r):
                                ta[j] *= sr * sc[j]
                    elif code == OP_COPY:
                        kb = kk[ops[o, 2]]
                        tb = tt[ops[o, 2]]
                        for j in range(r):
                            kb[j] = ka[j]
                            tb[j] = ta[j]
                    elif code == OP_ADD:
                        kb = kk[ops[o, 2]]
                        tb = tt[ops[o, 2]]
                        for j in range(r):
                            kb[j] += ka[j]
                            tb[j] += ta[j]
                    elif code == OP_SCALE:
                        g = params[o, 0]
                        for j in range(r):
                            ka[j] *= g
                            ta[j] *= g
                    elif code == OP_OUTPUT:
                        if ops[o, 2] >= 0:
                            out[ops[o, 2], oi, c0:c0 + r] = ka[:r]
                        if ops[o, 3] >= 0:
                            out[ops[o, 3], oi, c0:c0 + r] = ta[:r]


@njit(**JIT_PARALLEL)
def mirror_lower(a):
    """a[..., j, i] = a[..., i, j] for j < i, in cache-sized blocks, in parallel."""
    n = a.shape[-1]
    b = 64
    nb = (n + b - 1) // b
    for layer in range(a.shape[0]):
        for bi in prange(nb):
            for bj in range(bi + 1):
                for i in range(bi * b, min(n, bi * b + b)):
                    for j in range(bj * b, min(i, bj * b + b)):
                        a[layer, j, i] = a[layer, i, j]
