"""Softmax attention at 1/sqrt(n) scaling: the integrand of its kernel, one point at a time.

For one pair of inputs (x, y) of T positions each, the logits of a query position i of x
and of a query position k of y are Gaussian rows G_i(x), G_k(y) (T keys each).  Their joint
law (:class:`nngp_lut.kernel.layers.SelfAttention`'s docstring) is written with four
independent Gaussian T-vectors shared by every (i, k),

    (u_x, u_y) ~ N(0, [[K_xx, K_xy], [K_yx, K_yy]]),   w_x ~ N(0, K_xx),   w_y ~ N(0, K_yy),

    G_i(x) = a1_ik u_x + a2_ik w_x,    G_k(y) = b1_ik u_y + b2_ik w_y,

with the per-(i, k) coefficients of :func:`nngp_lut.kernel.layers._logit_coefficients`.
:func:`softmax_mixing` evaluates, at each point, softmax(G_i(x))^T K_xy softmax(G_k(y)) for
every (i, k): T^2 (2 T exp + T^2) operations per point and pair, no validation.
"""

import math

import numpy as np
from numba import njit, prange

from .config import JIT_PARALLEL


@njit(**JIT_PARALLEL)
def softmax_mixing(z, kxy, a1, a2, b1, b2, out):
    """out[e, p, i, k] = softmax(G_i(x))^T kxy[e] softmax(G_k(y)) at point p of entry e.

    z (E, P, 4T): the points (u_x, u_y, w_x, w_y) of each entry; kxy (E, T, T); a1, a2, b1,
    b2 (E, T, T) the logits' coefficients; out (E, P, T, T)."""
    n_entries, n_points = z.shape[0], z.shape[1]
    t = kxy.shape[1]
    for flat in prange(n_entries * n_points):
        e, p = flat // n_points, flat % n_points
        sx = np.empty(t)
        sy = np.empty(t)
        for i in range(t):
            for k in range(t):
                c1, c2, d1, d2 = a1[e, i, k], a2[e, i, k], b1[e, i, k], b2[e, i, k]
                mx = -np.inf
                my = -np.inf
                for j in range(t):
                    gx = c1 * z[e, p, j] + c2 * z[e, p, 2 * t + j]
                    gy = d1 * z[e, p, t + j] + d2 * z[e, p, 3 * t + j]
                    sx[j] = gx
                    sy[j] = gy
                    mx = max(mx, gx)
                    my = max(my, gy)
                tx = 0.0
                ty = 0.0
                for j in range(t):
                    sx[j] = math.exp(sx[j] - mx)
                    sy[j] = math.exp(sy[j] - my)
                    tx += sx[j]
                    ty += sy[j]
                total = 0.0
                for j in range(t):
                    row = 0.0
                    for l in range(t):
                        row += kxy[e, j, l] * sy[l]
                    total += sx[j] * row
                out[e, p, i, k] = total / (tx * ty)
