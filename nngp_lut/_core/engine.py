"""The fused engine: one Numba loop that interprets a compiled network on a tile of pairs.

A network of the layer algebra compiles (nngp_lut/kernel/compiler.py) into a short
program of ops on registers (one register per live branch).  A register holds, for a block
of J pairs (one row input, J column inputs), the pair's whole map: NNGP and NTK side by
side, with entry e of column jj at [e * J + jj], so every loop's innermost axis is the J
contiguous pairs (SIMD) and the block stays in cache across the layers; nothing of size
(n1, n2, P) is ever made.  The map is

* one entry for vectors of features (P = 1: fully connected networks, and every network
  after its Flatten or GlobalAvgPool),
* the spatially diagonal map K_{h,h}(x, x') (P = H W entries), or
* the full covariance K_{h,h'}(x, x') (P^2 entries), which pooling and aggregation need.

A simple RNN (OP_RECUR) runs its recursion over the rows t of a pair's (T, T') map: row t
takes the state term from row t - 1, then the activation of row t.

Rows of a tile, in groups that go through each block of columns together, are spread over
the cores by ``prange``.  A network of vectors on inputs of one norm skips the ops: it is
one function of the Gram entry, read per entry from its cells (``composite_tile``).
Convolution is a box sum over the filter's offsets, separable over the axes (2 k adds per
entry for a k x k filter); pooling sums each position over its own window (four passes on
a full map).

An activation has two look-ups:

* ``slice``: F = sqrt(D_i D_j) * s_l(rho), with s_l a 1-D table of the normalised F in
  w = sqrt(1 - |rho|), one half for rho >= 0 and one for rho < 0, each on a uniform grid
  of w in [0, 1].  Exact when every input has the same variance at layer l (s_l is the
  table's slice at that variance) and for homogeneous phi (s_l = s for every layer and
  variance).  w costs one square root, theta = arccos rho is an analytic function of it on
  each half (theta = 2 asin(w / sqrt 2) for rho >= 0), so relu's kinks at rho = +-1 are
  smooth in it, and the grid is nearly uniform in theta (d theta / dw in [sqrt 2, 2]).  The
  cubic coefficients of F and of Fdot of one cell share one 64-byte line.
* ``general``: F from the 2-D table where q_i == q_j and the 3-D table otherwise.

A slice activation runs two loops over each run of entries: the coordinates (vectorised),
then the look-ups (a gather, scalar) with the scaling and the affine step; fused into one,
the loop does not vectorise (2.5x slower, measured).

References
----------
Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, eqs. (4)-(5).
Novak et al., "Bayesian Deep Convolutional Networks with Many Channels are Gaussian
Processes", ICLR 2019, eq. (7); Arora et al., "On Exact Computation with an Infinitely
Wide Neural Net", NeurIPS 2019, section 4.
"""

import math

import numpy as np
from numba import njit, prange

from .config import COLUMN_RUN, INTERP_POINTS, JIT, JIT_PARALLEL
from .interp import correlation, general_normalized, theta_of

# Op codes (one row of ``ops``: the fields OPF_*).  INPUT and ACTIVATION end with the affine
# step of a Dense (params as AFFINE; the identity (1, 0, 0, 0) when none follows): the
# compiler folds a Dense into them, which saves a pass over the registers.
OP_INPUT = 0  # K[a] = <x1_h, x2_h'> / C (or the Gram in out[b] / C when b >= 0), Theta = 0
OP_AFFINE = 1  # Theta = p2 K + p3 + p0 Theta;  K = p1 + p0 K  (a Dense: per position)
OP_CONV = 2  # K = p1 + p0 box(K);  Theta = p2 box(K) + p3 + p0 box(Theta)
OP_POOL = 3  # K, Theta = the mean over each position's window (full maps)
OP_ACTIVATION = 4  # K = F(q_i, q_j, rho), Theta *= Fdot (slice c, or -1: the table)
OP_NORMALIZE = 5  # K, Theta *= v_i v_j (per-position vectors at OPF_VEC)
OP_FLATTEN = 6  # K, Theta = the mean of the diagonal entries (h = h')
OP_GLOBAL_POOL = 7  # K, Theta = the mean of every entry (full maps)
OP_AGGREGATE = 8  # K, Theta = A K A^T over the nodes (full maps)
OP_COPY = 9  # register b = register a
OP_ADD = 10  # register b += register a
OP_SCALE = 11  # register a *= p0
OP_OUTPUT = 12  # out[b] = K[a][0] (b >= 0), out[c] = Theta[a][0] (c >= 0)
OP_RECUR = 13  # the recursion of a simple RNN over the time axis of a full map (below)
OP_PICK = 14  # K, Theta = the entry (b, b) of the map (b, diagonal maps): one position
OP_MIX = 15  # K, Theta = A_x K A_x'^T with per-input matrices A (vectors at OPF_VEC)
OP_DIAGONAL_BIAS = 16  # K, Theta += p0 at the entries (h, h) (every entry of diagonal maps)

#: Doubles between the maps of a block's buffers (``_aligned_maps``): 320 bytes, so the
#: same entry of two maps (K and Theta, a register and its scratch) is not a page apart.
STAGGER = 40
#: Most rows of a tile that go through each block of columns together (``engine_tile``):
#: 8 read the columns' data from memory 8x less often (CNN-GP on 10k MNIST images,
#: 2.04 -> 1.53 us per pair, one thread); a small tile keeps >= 32 groups for the cores.
ROW_GROUP = 8
#: Values of the columns' inputs that _input_full copies at a time (256 KB: in L2).
INPUT_CHUNK_ENTRIES = 32768

