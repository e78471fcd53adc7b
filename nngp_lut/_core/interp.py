"""Coordinates and interpolation of the tables.

Axes: x = ln q (uniform) and an angle coordinate w in [0, 1] (uniform) that is a warp of
theta = arccos(rho),

    w(theta; kappa) = (asinh(kappa theta) - asinh(kappa (pi - theta)) + A) / (2 A),
    A = asinh(kappa pi),  kappa = WARP_SCALE * sqrt(q).

At variance q an activation with features of unit width in pre-activation units has
boundary layers of width ~1/sqrt(q) in theta at rho = +-1 (u and v differ by less than a
feature): the warp spaces nodes ~(theta + 1/kappa) apart, so every layer gets the same
number of nodes at every q, and w -> theta / pi as q -> 0.  Both end points are grid nodes,
so rho = +-1 is exact.  theta (not rho) because F is smooth in theta where it has a square
root singularity in rho (relu at rho = 1).

Interpolation is Lagrange of order INTERP_POINTS - 1 along each axis on the uniform grids
(one-sided stencils at the edges).  Cubic (bilinear is out of the question) leaves 2e-6 at
120 x 96 nodes for erf; quintic leaves 2e-8 at the same size (measured, see the schema).
"""

import math

import numpy as np
from numba import njit, prange

from .config import INTERP_POINTS, JIT, JIT_PARALLEL, RHO_SNAP, WARP_SCALE

_LO = INTERP_POINTS // 2 - 1  # stencil nodes i - _LO .. i - _LO + INTERP_POINTS - 1


@njit(**JIT)
def warp(theta, kappa):
    """Angle coordinate w in [0, 1] of theta in [0, pi]."""
    if kappa <= 0.0:
        return theta / math.pi
    a = math.asinh(kappa * math.pi)
    return (math.asinh(kappa * theta) - math.asinh(kappa * (math.pi - theta)) + a) / (2.0 * a)


@njit(**JIT)
def blend(theta, kappa, linear):
    """warp blended with theta / pi: (linear * theta / pi + warp) / (1 + linear)."""
    return (linear * theta / math.pi + warp(theta, kappa)) / (1.0 + linear)


@njit(**JIT)
def unblend(w, kappa, linear):
    """theta with blend(theta, kappa, linear) = w, by bisection (only when building)."""
    lo = 0.0
    hi = math.pi
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if blend(mid, kappa, linear) < w:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@njit(**JIT)
def kappa_of(q):
    return WARP_SCALE * math.sqrt(q)


def _inverse_denominators(points):
    """1 / prod_{b != a} (a - b) of the Lagrange weights on the nodes 0 .. points - 1."""
    return tuple(1.0 / math.prod(a - b for b in range(points) if b != a)
                 for a in range(points))


_INV_DEN = _inverse_denominators(INTERP_POINTS)


@njit(**JIT)
def stencil(u, n, weights):
    """First node of the stencil around fractional index u on n nodes; fills weights.

    The weight of node a is prod_{b != a} (t - b + _LO) / prod_{b != a} (a - b): the
    products of the factors before and after a, then one multiplication by the constant
    inverse denominator (no division)."""
    i = int(math.floor(u))
    i = min(max(i, _LO), n - INTERP_POINTS + _LO)
    t = u - i
    before = 1.0
    for a in range(INTERP_POINTS):
        weights[a] = before
        before *= t - (a - _LO)
    after = 1.0
    for a in range(INTERP_POINTS - 1, -1, -1):
        weights[a] *= after * _INV_DEN[a]
        after *= t - (a - _LO)
    return i - _LO


@njit(**JIT)
def interp1(values, x0, dx, x, wbuf):
    i0 = stencil((x - x0) / dx, values.size, wbuf)
    s = 0.0
    for a in range(INTERP_POINTS):
        s += wbuf[a] * values[i0 + a]
    return s


