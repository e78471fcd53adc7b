"""Softmax attention at the standard 1/sqrt(n) scaling: the expectation its kernel needs.

At 1/sqrt(n) scaling with independent query and key weights, the logits
G_ij(x) = <q_i(x), k_j(x)> / sqrt(n) of an infinitely wide layer do not concentrate: they are
a centred Gaussian process over inputs and pairs of positions with

    Cov(G_ij(x), G_kl(y)) = logit_var K(x_i, y_k) K(x_j, y_l)                    (1)

(K the input's kernel over positions; Hron et al. 2020, section 3; Yang, Tensor Programs I,
the attention example).  The values are independent of the logits in the limit, so the
kernel of the layer's output is

    K'(x_i, y_k) = bias_var + weight_var E[softmax(G_i(x))^T K(x, y) softmax(G_k(y))]   (2)

with G_i(x) the T logits of query position i of x.  For a pair of inputs, each (i, k)
needs a 2T-dimensional Gaussian expectation.  This module writes the joint law of
(G_i(x), G_k(y)) as a combination of four Gaussian T-vectors that every (i, k) shares: with
a_i = K(x_i, x_i), b_k = K(y_k, y_k) and r_ik = K(x_i, y_k) / sqrt(a_i b_k),

    G_i(x) = sqrt(logit_var a_i) (sqrt|r_ik| u_x + sqrt(1 - |r_ik|) w_x),
    G_k(y) = sqrt(logit_var b_k) (sign(r_ik) sqrt|r_ik| u_y + sqrt(1 - |r_ik|) w_y),      (3)

(u_x, u_y) ~ N(0, [[K_xx, K_xy], [K_yx, K_yy]]), w_x ~ N(0, K_xx), w_y ~ N(0, K_yy)
independent.  (3) has the covariance (1): the blocks of x with itself are
logit_var a_i (|r| + 1 - |r|) K_xx, the cross block logit_var sqrt(a_i b_k) r_ik K_xy.  So one
4T-dimensional expectation per pair of inputs gives its whole (T, T') map, by the randomised
QMC of :func:`nngp_lut.expectation.gaussian_expectation` with its error estimate; the
integrand is the Numba kernel :func:`nngp_lut._core.attention.softmax_mixing`.

Each pair is computed in a canonical order (the pair (y, x) as the transpose of (x, y),
whichever of the two compares first), so that the kernel is exactly symmetric and does not
depend on how its rows are tiled.

References
----------
Hron, Bahri, Sohl-Dickstein & Novak, "Infinite attention: NNGP and NTK for deep attention
networks", ICML 2020, section 3 and Theorem 3 (the d^{-1/2} scaling; the GP limit needs the
number of heads to grow with the width).
Yang, "Tensor Programs I" (NeurIPS 2019) and "Tensor Programs II" (2020): the attention
example, logits that stay Gaussian at 1/sqrt(n).
Vaswani et al., "Attention is all you need", NeurIPS 2017, eq. (1) (scaled dot-product
attention, the 1/sqrt(d_k) scaling).
"""

import warnings

import numpy as np

from .._core.attention import softmax_mixing as _kernel
from .._core.config import ATTENTION_MIN_POINTS, ATTENTION_SEED, EXPECTATION_CHUNK_BYTES
from ..errors import ToleranceWarning
from ..expectation import Estimate, gaussian_expectation

__all__ = ["softmax_mixing"]


def _coefficients(kx, ky, kxy, logit_var):
    """The coefficients a1, a2, b1, b2 (B, T, T) of (3) for flat batches (B, T, T)."""
    a = np.diagonal(kx, axis1=-2, axis2=-1)[:, :, None]   # a_i, (B, T, 1)
    b = np.diagonal(ky, axis1=-2, axis2=-1)[:, None, :]   # b_k, (B, 1, T)
    s = np.sqrt(np.maximum(a * b, 0.0))
    r = np.clip(np.divide(kxy, s, out=np.zeros_like(kxy), where=s > 0), -1.0, 1.0)
    m, c = np.sqrt(np.abs(r)), np.sqrt(1.0 - np.abs(r))
    ga, gb = np.sqrt(logit_var * np.maximum(a, 0.0)), np.sqrt(logit_var * np.maximum(b, 0.0))
    return ga * m, ga * c, gb * np.sign(r) * m, gb * c


def _covariances(kx, ky, kxy):
    """The covariance (B, 4T, 4T) of (u_x, u_y, w_x, w_y)."""
    t = kx.shape[-1]
    cov = np.zeros((kx.shape[0], 4 * t, 4 * t))
    cov[:, :t, :t] = cov[:, 2 * t:3 * t, 2 * t:3 * t] = kx
    cov[:, t:2 * t, t:2 * t] = cov[:, 3 * t:, 3 * t:] = ky
    cov[:, :t, t:2 * t] = kxy
    cov[:, t:2 * t, :t] = np.swapaxes(kxy, -1, -2)
    return cov