# Fields of an op row.
OPF_CODE, OPF_A, OPF_B, OPF_C = 0, 1, 2, 3
OPF_H, OPF_W = 4, 5  # input spatial shape (1-D: W = 1; vectors: 1, 1)
OPF_HO, OPF_WO = 6, 7  # output spatial shape
OPF_IY, OPF_IX = 8, 9  # offsets of the height and width window tables in ``windows``
OPF_VEC = 10  # offset of the op's per-position vectors in ``rows`` / ``cols``
OP_FIELDS = 11
#: params of an op without an affine step.
IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0)

@njit(**JIT)
def slice_coefficients(values):
    """Per-interval cubic coefficients (Horner, in t = local coordinate in [0, 1]) of the
    4-point Lagrange interpolant of ``values`` on a uniform grid (one-sided at the ends).
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


@njit(inline="always", **JIT)
def _cubic(sl, k, c, t):
    """The cubic of cell k whose Horner coefficients are sl[k, c .. c + 3], at t."""
    return sl[k, c] + t * (sl[k, c + 1] + t * (sl[k, c + 2] + t * sl[k, c + 3]))


# A window table in ``windows`` at offset b: [k, stride, tptr[0..k], (lo, hi, start) per
# segment, idx[n_out, k], pad]: the segments of offset t are tptr[t] .. tptr[t+1] - 1, and output
# positions lo <= o < hi read input position start + (o - lo) * stride (runs without an edge
# or a wrap-around; zero padding is the positions no segment covers); idx[o, t] is the input
# position that output o reads at offset t (-1: padding), the same table by outputs; pad:
# the table is plain (stride 1, idx[o, t] = o + t - pad inside the input, -1 past its
# edges), or -1.


@njit(**JIT)
def _taps(win, b):
    """Offset in ``win`` of the (n_out, k) table idx of the window table at b."""
    k = win[b]
    return b + 3 + k + 3 * win[b + 2 + k]


@njit(**JIT)
def _pass1(src, dst, outer, n_out, inner, n_in, win, b):
    """dst[p, o, q] = sum_t src[p, idx(o, t), q] over one axis of (outer, n_in, inner): each
    output row written once, from its (up to k) input rows."""
    k = win[b]
    ix = _taps(win, b)
    for p in range(outer):
        for o in range(n_out):
            d = dst[(p * n_out + o) * inner:(p * n_out + o + 1) * inner]
            _row_sum(src, d, p * n_in * inner, inner, win, ix + o * k, k)


@njit(**JIT)
def _row_sum(src, d, s0, inner, win, at, k):
    """d = the sum over the taps i = win[at .. at + k - 1] (>= 0) of the rows
    src[s0 + i inner ...] of length inner (loops over slices: the vectoriser needs indices
    it knows are not negative)."""
    first = True
    for t in range(k):
        i = win[at + t]
        if i < 0:
            continue
        s = src[s0 + i * inner:s0 + (i + 1) * inner]
        if first:
            for q in range(inner):
                d[q] = s[q]
            first = False
        else:
            for q in range(inner):
                d[q] += s[q]
    if first:
        for q in range(inner):
            d[q] = 0.0


@njit(**JIT)
def _pass2(src, dst, outer, n_out, mid, n_in, inner, win, b):
    """dst[p, o1, m, o2, q] = sum_t src[p, idx(o1, t), m, idx(o2, t), q]: one axis of both
    positions of a full map shifted by the same offset (the convolution's); each output
    row (p, o1, m) is summed in cache and written once."""
    k = win[b]
    stride = win[b + 1]
    ix = _taps(win, b)
    seg0 = b + 3 + k
    row = n_out * inner
    for p in range(outer):
        for o1 in range(n_out):
            for m in range(mid):
                d = dst[((p * n_out + o1) * mid + m) * row:((p * n_out + o1) * mid + m + 1) * row]
                for e in range(row):
                    d[e] = 0.0
                for t in range(k):
                    i1 = win[ix + o1 * k + t]
                    if i1 < 0:
                        continue
                    sbase = (((p * n_in + i1) * mid + m) * n_in) * inner
                    for s2 in range(win[b + 2 + t], win[b + 3 + t]):
                        lo2 = win[seg0 + 3 * s2]
                        hi2 = win[seg0 + 3 * s2 + 1]
                        st2 = win[seg0 + 3 * s2 + 2]
                        for o2 in range(hi2 - lo2):
                            dd = d[(lo2 + o2) * inner:(lo2 + o2 + 1) * inner]
                            ss = src[sbase + (st2 + o2 * stride) * inner:
                                     sbase + (st2 + o2 * stride + 1) * inner]
                            for q in range(inner):
                                dd[q] += ss[q]


@njit(**JIT)
def _plain_pad(win, b, n_out):
    """The padding of a plain window table (stride 1, output o reads o + t - pad, zeros past
    the edges), or -1."""
    return win[_taps(win, b) + n_out * win[b]]


@njit(**JIT)
def _plane(src, dst, d0, s0, s_step, n1, o1, mid, n, inner, k, pad):
    """One plane of a plain box sum: dst[d0 + (m n + o2) inner + q] = sum_t
    src[s0 + (o1 + t - pad) s_step + (m n + o2 + t - pad) inner + q] over the taps inside
    both axes (n1 = 0: no first position, s_step unused).  Each tap is one shifted pass
    over the whole plane (long SIMD loops, the plane in L1), which at the edges of the
    second position reads the neighbouring row's entry instead of the zero padding: those
    few entries are then taken back out (a subtraction per edge entry and tap, where
    summing each edge entry again, tap by tap, cost GAP's 16x16 maps half their box sums)."""
    size = mid * n * inner
    first = True
    for t in range(k):
        i1 = o1 + t - pad
        if n1 > 0 and (i1 < 0 or i1 >= n1):
            continue
        sb = s0 + (i1 * s_step if n1 > 0 else 0)
        s = t - pad
        shift = s * inner
        lo = max(0, -shift)
        hi = min(size, size - shift)
        d = dst[d0 + lo:d0 + hi]
        sv = src[sb + lo + shift:sb + hi + shift]
        if first:
            for f in range(hi - lo):
                d[f] = sv[f]
            for f in range(d0, d0 + lo):  # entries this tap does not reach
                dst[f] = 0.0
            for f in range(d0 + max(lo, hi), d0 + size):
                dst[f] = 0.0
            first = False
        else:
            for f in range(hi - lo):
                d[f] += sv[f]
        if s == 0:
            continue
        # The pass's reads across the end of a row (o2 + s outside 0 .. n - 1), undone.
        w0, w1 = (0, min(n, -s)) if s < 0 else (max(0, n - s), n)
        for m in range(mid):
            for o2 in range(w0, w1):
                e = (m * n + o2) * inner
                if e < lo or e >= hi:
                    continue
                dd = dst[d0 + e:d0 + e + inner]
                sw = src[sb + e + shift:sb + e + shift + inner]
                for q in range(inner):
                    dd[q] -= sw[q]
    if first:  # no tap inside the first axis: every entry is zero
        for f in range(d0, d0 + size):
            dst[f] = 0.0


@njit(**JIT)
def _conv(ka, ta, s1, s2, op, win, full, nj, w, b, ak, c, with_ntk):
    """A convolution on K (ka) and Theta (ta) in place: K = b + w box(K), Theta = ak box(K)
    + c + w box(Theta) (w, ak already divided by the filter size).  The first axis' pass
    of each map goes to s1, s2, the second axis' pass back to ka, ta, plane by plane, each
    plane through the affine step while it is in cache.  Plain windows (stride 1, zero
    padding) take shifted passes over whole planes (_plane); others their tables."""
    h, wd, ho, wo = op[OPF_H], op[OPF_W], op[OPF_HO], op[OPF_WO]
    by, bx = op[OPF_IY], op[OPF_IX]
    py = _plain_pad(win, by, ho)
    px = _plain_pad(win, bx, wo)
    ky, kx = win[by], win[bx]
    plain = py >= 0 and px >= 0 and h == ho and wd == wo
    if full:  # (h, w, h, w) -> (ho, w, ho, w) -> (ho, wo, ho, wo)
        plane = ho * wd * nj
        for src, dst, on in ((ka, s1, True), (ta, s2, with_ntk)):
            if not on:
                continue
            if plain:
                for o1 in range(ho):
                    _plane(src, dst, o1 * wd * plane, 0, wd * plane, h, o1, wd, h, wd * nj,
                           ky, py)
            else:
                _pass2(src, dst, 1, ho, wd, h, wd * nj, win, by)
        if plain:
            plane = ho * wo * nj
            for p in range(ho):
                for o1 in range(wo):
                    d0 = (p * wo + o1) * plane
                    s0 = p * wd * plane
                    _plane(s1, ka, d0, s0, plane, wd, o1, ho, wd, nj, kx, px)
                    if with_ntk:
                        _plane(s2, ta, d0, s0, plane, wd, o1, ho, wd, nj, kx, px)
                    _affine(ka, ta, d0, d0 + plane, w, b, ak, c, with_ntk)
            return
        _pass2(s1, ka, ho, wo, ho, wd, nj, win, bx)
        if with_ntk:
            _pass2(s2, ta, ho, wo, ho, wd, nj, win, bx)
    else:  # (h, w) -> (ho, w) -> (ho, wo)
        if plain:
            _plane(ka, s1, 0, 0, 0, 0, 0, 1, h, wd * nj, ky, py)
            if with_ntk:
                _plane(ta, s2, 0, 0, 0, 0, 0, 1, h, wd * nj, ky, py)
            for p in range(ho):  # a row of the image at a time (in cache)
                d0 = p * wo * nj
                _plane(s1, ka, d0, p * wd * nj, 0, 0, 0, 1, wd, nj, kx, px)
                if with_ntk:
                    _plane(s2, ta, d0, p * wd * nj, 0, 0, 0, 1, wd, nj, kx, px)
                _affine(ka, ta, d0, d0 + wo * nj, w, b, ak, c, with_ntk)
            return
        _pass1(ka, s1, 1, ho, wd * nj, h, win, by)
        if with_ntk:
            _pass1(ta, s2, 1, ho, wd * nj, h, win, by)
        _pass1(s1, ka, ho, wo, nj, wd, win, bx)
        if with_ntk:
            _pass1(s2, ta, ho, wo, nj, wd, win, bx)
    _affine(ka, ta, 0, (ho * wo) ** 2 * nj if full else ho * wo * nj, w, b, ak, c, with_ntk)


@njit(**JIT)
def _pool(src, tmp, dst, op, win, nj):
    """Each position of a full map summed over its own window: four passes, ending in
    dst (not yet divided by the window size squared)."""
    h, w, ho, wo = op[OPF_H], op[OPF_W], op[OPF_HO], op[OPF_WO]
    iy, ix = op[OPF_IY], op[OPF_IX]
    _pass1(src, tmp, 1, ho, w * h * w * nj, h, win, iy)  # (ho, w, h, w)
    _pass1(tmp, dst, ho, wo, h * w * nj, w, win, ix)  # (ho, wo, h, w)
    _pass1(dst, tmp, ho * wo, ho, w * nj, h, win, iy)  # (ho, wo, ho, w)
    _pass1(tmp, dst, ho * wo * ho, wo, nj, w, win, ix)  # (ho, wo, ho, wo)


@njit(**JIT)
def _aggregate(src, tmp, dst, n, ptr, idx, val, nj):
    """dst = A src A^T for (n, n) maps (nj pairs per entry) and A in CSR form."""
    for e in range(n * n * nj):
        tmp[e] = 0.0
    for h in range(n):  # tmp = A src
        for e in range(ptr[h], ptr[h + 1]):
            kb = idx[e] * n * nj
            v = val[e]
            hb = h * n * nj
            for g in range(n * nj):
                tmp[hb + g] += v * src[kb + g]
    for e in range(n * n * nj):
        dst[e] = 0.0
    for h in range(n):  # dst = tmp A^T
        for g in range(n):
            db = (h * n + g) * nj
            for e in range(ptr[g], ptr[g + 1]):
                v = val[e]
                sb = (h * n + idx[e]) * nj
                for q in range(nj):
                    dst[db + q] += v * tmp[sb + q]


@njit(**JIT)
def _mix(src, tmp, dst, n, rows, cols_t, ri, j0, nj, v):
    """dst = A_x src A_x'^T for (n, n) maps of a block of pairs: A_x of the row input (its
    vectors rows[ri, v + h n + k]) on the first position, A_x' of each column input
    (cols_t[v + g n + l, j]) on the second."""
    for e in range(n * n * nj):
        tmp[e] = 0.0
    for h in range(n):  # tmp[h, l] = sum_k A_x[h, k] src[k, l]: one matrix for the block
        for k in range(n):
            a = rows[ri, v + h * n + k]
            if a == 0.0:
                continue
            sb = k * n * nj
            tb = h * n * nj
            for e in range(n * nj):
                tmp[tb + e] += a * src[sb + e]
    for h in range(n):  # dst[h, g] = sum_l tmp[h, l] A_x'[g, l]: one matrix per column
        for g in range(n):
            db = (h * n + g) * nj
            for q in range(nj):
                dst[db + q] = 0.0
            for l in range(n):
                tb = (h * n + l) * nj
                ac = cols_t[v + g * n + l, j0:j0 + nj]
                for q in range(nj):
                    dst[db + q] += tmp[tb + q] * ac[q]


@njit(**JIT)
def _affine(ka, ta, e0, e1, w, b, ak, c, with_ntk):
    """The affine step of a Dense or a Conv on entries e0 .. e1 - 1: Theta = ak K + c +
    w Theta, K = b + w K (nothing for the identity)."""
    if w == 1.0 and b == 0.0 and ak == 0.0 and c == 0.0:
        return
    kd = ka[e0:e1]
    if with_ntk:
        td = ta[e0:e1]
        for q in range(e1 - e0):
            td[q] = ak * kd[q] + c + w * td[q]
    for q in range(e1 - e0):
        kd[q] = b + w * kd[q]


@njit(inline="always", **JIT)
def _slice_cells(kb, ct, r_inv, cb, fb, n, m):
    """The slice coordinates of n entries (SIMD): rho = K r_inv ct (``correlation``), its
    half (rho < 0: cells m .. 2 m - 1), the cell of w = sqrt(1 - |rho|) on the half's m
    uniform intervals, and the local coordinate in the cell."""
    for q in range(n):
        rho = correlation(kb[q], r_inv * ct[q])
        u = math.sqrt(1.0 - abs(rho)) * m
        kc = max(0, min(int(u), m - 1))  # (NaN: cell 0, and NaN stays)
        cb[q] = kc + (m if rho < 0.0 else 0)
        fb[q] = u - kc


@njit(inline="always", **JIT)
def _slice_scale(kb, tb, cb, fb, sl, cs, ce, n, ws, aks, we, b, c, with_ntk):
    """The look-ups of F and Fdot in one cache line per entry (``sl[cell]``: the cubic
    coefficients of both), the scaling by the per-input moments and the affine step:
    K = b + ws F cs, Theta = aks F cs + c + we Theta Fdot ce."""
    if with_ntk:
        for q in range(n):
            k = cb[q]
            t = fb[q]
            f = _cubic(sl, k, 0, t)
            tb[q] = aks * f * cs[q] + c + we * tb[q] * _cubic(sl, k, 4, t) * ce[q]
            kb[q] = b + ws * f * cs[q]
    else:
        for q in range(n):
            k = cb[q]
            t = fb[q]
            kb[q] = b + ws * _cubic(sl, k, 0, t) * cs[q]


@njit(**JIT)
def _activate(ka, ta, s1, s2, cell, colv, wa, wb, wc, h0, h1, n_in, full, nj, ri, j0, v, sl,
              w, b, ak, c, rows, cols_t, slices, f_n, df_n, f3, df3, grid_f, grid_df,
              with_ntk):
    """An activation, then the affine step (w, b, ak, c) of a Dense folded into it, on rows
    h0 .. h1 - 1 of the block's maps (a full map's row h is its positions (h, g); a diagonal
    map is one row: h0, h1 = 0, 1).

    Per position the op's vectors (at v, n_in entries each) are 1/sqrt(q) (slice sl) or q
    (sl = -1: the table itself), sqrt(E[phi^2](q)) and sqrt(E[phi'^2](q)).  A slice takes
    two loops per run of entries: the coordinates (SIMD, one square root), then the
    look-ups with the scaling and the affine step (scalar gathers: fused with the
    coordinates, the loop does not vectorise, 2.5x slower, measured).  The runs are the
    pairs of a block at one position, or one row of one pair's full map (nj = 1; its
    column vectors first copied to ``colv``, contiguous).
    """
    if sl >= 0:
        tab = slices[sl]
        m = tab.shape[0] // 2
        if full and nj == 1:  # one pair: a row of positions is the SIMD axis
            for k in range(3 if with_ntk else 2):
                for g in range(n_in):
                    colv[k * n_in + g] = cols_t[v + k * n_in + g, j0]
            ct = colv[0:n_in]
            cs = colv[n_in:2 * n_in]
            ce = colv[2 * n_in:3 * n_in] if with_ntk else cs
            cb = cell[0:n_in]
            fb = s1[0:n_in]
            for h in range(h0, h1):
                kb = ka[h * n_in:(h + 1) * n_in]
                tb = ta[h * n_in:(h + 1) * n_in]
                _slice_cells(kb, ct, rows[ri, v + h], cb, fb, n_in, m)
                rs = rows[ri, v + n_in + h]
                re = rows[ri, v + 2 * n_in + h] if with_ntk else 0.0
                _slice_scale(kb, tb, cb, fb, tab, cs, ce, n_in, w * rs, ak * rs, w * re, b,
                             c, with_ntk)
            return
        cb = cell[0:nj]
        fb = s1[0:nj]
        for h in range(h0, h1):
            for g in range(n_in):
                hr = h if full else g  # the row input's position
                base = ((h * n_in + g) if full else g) * nj
                kb = ka[base:base + nj]
                tb = ta[base:base + nj]
                _slice_cells(kb, cols_t[v + g, j0:j0 + nj], rows[ri, v + hr], cb, fb, nj, m)
                rs = rows[ri, v + n_in + hr]
                re = rows[ri, v + 2 * n_in + hr] if with_ntk else 0.0
                cs = cols_t[v + n_in + g, j0:j0 + nj]
                ce = cols_t[v + 2 * n_in + g, j0:j0 + nj] if with_ntk else cs
                _slice_scale(kb, tb, cb, fb, tab, cs, ce, nj, w * rs, ak * rs, w * re, b, c,
                             with_ntk)
        return
    for h in range(h0, h1):
        for g in range(n_in):
            hr = h if full else g  # the row input's position
            base = ((h * n_in + g) if full else g) * nj
            ct = cols_t[v + g, j0:j0 + nj]
            qa = rows[ri, v + hr]
            for q in range(nj):
                qb = ct[q]
                rho = correlation(ka[base + q], 1.0 / math.sqrt(qa * qb))
                theta = theta_of(rho)
                s2[base + q] = general_normalized(f_n, f3, grid_f, qa, qb, theta, wa, wb, wc)
                if with_ntk:
                    s1[base + q] = general_normalized(df_n, df3, grid_df, qa, qb, theta,
                                                      wa, wb, wc)
    # K = sqrt(D_i D_j) F, Theta *= sqrt(Dd_i Dd_j) Fdot, then the affine step; row slices
    # keep the loops simple for the vectoriser.
    for h in range(h0, h1):
        for g in range(n_in):
            hr = h if full else g
            base = ((h * n_in + g) if full else g) * nj
            ws = w * rows[ri, v + n_in + hr]
            cs = cols_t[v + n_in + g, j0:j0 + nj]
            fb = s2[base:base + nj]
            kb = ka[base:base + nj]
            if with_ntk:
                aks = ak * rows[ri, v + n_in + hr]
                we = w * rows[ri, v + 2 * n_in + hr]
                ce = cols_t[v + 2 * n_in + g, j0:j0 + nj]
                db = s1[base:base + nj]
                tb = ta[base:base + nj]
                for q in range(nj):
                    tb[q] = aks * fb[q] * cs[q] + c + we * tb[q] * db[q] * ce[q]
            for q in range(nj):
                kb[q] = b + ws * fb[q] * cs[q]


@njit(**JIT)
def _input_full(ka, xb, x1, x2t, ri, j0, nj, n_pos, n_chan):
    """K_{h,g} = <x1_h, x2_g> / C for every pair of positions of a block of pairs, as
    rank-one updates of contiguous rows: for each row position h and channel c, the row
    (g, q) += x1[h, c] x2[q, g, c].  The columns' channels are first copied to ``xb`` in
    (c, g, q) order, as many channels at a time as it holds (8x faster than a dot product
    per entry: the inner loop is one long SIMD axpy)."""
    span = n_pos * nj
    inv_c = 1.0 / n_chan
    for e in range(n_pos * span):
        ka[e] = 0.0
    chunk = max(1, xb.size // span)
    for c0 in range(0, n_chan, chunk):
        c1 = min(n_chan, c0 + chunk)
        for c in range(c0, c1):
            base = (c - c0) * span
            for g in range(n_pos):
                src = x2t[g * n_chan + c, j0:j0 + nj]
                dst = xb[base + g * nj:base + g * nj + nj]
                for q in range(nj):
                    dst[q] = src[q]
        for h in range(n_pos):
            row = ka[h * span:(h + 1) * span]
            for c in range(c0, c1):
                xv = x1[ri, h * n_chan + c] * inv_c
                xr = xb[(c - c0) * span:(c - c0 + 1) * span]
                for e in range(span):
                    row[e] += xv * xr[e]


@njit(**JIT)
def _run_block(kk, tt, s1, s2, cell, colv, rr, yy, wa, wb, wc, xb, out, oi, ri, j0, nj, x1, x2t,
               n_pos, n_chan, ops, params, win, rows, cols_t, agg_ptr, agg_idx, agg_val, slices,
               f_n, df_n, f3, df3, grid_f, grid_df, full, with_ntk):
    """Every op of the program on one block of nj pairs (row ri, columns j0 .. j0 + nj - 1):
    a plain (not parallel) function, which the compiler optimises as a whole.  Returns how
    many of the values it wrote are NaN or infinite."""
    n_ops = ops.shape[0]
    nonfinite = 0
    for o in range(n_ops):
        op = ops[o]
        code = op[OPF_CODE]
        ka = kk[op[OPF_A]]
        ta = tt[op[OPF_A]]
        n_in = op[OPF_H] * op[OPF_W]
        n_out = op[OPF_HO] * op[OPF_WO]
        e_in = (n_in * n_in if full else n_in) * nj
        e_out = (n_out * n_out if full else n_out) * nj
        if code == OP_INPUT:
            inv_c = 1.0 / n_chan
            if op[OPF_B] >= 0:  # the inner products are in out[b] already (BLAS)
                gram = out[op[OPF_B], oi]
                w = params[o, 0] * inv_c
                b = params[o, 1]
                if with_ntk:
                    ak = params[o, 2] * inv_c
                    c = params[o, 3]
                    for q in range(nj):
                        ta[q] = ak * gram[j0 + q] + c
                for q in range(nj):
                    ka[q] = b + w * gram[j0 + q]
                continue
            if full:
                _input_full(ka, xb, x1, x2t, ri, j0, nj, n_pos, n_chan)
            else:
                for h in range(n_pos):  # the channel dot products at each position
                    kb = ka[h * nj:(h + 1) * nj]
                    col = h * n_chan
                    xv = x1[ri, col] * inv_c
                    xs = x2t[col, j0:j0 + nj]
                    for q in range(nj):  # the first channel assigns (no zeroing pass)
                        kb[q] = xv * xs[q]
                    for c in range(1, n_chan):
                        xv = x1[ri, col + c] * inv_c
                        xs = x2t[col + c, j0:j0 + nj]
                        for q in range(nj):
                            kb[q] += xv * xs[q]
            if with_ntk:
                for e in range(e_out):
                    ta[e] = 0.0
            _affine(ka, ta, 0, e_out, params[o, 0], params[o, 1], params[o, 2], params[o, 3],
                    with_ntk)
        elif code == OP_AFFINE:
            _affine(ka, ta, 0, e_out, params[o, 0], params[o, 1], params[o, 2], params[o, 3],
                    with_ntk)
        elif code == OP_CONV:
            inv = 1.0 / (win[op[OPF_IY]] * win[op[OPF_IX]])
            _conv(ka, ta, s1, s2, op, win, full, nj, params[o, 0] * inv, params[o, 1],
                  params[o, 2] * inv, params[o, 3], with_ntk)
        elif code == OP_POOL:
            inv = 1.0 / (win[op[OPF_IY]] * win[op[OPF_IX]]) ** 2
            _pool(ka, s1, s2, op, win, nj)
            for e in range(e_out):
                ka[e] = s2[e] * inv
            if with_ntk:
                _pool(ta, s1, s2, op, win, nj)
                for e in range(e_out):
                    ta[e] = s2[e] * inv
        elif code == OP_ACTIVATION:
            n_rows = n_in if full else 1
            _activate(ka, ta, s1, s2, cell, colv, wa, wb, wc, 0, n_rows, n_in, full,
                      nj, ri, j0, op[OPF_VEC], op[OPF_C], params[o, 0], params[o, 1],
                      params[o, 2], params[o, 3], rows, cols_t, slices, f_n,
                      df_n, f3, df3, grid_f, grid_df, with_ntk)
        elif code == OP_RECUR:
            # Row t of the (T, T') map after row t - 1 (Alemohammad et al. 2021):
            # the register holds the input part u K_in + b (its affine step came first);
            # add w K_h(t-1, s-1) (the state's Dense), Theta += a K_h + w Theta_h likewise,
            # then the activation of row t turns it into K_h, Theta_h of step t.
            w = params[o, 0]
            ak = params[o, 2]
            span = n_in * nj
            for t in range(n_in):
                if t > 0:
                    prev = (t - 1) * span
                    cur = t * span + nj  # (t, s) reads (t - 1, s - 1)
                    if with_ntk:
                        for e in range(span - nj):
                            ta[cur + e] += ak * ka[prev + e] + w * ta[prev + e]
                    for e in range(span - nj):
                        ka[cur + e] += w * ka[prev + e]
                _activate(ka, ta, s1, s2, cell, colv, wa, wb, wc, t, t + 1, n_in, True, nj, ri,
                          j0, op[OPF_VEC], op[OPF_C], 1.0, 0.0, 0.0, 0.0, rows, cols_t,
                          slices, f_n, df_n, f3, df3, grid_f, grid_df,
                          with_ntk)
        elif code == OP_MIX:
            _mix(ka, s1, s2, n_in, rows, cols_t, ri, j0, nj, op[OPF_VEC])
            for e in range(e_in):
                ka[e] = s2[e]
            if with_ntk:
                _mix(ta, s1, s2, n_in, rows, cols_t, ri, j0, nj, op[OPF_VEC])
                for e in range(e_in):
                    ta[e] = s2[e]
        elif code == OP_DIAGONAL_BIAS:
            bias = params[o, 0]
            for h in range(n_in):
                base = ((h * n_in + h) if full else h) * nj
                for q in range(nj):
                    ka[base + q] += bias
                if with_ntk:
                    for q in range(nj):
                        ta[base + q] += bias
        elif code == OP_PICK:
            h = op[OPF_B]
            base = ((h * n_in + h) if full else h) * nj
            for q in range(nj):
                ka[q] = ka[base + q]
                ta[q] = ta[base + q]
        elif code == OP_NORMALIZE:
            v = op[OPF_VEC]
            for h in range(n_in if full else 1):
                for g in range(n_in):
                    hr = h if full else g
                    base = ((h * n_in + g) if full else g) * nj
                    r = rows[ri, v + hr]
                    col = cols_t[v + g]
                    for q in range(nj):
                        f = r * col[j0 + q]
                        ka[base + q] *= f
                        ta[base + q] *= f
        elif code == OP_FLATTEN or code == OP_GLOBAL_POOL:
            for q in range(nj):
                rr[q] = 0.0
                yy[q] = 0.0
            if code == OP_FLATTEN:
                cnt = n_in
                for h in range(n_in):
                    base = ((h * n_in + h) if full else h) * nj
                    for q in range(nj):
                        rr[q] += ka[base + q]
                    if with_ntk:
                        for q in range(nj):
                            yy[q] += ta[base + q]
            else:
                cnt = n_in * n_in
                for h in range(cnt):
                    for q in range(nj):
                        rr[q] += ka[h * nj + q]
                if with_ntk:
                    for h in range(cnt):
                        for q in range(nj):
                            yy[q] += ta[h * nj + q]
            for q in range(nj):
                ka[q] = rr[q] / cnt
                ta[q] = yy[q] / cnt
        elif code == OP_AGGREGATE:
            _aggregate(ka, s1, s2, n_in, agg_ptr, agg_idx, agg_val, nj)
            for e in range(e_in):
                ka[e] = s2[e]
            if with_ntk:
                _aggregate(ta, s1, s2, n_in, agg_ptr, agg_idx, agg_val, nj)
                for e in range(e_in):
                    ta[e] = s2[e]
        elif code == OP_COPY:
            kb = kk[op[OPF_B]]
            tb = tt[op[OPF_B]]
            for e in range(e_in):
                kb[e] = ka[e]
            if with_ntk:
                for e in range(e_in):
                    tb[e] = ta[e]
        elif code == OP_ADD:
            kb = kk[op[OPF_B]]
            tb = tt[op[OPF_B]]
            for e in range(e_in):
                kb[e] += ka[e]
            if with_ntk:
                for e in range(e_in):
                    tb[e] += ta[e]
        elif code == OP_SCALE:
            g0 = params[o, 0]
            for e in range(e_in):
                ka[e] *= g0
            if with_ntk:
                for e in range(e_in):
                    ta[e] *= g0
        elif code == OP_OUTPUT:
            for layer, reg in ((op[OPF_B], ka), (op[OPF_C], ta)):
                if layer >= 0:
                    dst = out[layer, oi, j0:j0 + nj]
                    for q in range(nj):
                        dst[q] = reg[q]
                    for q in range(nj):
                        nonfinite += not math.isfinite(reg[q])
    return nonfinite


@njit(**JIT)
def _aligned_maps(rows, length):
    """An empty (rows, >= length) array whose rows start on 64-byte lines (a whole AVX-512
    vector; Numba aligns to 32) and STAGGER doubles apart modulo a page."""
    stride = (length + 7) // 8 * 8 + STAGGER
    buf = np.empty(rows * stride + 8)
    off = (-(buf.ctypes.data % 64) // 8) % 8
    return buf[off:off + rows * stride].reshape((rows, stride))


@njit(**JIT)
def _apart(ref, length):
    """An empty int64 array of ``length`` that starts half a page from ``ref`` modulo a
    page: the cells and local coordinates of a run (``_slice_cells``) are stored together
    and loaded together, and would alias at a page-multiple distance (4K aliasing)."""
    buf = np.empty(length + 512, dtype=np.int64)
    off = ((ref.ctypes.data + 2048 - buf.ctypes.data) % 4096) // 8
    return buf[off:off + length]


@njit(**JIT_PARALLEL)
def engine_tile(out, out_row0, row0, nr, x1, x2t, n_pos, n_chan, ops, params, win, rows,
                cols_t, agg_ptr, agg_idx, agg_val, slices, f_n, df_n, f3, df3,
                grid_f, grid_df, n_regs, size, block, full, with_ntk, diag_offset, nonfinite):
    """One tile of a compiled network, NNGP and (``with_ntk``) NTK.

    out : (layers, N, nc) C-contiguous; the tile is its rows out_row0 .. out_row0 + nr - 1.
        OP_OUTPUT writes the layers it names; an OP_INPUT with b >= 0 reads the inputs'
        inner products from layer b (a Gram written there by BLAS).
    row0 : index of the tile's first row in x1 and ``rows``.
    x1 : (n1, n_pos * n_chan) the row inputs, positions then channels (NHWC order);
    x2t : (n_pos * n_chan, n2) the column inputs, transposed (both unused with a Gram).
    ops, params : (n_ops, OP_FIELDS) int64 and (n_ops, 4) float64, the program.
    win : int64 window tables (see above).
    rows, cols_t : (n1, m) and (m, n2) per-position vectors of every input, by op (at
        OPF_VEC): activations 1/sqrt(q) (slice) or q (table), sqrt(E[phi^2]),
        sqrt(E[phi'^2]); normalisations their factor.
    agg_ptr, agg_idx, agg_val : the adjacency of OP_AGGREGATE (CSR).
    slices : (n_slices, 2 M, 8) per cell of the two halves of the slices (rho >= 0, then
        rho < 0, M cells each, see the module doc), the cubic coefficients of the
        normalised F (0..3) and Fdot (4..7): one 64-byte line per look-up.
    f_n, df_n, f3, df3, grid_f, grid_df : the tables (2-D and 3-D, F and Fdot) that
        activations without a slice (c = -1) interpolate directly, and the axes of each
        (``_core.interp.G_*``), as ``Table.interpolation_args`` gives them.
    size : entries of the largest map (1, P or P^2); block : pairs per block (J); full :
        full maps (else diagonal).
    diag_offset : >= 0 when column j = i + diag_offset is row i's own input (a symmetric
        panel): only j <= i + diag_offset is computed; -1 for a full tile.
    nonfinite : (nr,) int64, zeros on entry: how many NaN or infinite values each row wrote.
    """
    triangle = diag_offset >= 0
    # Rows go in groups that share each block of columns: the columns' inputs and vectors
    # (x2t, cols_t: 110 MB for 10k MNIST images) are read from memory once per group, not
    # per row.  On a triangle groups g and n_groups - 1 - g pair up (equal work per step).
    group = 1 if full else max(1, min(ROW_GROUP, nr // 32))
    n_groups = (nr + group - 1) // group
    steps = (n_groups + 1) // 2 if triangle else n_groups
    # The columns' channels for _input_full: up to INPUT_CHUNK_ENTRIES values at a time.
    xb_len = 1
    if full:
        xb_len = n_pos * block * max(1, min(n_chan, INPUT_CHUNK_ENTRIES // (n_pos * block)))
    # A pair's column vectors of one activation (full maps of one pair a block).
    cv_len = 3 * (int(math.sqrt(size)) + 1) if full else 1
    for p in prange(steps):
        maps = _aligned_maps(2 * n_regs + 2, size * block)
        kk = maps[:n_regs]
        tt = maps[n_regs:2 * n_regs]
        s1 = maps[2 * n_regs]
        s2 = maps[2 * n_regs + 1]
        rr = np.empty(block)
        yy = np.empty(block)
        cell = _apart(s1, block + int(math.sqrt(size)) + 1)
        colv = np.empty(cv_len)
        wa = np.empty(INTERP_POINTS)
        wb = np.empty(INTERP_POINTS)
        wc = np.empty(INTERP_POINTS)
        xb = np.empty(xb_len)
        for half in range(2):
            grp = _row_of(p, half, n_groups, triangle)
            if grp < 0:
                continue
            i0 = grp * group
            i1 = min(nr, i0 + group)
            for j0 in range(0, _row_end(i1 - 1, out.shape[2], diag_offset), block):
                for i in range(i0, i1):  # the columns' block read once for the group
                    ncol = _row_end(i, out.shape[2], diag_offset)
                    if j0 >= ncol:
                        continue
                    nonfinite[i] += _run_block(
                        kk, tt, s1, s2, cell, colv, rr, yy, wa, wb, wc, xb, out,
                        out_row0 + i, row0 + i, j0, min(block, ncol - j0), x1, x2t, n_pos,
                        n_chan, ops, params, win, rows, cols_t, agg_ptr, agg_idx, agg_val,
                        slices, f_n, df_n, f3, df3, grid_f, grid_df, full, with_ntk)


@njit(**JIT_PARALLEL)
def composite_tile(out, out_row0, nr, gram_layer, layers, cells, inv_norm, diag_offset,
                   nonfinite):
    """One tile of a network of vectors as one function of the input Gram: out[layers[s]]
    = the cubic of cells[:, 4 s:4 s + 4] (two halves in w = sqrt(1 - |rho|), as a slice)
    at rho = out[gram_layer] * inv_norm, rows out_row0 .. out_row0 + nr - 1 (``diag_offset``
    and ``nonfinite`` as ``engine_tile``; the Gram may share a layer with an output)."""
    m = cells.shape[0] // 2
    n_out = layers.size
    triangle = diag_offset >= 0
    steps = (nr + 1) // 2 if triangle else nr
    for p in prange(steps):
        ones = np.ones(COLUMN_RUN)
        cb = np.empty(COLUMN_RUN, dtype=np.int64)
        fb = np.empty(COLUMN_RUN)
        for half in range(2):
            i = _row_of(p, half, nr, triangle)
            if i < 0:
                continue
            oi = out_row0 + i
            ncol = _row_end(i, out.shape[2], diag_offset)
            for j0 in range(0, ncol, COLUMN_RUN):
                nj = min(COLUMN_RUN, ncol - j0)
                g = out[gram_layer, oi, j0:j0 + nj]
                for q in range(nj):
                    if not math.isfinite(g[q]):
                        nonfinite[i] += n_out
                _slice_cells(g, ones, inv_norm, cb, fb, nj, m)
                for s in range(n_out):
                    dst = out[layers[s], oi, j0:j0 + nj]
                    for q in range(nj):
                        dst[q] = _cubic(cells, cb[q], 4 * s, fb[q])


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