@njit(**JIT)
def interp2(values, x0, dx, x, w, wx, ww):
    """values[(nx, nw)] on x0 + dx * i and the uniform w grid over [0, 1]."""
    nx, nw = values.shape
    i0 = stencil((x - x0) / dx, nx, wx)
    j0 = stencil(w * (nw - 1), nw, ww)
    s = 0.0
    for a in range(INTERP_POINTS):
        r = 0.0
        for b in range(INTERP_POINTS):
            r += ww[b] * values[i0 + a, j0 + b]
        s += wx[a] * r
    return s


@njit(**JIT)
def interp3(values, x0, dx, x1, x2, w, wa, wb, wc):
    """values[(n, n, nw)] on the variance-coordinate grid x0 + dx * i (both axes) and w in
    [0, 1]."""
    n1, n2, nw = values.shape
    i0 = stencil((x1 - x0) / dx, n1, wa)
    j0 = stencil((x2 - x0) / dx, n2, wb)
    k0 = stencil(w * (nw - 1), nw, wc)
    s = 0.0
    for a in range(INTERP_POINTS):
        sa = 0.0
        for b in range(INTERP_POINTS):
            sb = 0.0
            for c in range(INTERP_POINTS):
                sb += wc[c] * values[i0 + a, j0 + b, k0 + c]
            sa += wb[b] * sb
        s += wa[a] * sa
    return s


@njit(inline="always", **JIT)
def correlation(k, inv_s):
    """rho = k inv_s (inv_s = 1 / sqrt(q1 q2)) in [-1, 1], within RHO_SNAP of +-1 set to
    +-1 (rounding, not correlation: see config.RHO_SNAP)."""
    rho = k * inv_s
    return math.copysign(1.0, rho) if abs(rho) >= 1.0 - RHO_SNAP else rho  # NaN stays


def correlations(k, s):
    """:func:`correlation` of arrays: rho = k / s for s = sqrt(q1 q2); 0 where s = 0 (a
    unit of variance 0, whose expectations do not depend on rho)."""
    k, s = np.broadcast_arrays(k, s)
    rho = np.divide(k, s, out=np.zeros(k.shape), where=s > 0.0)
    return np.where(np.abs(rho) >= 1.0 - RHO_SNAP, np.sign(rho), rho)


@njit(**JIT)
def theta_of(rho):
    """arccos with |rho| <= 1 + a few ulps allowed (rounding of K / sqrt(q1 q2))."""
    if rho >= 1.0:
        return 0.0
    if rho <= -1.0:
        return math.pi
    return math.acos(rho)


#: Entries per work item of the ``*_many`` loops: their scratch is allocated once per item,
#: not once per entry (an allocation costs more than a look-up).
MANY_CHUNK = 1024