def _integrand(z, kxy, a1, a2, b1, b2):
    """softmax(G_i(x))^T K_xy softmax(G_k(y)) at points z (b, n, 4T): (b, n, T, T)."""
    t = kxy.shape[-1]
    out = np.empty(z.shape[:2] + (t, t))
    args = (np.ascontiguousarray(v[:, 0]) for v in (kxy, a1, a2, b1, b2))
    _kernel(np.ascontiguousarray(z), *args, out)
    return out


def _canonical(kx, ky):
    """Per entry of flat batches (B, T, T): whether (x, y) is to be computed as (y, x)
    transposed (the first entry where kx and ky differ is larger in kx)."""
    d = (kx - ky).reshape(kx.shape[0], -1)
    nonzero = d != 0
    first = np.argmax(nonzero, axis=1)
    return nonzero.any(axis=1) & (d[np.arange(d.shape[0]), first] > 0)


def softmax_mixing(kx, ky, kxy, logit_var, *, tol, max_points, seed=ATTENTION_SEED):
    """E[softmax(G_i(x))^T K(x, y) softmax(G_k(y))] of eq. (2) for every pair of query
    positions (i, k), with its error.

    Parameters
    ----------
    kx, ky : ndarray (..., T, T)
        Each input's own kernel over its positions, K(x_i, x_j) and K(y_k, y_l).
    kxy : ndarray (..., T, T)
        The kernel between them, K(x_j, y_l) (all three broadcast to one batch shape).
    logit_var : float
        The logits' variance scale of eq. (1) (0: uniform attention).
    tol : float
        Absolute tolerance of every entry of the result (its 99 % interval).
    max_points : int
        Points per randomisation at which the doubling stops (a power of 2).
    seed : int
        Seed of the scrambled Sobol' points.

    Returns
    -------
    Estimate
        ``value`` and ``error`` of shape (..., T, T), ``n_points`` and ``converged`` of the
        batch shape (...).  Entries that missed ``tol`` are returned with ``converged``
        False and no warning (the caller warns).

    References
    ----------
    Hron et al., ICML 2020, section 3 (the d^{-1/2} scaling); this module's eqs. (1)-(3).
    """
    kx, ky, kxy = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (kx, ky, kxy)))
    batch, t = kxy.shape[:-2], kxy.shape[-1]
    kx, ky, kxy = (np.array(v.reshape(-1, t, t)) for v in (kx, ky, kxy))  # copies
    swap = _canonical(kx, ky)
    kx[swap], ky[swap] = ky[swap], kx[swap].copy()
    kxy[swap] = np.swapaxes(kxy[swap], -1, -2)
    value, error = np.empty_like(kxy), np.empty_like(kxy)
    n_points = np.zeros(len(kxy), dtype=np.int64)
    converged = np.ones(len(kxy), dtype=bool)
    # pairs in chunks whose covariances and factors (2 x (4T)^2 each) take ~CHUNK_BYTES: the
    # values do not depend on the chunks (each entry is its own deterministic estimate)
    step = max(1, EXPECTATION_CHUNK_BYTES // (2 * 8 * (4 * t) ** 2))
    for a in range(0, len(kxy), step):
        part = slice(a, a + step)
        args = (kxy[part],) + _coefficients(kx[part], ky[part], kxy[part], float(logit_var))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ToleranceWarning)  # the layer warns, with its name
            est = gaussian_expectation(_integrand, _covariances(kx[part], ky[part], kxy[part]),
                                       args=args, tol=tol,
                                       min_points=min(ATTENTION_MIN_POINTS, max_points),
                                       max_points=max_points, seed=seed)
        value[part], error[part] = est.value, est.error
        n_points[part], converged[part] = est.n_points, est.converged
    value[swap], error[swap] = np.swapaxes(value[swap], -1, -2), np.swapaxes(error[swap], -1, -2)
    # x and y of one law (the same input): the map is symmetric, its two halves two estimates
    same = np.all((kx == ky) & (kxy == np.swapaxes(kxy, -1, -2)), axis=(1, 2))
    value[same] = 0.5 * (value[same] + np.swapaxes(value[same], -1, -2))
    error[same] = 0.5 * (error[same] + np.swapaxes(error[same], -1, -2))
    return Estimate(value.reshape(batch + (t, t)), error.reshape(batch + (t, t)),
                    n_points.reshape(batch), converged.reshape(batch))
