"""The fused engine of networks with spatial axes: one Numba loop per tile of input pairs.

A network with convolutions, pooling, flattening or graph aggregation compiles
(nngp_lut/kernel/spatial_program.py) into a short program of ops on registers, as the
vector engine (kernel.py) does, but a register holds a pair's whole spatial map: the
diagonal map K_{h,h}(x, x') (P = H W entries) or the full covariance K_{h,h'}(x, x')
(P^2 entries), NNGP and NTK side by side.  Each pair of inputs runs through every op with
its maps in per-thread buffers that stay in cache across the layers; nothing of size
(n1, n2, P) is ever made.  Rows of a tile are spread over the cores by ``prange``.

Convolution is a box sum over the filter's offsets, separable over the axes: a pass along
the height, then one along the width (the same offset on both positions of a full map),
2 k adds per entry for a k x k filter instead of the k^2 of a convolution with an identity
filter.  Pooling sums each position over its own window (four passes on a full map).

References
----------
Novak et al., "Bayesian Deep Convolutional Networks with Many Channels are Gaussian
Processes", ICLR 2019, eq. (7); Arora et al., "On Exact Computation with an Infinitely
Wide Neural Net", NeurIPS 2019, section 4.
"""

import math

import numpy as np
from numba import njit, prange

from .config import INTERP_POINTS, JIT, JIT_PARALLEL
from .kernel import _cubic, _general_normalized, _row_end, _row_of

# Op codes (one row of ``ops``: the fields OPF_*).
SOP_INPUT = 0  # K[a] = <x1_h, x2_h'> / C at the input positions, Theta[a] = 0
SOP_AFFINE = 1  # Theta = p2 K + p3 + p0 Theta;  K = p1 + p0 K  (a Dense: per position)
SOP_CONV = 2  # K = p1 + p0 box(K);  Theta = p2 box(K) + p3 + p0 box(Theta)
SOP_POOL = 3  # K, Theta = the mean over each position's window (full maps)
SOP_ACTIVATION = 4  # K = sqrt(D_h D'_h') s(rho), Theta *= sqrt(Dd_h Dd'_h') sdot(rho)
SOP_NORMALIZE = 5  # K, Theta *= v_h v'_h' (vectors at b)
SOP_FLATTEN = 6  # K, Theta = the mean of the diagonal entries (h = h')
SOP_GLOBAL_POOL = 7  # K, Theta = the mean of every entry (full maps)
SOP_AGGREGATE = 8  # K, Theta = A K A^T over the nodes (full maps)
SOP_COPY = 9  # register b = register a
SOP_ADD = 10  # register b += register a
SOP_SCALE = 11  # register a *= p0
SOP_OUTPUT = 12  # out[b] = K[a][0] (b >= 0), out[c] = Theta[a][0] (c >= 0)

# Fields of an op row.
OPF_CODE, OPF_A, OPF_B, OPF_C = 0, 1, 2, 3
OPF_H, OPF_W = 4, 5  # input spatial shape (1-D: W = 1)
OPF_HO, OPF_WO = 6, 7  # output spatial shape
OPF_IY, OPF_KY = 8, 9  # offset of the height window table in ``windows``, its width
OPF_IX, OPF_KX = 10, 11  # the same along the width
OPF_VEC = 12  # offset of the op's per-position vectors in ``rows`` / ``cols``
OP_FIELDS = 13


@njit(**JIT)
def _pass1(src, dst, outer, n_out, inner, n_in, windows, off, k):
    """dst[p, o, q] = sum_t src[p, idx[o, t], q] for one axis of (outer, n_in, inner)
    (idx = windows[off + o k + t], -1: a zero outside the image)."""
    for p in range(outer):
        for o in range(n_out):
            base = (p * n_out + o) * inner
            for q in range(inner):
                dst[base + q] = 0.0
            for t in range(k):
                s = windows[off + o * k + t]
                if s < 0:
                    continue
                sb = (p * n_in + s) * inner
                for q in range(inner):
                    dst[base + q] += src[sb + q]