@njit(**JIT_PARALLEL)
def diag_many(log_d, x0, dx, degree, d_at_1, q):
    """E[phi^2](q) from its ln table (or the scaling law when degree >= 0)."""
    out = np.empty(q.size)
    for ch in prange((q.size + MANY_CHUNK - 1) // MANY_CHUNK):
        ch = np.int64(ch)  # (prange indices are unsigned)
        wbuf = np.empty(INTERP_POINTS)
        for k in range(ch * MANY_CHUNK, min(q.size, (ch + 1) * MANY_CHUNK)):
            if degree == 1.0:  # (relu, abs; and below their phi': the values without pow)
                out[k] = d_at_1 * q[k]
            elif degree == 0.0:
                out[k] = d_at_1
            elif degree >= 0.0:
                out[k] = d_at_1 * q[k] ** degree
            else:
                out[k] = math.exp(interp1(log_d, x0, dx, math.log(q[k]), wbuf))
    return out


@njit(**JIT_PARALLEL)
def mean_many(mean_n, log_d, x0, dx, degree, d_at_1, q):
    """E[phi](q) = (E[phi]/sqrt(E[phi^2]))(q) * sqrt(E[phi^2](q))."""
    out = np.empty(q.size)
    for ch in prange((q.size + MANY_CHUNK - 1) // MANY_CHUNK):
        ch = np.int64(ch)  # (prange indices are unsigned)
        wbuf = np.empty(INTERP_POINTS)
        for k in range(ch * MANY_CHUNK, min(q.size, (ch + 1) * MANY_CHUNK)):
            if degree >= 0.0:
                out[k] = mean_n[0] * math.sqrt(d_at_1 * q[k] ** degree)
            else:
                x = math.log(q[k])
                out[k] = interp1(mean_n, x0, dx, x, wbuf) * math.exp(
                    0.5 * interp1(log_d, x0, dx, x, wbuf))
    return out


# Layout of the ``grid`` array that describes one table's axes to the kernels (its F or its
# derivative tables): the equal-variance table on x = x0 + dx * i (ln q) with the angle
# blend of weight lin2 (kappa = WARP_SCALE sqrt(q)); the 3-D table on c = x30 + dx3 * i
# (ln q, or sqrt q when sqrt_axis != 0) with the blend of weight lin3 and kappa = warp3
# sqrt(q2).  Built by ``Table.interpolation_args``.
G_X0, G_DX, G_LIN2, G_X30, G_DX3, G_SQRT, G_WARP3, G_LIN3 = range(8)
GRID_SIZE = 8


@njit(**JIT)
def normalized_equal(f_n, grid, degree, q, theta, wx, ww):
    """F(q, q, rho) / E[phi^2](q) at theta = arccos rho."""
    if degree >= 0.0:
        return interp1(f_n[0], 0.0, math.pi / (f_n.shape[1] - 1), theta, ww)
    return interp2(f_n, grid[G_X0], grid[G_DX], math.log(q),
                   blend(theta, kappa_of(q), grid[G_LIN2]), wx, ww)


@njit(**JIT)
def general_normalized(f_n, f3, grid, q1, q2, theta, wa, wb, wc):
    """F(q1, q2, rho) / sqrt(E[phi^2](q1) E[phi^2](q2)) of a general phi at theta = arccos
    rho: the 2-D table where q1 == q2, else the 3-D one (``grid``: see G_*)."""
    if q1 == q2:
        return interp2(f_n, grid[G_X0], grid[G_DX], math.log(q1),
                       blend(theta, kappa_of(q1), grid[G_LIN2]), wa, wb)
    # F is symmetric: one canonical order (smaller variance first) makes K(X1, X2) =
    # K(X2, X1)^T exactly.
    a, b = min(q1, q2), max(q1, q2)
    w = blend(theta, grid[G_WARP3] * math.sqrt(b), grid[G_LIN3])
    if grid[G_SQRT] != 0.0:
        c1, c2 = math.sqrt(a), math.sqrt(b)
    else:
        c1, c2 = math.log(a), math.log(b)
    return interp3(f3, grid[G_X30], grid[G_DX3], c1, c2, w, wa, wb, wc)


@njit(**JIT_PARALLEL)
def normalized_many(f_n, f3, grid, degree, q1, q2, rho):
    """F(q1, q2, rho) / sqrt(E[phi^2](q1) E[phi^2](q2)) (or the same ratio of the phi'
    tables) at arrays: the 2-D table where q1 == q2 (or phi is homogeneous), else the 3-D
    (``grid``: the axes, see G_*)."""
    out = np.empty(q1.size)
    for ch in prange((q1.size + MANY_CHUNK - 1) // MANY_CHUNK):
        ch = np.int64(ch)  # (prange indices are unsigned)
        wa = np.empty(INTERP_POINTS)
        wb = np.empty(INTERP_POINTS)
        wc = np.empty(INTERP_POINTS)
        for k in range(ch * MANY_CHUNK, min(q1.size, (ch + 1) * MANY_CHUNK)):
            theta = theta_of(rho[k])
            if degree >= 0.0:
                out[k] = normalized_equal(f_n, grid, degree, q1[k], theta, wa, wb)
            else:
                out[k] = general_normalized(f_n, f3, grid, q1[k], q2[k], theta, wa, wb, wc)
    return out
