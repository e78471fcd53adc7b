"""Fused tile kernels of the deep NNGP recursion.

A tile arrives holding the input Gram and is transformed in place: a short run of entries at
a time goes through every layer in buffers that stay in L1 (the affine step
K <- bias_var + weight_var * K and the activation step K <- F(q_i, q_j, K / sqrt(q_i q_j))),
so no full-size temporary is made per layer.  Two activation steps exist:

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
from .interp import blend, interp2, interp3, kappa_of, theta_of, warp_mixed


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


@njit(**JIT_PARALLEL)
def slice_tile(out, out_row0, row0, nr, inv_d, weight_var, bias_var, inv_sq_r, inv_sq_c,
               sq_d_r, sq_d_c, slices, depth, slot, gslot, diag_offset):
    """Deep kernel of one tile on the ``slice`` path, in place.

    out : (layers, N, nc) C-contiguous; the tile is its rows out_row0 .. out_row0 + nr - 1.
        On entry the input inner products <x_i, x_j> are in layer ``gslot``; the kernel at
        depth l goes to out[slot[l]] (slot[l] >= 0).
    row0 : index of the tile's first row in the per-row arrays.
    inv_sq_r, inv_sq_c : (depth, n) 1 / sqrt(q^l) of the rows' and columns' inputs.
    sq_d_r, sq_d_c : (depth, n) sqrt(E[phi^2](q^l)).
    slices : (depth, M, 4) cubic coefficients of the normalised F in y at each layer.
    slot : (depth + 1,) int64, the output layer of each depth, or -1 to skip it.
    gslot : the layer holding the input Gram (read before anything is written there).
    diag_offset : >= 0 when column j = i + diag_offset is row i's own input (a symmetric
        panel): only j <= i + diag_offset is computed; -1 for a full tile.

    Each row goes through the layers a run of COLUMN_RUN columns at a time, in three loops
    per layer: the square roots (SIMD), the table look-ups (a gather, scalar), the scaling
    (SIMD).  Split this way the compiler vectorises the first and last; fused it vectorises
    none (3.5x slower, measured).
    """
    m = slices.shape[1]
    triangle = diag_offset >= 0
    steps = (nr + 1) // 2 if triangle else nr
    for p in prange(steps):
        buf = np.empty(COLUMN_RUN)
        cell = np.empty(COLUMN_RUN, dtype=np.int64)
        frac = np.empty(COLUMN_RUN)
        for half in range(2):
            i = _row_of(p, half, nr, triangle)
            if i < 0:
                continue
            oi = out_row0 + i
            ri = row0 + i
            ncol = _row_end(i, out.shape[2], diag_offset)
            for c0 in range(0, ncol, COLUMN_RUN):
                r = min(ncol, c0 + COLUMN_RUN) - c0
                for j in range(r):
                    buf[j] = bias_var + weight_var * out[gslot, oi, c0 + j] * inv_d
                if slot[0] >= 0:
                    out[slot[0], oi, c0:c0 + r] = buf[:r]
                for l in range(depth):
                    a = inv_sq_r[l, ri]
                    col_inv = inv_sq_c[l, c0:c0 + r]
                    for j in range(r):
                        rho = min(1.0, max(-1.0, buf[j] * a * col_inv[j]))
                        y = math.sqrt(0.5 + 0.5 * rho) - math.sqrt(0.5 - 0.5 * rho)
                        u = (y + 1.0) * 0.5 * m
                        k = min(int(u), m - 1)
                        cell[j] = k
                        frac[j] = u - k
                    sl = slices[l]
                    for j in range(r):
                        k = cell[j]
                        t = frac[j]
                        frac[j] = sl[k, 0] + t * (sl[k, 1] + t * (sl[k, 2] + t * sl[k, 3]))
                    scale = weight_var * sq_d_r[l, ri]
                    col_d = sq_d_c[l, c0:c0 + r]
                    for j in range(r):
                        buf[j] = bias_var + scale * frac[j] * col_d[j]
                    if slot[l + 1] >= 0:
                        out[slot[l + 1], oi, c0:c0 + r] = buf[:r]


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


@njit(**JIT_PARALLEL)
def general_tile(out, out_row0, row0, nr, inv_d, weight_var, bias_var, q_r, q_c, sq_d_r,
                 sq_d_c, f_n, x0, dx, degree, lin2, f3, x30, dx3, sqrt_axis, warp3, depth,
                 slot, gslot, diag_offset):
    """Deep kernel of one tile on the ``general`` path (any variances, any phi), in place.

    q_r, q_c : (depth, n) variances q^l of the rows' and columns' inputs; the other
    arguments as in :func:`slice_tile` and ``Table.interpolation_args()`` (``degree`` is
    unused: homogeneous tables take the slice path).
    """
    triangle = diag_offset >= 0
    steps = (nr + 1) // 2 if triangle else nr
    for p in prange(steps):
        wa = np.empty(INTERP_POINTS)
        wb = np.empty(INTERP_POINTS)
        wc = np.empty(INTERP_POINTS)
        for half in range(2):
            i = _row_of(p, half, nr, triangle)
            if i < 0:
                continue
            oi = out_row0 + i
            ri = row0 + i
            for j in range(_row_end(i, out.shape[2], diag_offset)):
                if triangle and j == i + diag_offset:
                    continue  # the diagonal comes from the variance recursion
                k = bias_var + weight_var * out[gslot, oi, j] * inv_d
                if slot[0] >= 0:
                    out[slot[0], oi, j] = k
                for l in range(depth):
                    a = q_r[l, ri]
                    b = q_c[l, j]
                    rho = k / math.sqrt(a * b)
                    fn = _general_normalized(f_n, x0, dx, lin2, f3, x30, dx3, sqrt_axis,
                                             warp3, a, b, rho, wa, wb, wc)
                    k = bias_var + weight_var * fn * sq_d_r[l, ri] * sq_d_c[l, j]
                    if slot[l + 1] >= 0:
                        out[slot[l + 1], oi, j] = k


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