@njit(**JIT)
def _pass2(src, dst, outer, n_out, mid, n_in, inner, windows, off, k):
    """dst[p, o1, m, o2, q] = sum_t src[p, idx[o1, t], m, idx[o2, t], q]: one axis of both
    positions of a full map shifted by the same offset (the convolution's)."""
    for p in range(outer):
        for o1 in range(n_out):
            for m in range(mid):
                for o2 in range(n_out):
                    base = (((p * n_out + o1) * mid + m) * n_out + o2) * inner
                    for q in range(inner):
                        dst[base + q] = 0.0
            for t in range(k):
                s1 = windows[off + o1 * k + t]
                if s1 < 0:
                    continue
                for m in range(mid):
                    for o2 in range(n_out):
                        s2 = windows[off + o2 * k + t]
                        if s2 < 0:
                            continue
                        base = (((p * n_out + o1) * mid + m) * n_out + o2) * inner
                        sb = (((p * n_in + s1) * mid + m) * n_in + s2) * inner
                        for q in range(inner):
                            dst[base + q] += src[sb + q]


@njit(**JIT)
def _box(src, tmp, dst, op, windows, full):
    """The box sum of a convolution (not yet divided by the filter size): src -> dst,
    through tmp."""
    h, w, ho, wo = op[OPF_H], op[OPF_W], op[OPF_HO], op[OPF_WO]
    iy, ky, ix, kx = op[OPF_IY], op[OPF_KY], op[OPF_IX], op[OPF_KX]
    if full:  # (h, w, h, w) -> (ho, w, ho, w) -> (ho, wo, ho, wo)
        _pass2(src, tmp, 1, ho, w, h, w, windows, iy, ky)
        _pass2(tmp, dst, ho, wo, ho, w, 1, windows, ix, kx)
    else:  # (h, w) -> (ho, w) -> (ho, wo)
        _pass1(src, tmp, 1, ho, w, h, windows, iy, ky)
        _pass1(tmp, dst, ho, wo, 1, w, windows, ix, kx)


@njit(**JIT)
def _pool(src, tmp, dst, op, windows):
    """Each position of a full map summed over its own window: four passes, ending in
    dst (not yet divided by the window size squared)."""
    h, w, ho, wo = op[OPF_H], op[OPF_W], op[OPF_HO], op[OPF_WO]
    iy, ky, ix, kx = op[OPF_IY], op[OPF_KY], op[OPF_IX], op[OPF_KX]
    _pass1(src, tmp, 1, ho, w * h * w, h, windows, iy, ky)  # (ho, w, h, w)
    _pass1(tmp, dst, ho, wo, h * w, w, windows, ix, kx)  # (ho, wo, h, w)
    _pass1(dst, tmp, ho * wo, ho, w, h, windows, iy, ky)  # (ho, wo, ho, w)
    _pass1(tmp, dst, ho * wo * ho, wo, 1, w, windows, ix, kx)  # (ho, wo, ho, wo)


@njit(**JIT)
def _aggregate(src, tmp, dst, n, ptr, idx, val):
    """dst = A src A^T for an (n, n) map and A in CSR form."""
    for h in range(n):  # tmp = A src
        for g in range(n):
            tmp[h * n + g] = 0.0
        for e in range(ptr[h], ptr[h + 1]):
            k = idx[e]
            v = val[e]
            for g in range(n):
                tmp[h * n + g] += v * src[k * n + g]
    for h in range(n):  # dst = tmp A^T
        for g in range(n):
            acc = 0.0
            for e in range(ptr[g], ptr[g + 1]):
                acc += tmp[h * n + idx[e]] * val[e]
            dst[h * n + g] = acc


@njit(**JIT_PARALLEL)
def spatial_tile(out, out_row0, row0, nr, x1, x2, n_pos, n_chan, ops, params, windows,
                 rows, cols, agg_ptr, agg_idx, agg_val, slices_f, slices_df, f_n, df_n,
                 x0, dx, lin2, f3, df3, x30, dx3, sqrt_axis, warp3, n_regs, size, full,
                 with_ntk, diag_offset):
    """One tile of a compiled spatial network, NNGP and (``with_ntk``) NTK.

    out : (layers, N, nc); the tile is its rows out_row0 .. out_row0 + nr - 1 and OP_OUTPUT
        writes the layers it names.
    row0 : index of the tile's first row in x1 and ``rows``.
    x1, x2 : (n1, n_pos * n_chan), (n2, ...) the inputs, positions then channels (NHWC).
    ops, params : (n_ops, OP_FIELDS) int64 and (n_ops, 4) float64, the program.
    windows : int64 concatenated (out, k) tables of input positions of each window.
    rows, cols : (n1, m), (n2, m) per-position vectors of every input, by op (at OPF_VEC):
        activations: 1/sqrt(q) (slice) or q (general), sqrt(E[phi^2]), sqrt(E[phi'^2]);
        normalisations: the factor.
    agg_ptr, agg_idx, agg_val : the adjacency of SOP_AGGREGATE (CSR).
    slices_f ... warp3 : the activations' look-ups, as ``kernel.program_tile``.
    size : entries of the largest register (P or P^2); full : full maps (else diagonal).
    diag_offset : >= 0 on a symmetric panel (only j <= i + diag_offset), else -1.
    """
    m = slices_f.shape[1]
    triangle = diag_offset >= 0
    steps = (nr + 1) // 2 if triangle else nr
    n_ops = ops.shape[0]
    for p in prange(steps):
        kk = np.empty((n_regs, size))
        tt = np.empty((n_regs, size))
        s1 = np.empty(size)
        s2 = np.empty(size)
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
            for j in range(ncol):
                for o in range(n_ops):
                    op = ops[o]
                    code = op[OPF_CODE]
                    ka = kk[op[OPF_A]]
                    ta = tt[op[OPF_A]]
                    n_in = op[OPF_H] * op[OPF_W]
                    n_out = op[OPF_HO] * op[OPF_WO]
                    e_in = n_in * n_in if full else n_in
                    e_out = n_out * n_out if full else n_out
                    if code == SOP_INPUT:
                        inv_c = 1.0 / n_chan
                        if full:
                            for h in range(n_pos):
                                for g in range(n_pos):
                                    acc = 0.0
                                    for c in range(n_chan):
                                        acc += x1[ri, h * n_chan + c] * x2[j, g * n_chan + c]
                                    ka[h * n_pos + g] = acc * inv_c
                        else:
                            for h in range(n_pos):
                                acc = 0.0
                                for c in range(n_chan):
                                    acc += x1[ri, h * n_chan + c] * x2[j, h * n_chan + c]
                                ka[h] = acc * inv_c
                        for e in range(e_out):
                            ta[e] = 0.0
                    elif code == SOP_AFFINE:
                        w = params[o, 0]
                        b = params[o, 1]
                        if with_ntk:
                            ak = params[o, 2]
                            c = params[o, 3]
                            for e in range(e_out):
                                ta[e] = ak * ka[e] + c + w * ta[e]
                        for e in range(e_out):
                            ka[e] = b + w * ka[e]
                    elif code == SOP_CONV:
                        inv = 1.0 / (op[OPF_KY] * op[OPF_KX])
                        w = params[o, 0] * inv
                        b = params[o, 1]
                        _box(ka, s1, s2, op, windows, full)  # s2 = box(K)
                        if with_ntk:
                            ak = params[o, 2] * inv
                            c = params[o, 3]
                            _box(ta, s1, ka, op, windows, full)  # K's buffer: box(Theta)
                            for e in range(e_out):
                                ta[e] = ak * s2[e] + c + w * ka[e]
                        for e in range(e_out):
                            ka[e] = b + w * s2[e]
                    elif code == SOP_POOL:
                        inv = 1.0 / (op[OPF_KY] * op[OPF_KX]) ** 2
                        _pool(ka, s1, s2, op, windows)
                        for e in range(e_out):
                            ka[e] = s2[e] * inv
                        if with_ntk:
                            _pool(ta, s1, s2, op, windows)
                            for e in range(e_out):
                                ta[e] = s2[e] * inv
                    elif code == SOP_ACTIVATION:
                        v = op[OPF_VEC]
                        sl = op[OPF_C]
                        dv = 1.0
                        for h in range(n_in if full else 1):
                            base = h * n_in if full else 0
                            cnt = n_in
                            # the row's position: h on a full map; each entry's own else
                            for g in range(cnt):
                                e = base + g
                                hr = h if full else g
                                if sl >= 0:
                                    rho = ka[e] * rows[ri, v + hr] * cols[j, v + g]
                                    rho = min(1.0, max(-1.0, rho))
                                    y = math.sqrt(0.5 + 0.5 * rho) - math.sqrt(0.5 - 0.5 * rho)
                                    u = (y + 1.0) * 0.5 * m
                                    kc = min(int(u), m - 1)
                                    fr = u - kc
                                    fv = _cubic(slices_f[sl], kc, fr)
                                    if with_ntk:
                                        dv = _cubic(slices_df[sl], kc, fr)
                                else:
                                    qa = rows[ri, v + hr]
                                    qb = cols[j, v + g]
                                    rho = min(1.0, max(-1.0, ka[e] / math.sqrt(qa * qb)))
                                    fv = _general_normalized(f_n, x0, dx, lin2, f3, x30, dx3,
                                                             sqrt_axis, warp3, qa, qb, rho,
                                                             wa, wb, wc)
                                    if with_ntk:
                                        dv = _general_normalized(df_n, x0, dx, lin2, df3, x30,
                                                                 dx3, sqrt_axis, warp3, qa,
                                                                 qb, rho, wa, wb, wc)
                                ka[e] = fv * rows[ri, v + n_in + hr] * cols[j, v + n_in + g]
                                if with_ntk:
                                    ta[e] *= dv * rows[ri, v + 2 * n_in + hr] * \
                                        cols[j, v + 2 * n_in + g]
                    elif code == SOP_NORMALIZE:
                        v = op[OPF_VEC]
                        for h in range(n_in if full else 1):
                            base = h * n_in if full else 0
                            for g in range(n_in):
                                e = base + g
                                hr = h if full else g
                                f = rows[ri, v + hr] * cols[j, v + g]
                                ka[e] *= f
                                ta[e] *= f
                    elif code == SOP_FLATTEN:
                        acc = 0.0
                        acc_t = 0.0
                        for h in range(n_in):
                            e = h * n_in + h if full else h
                            acc += ka[e]
                            acc_t += ta[e]
                        ka[0] = acc / n_in
                        ta[0] = acc_t / n_in
                    elif code == SOP_GLOBAL_POOL:
                        acc = 0.0
                        acc_t = 0.0
                        for e in range(e_in):
                            acc += ka[e]
                            acc_t += ta[e]
                        ka[0] = acc / e_in
                        ta[0] = acc_t / e_in
                    elif code == SOP_AGGREGATE:
                        _aggregate(ka, s1, s2, n_in, agg_ptr, agg_idx, agg_val)
                        for e in range(e_in):
                            ka[e] = s2[e]
                        if with_ntk:
                            _aggregate(ta, s1, s2, n_in, agg_ptr, agg_idx, agg_val)
                            for e in range(e_in):
                                ta[e] = s2[e]
                    elif code == SOP_COPY:
                        kb = kk[op[OPF_B]]
                        tb = tt[op[OPF_B]]
                        for e in range(e_in):
                            kb[e] = ka[e]
                            tb[e] = ta[e]
                    elif code == SOP_ADD:
                        kb = kk[op[OPF_B]]
                        tb = tt[op[OPF_B]]
                        for e in range(e_in):
                            kb[e] += ka[e]
                            tb[e] += ta[e]
                    elif code == SOP_SCALE:
                        g0 = params[o, 0]
                        for e in range(e_in):
                            ka[e] *= g0
                            ta[e] *= g0
                    elif code == SOP_OUTPUT:
                        if op[OPF_B] >= 0:
                            out[op[OPF_B], oi, j] = ka[0]
                        if op[OPF_C] >= 0:
                            out[op[OPF_C], oi, j] = ta[0]
