"""Batch normalisation in training mode: the kernel of phi(BN(h)) over a batch.

In an infinitely wide layer each unit's pre-activations over a batch of B inputs are one
draw h ~ N(0, Sigma) (Sigma the B x B kernel), and batch normalisation (no epsilon, no
affine part) maps it to

    BN(h) = sqrt(B) G h / |G h|,   G = I - 1 1^T / B,

the centred batch scaled to mean square 1.  The kernel after BN and phi is
K' = E[phi(BN(h)) phi(BN(h))^T], a B-dimensional expectation over v = G h ~ N(0, G Sigma G).

* phi = identity or relu (positively homogeneous of degree 1): by 1 / |v|^2 =
  int_0^inf exp(-s |v|^2) ds and a Gaussian tilt, the one-dimensional integral of Yang et
  al. 2019 (their Laplace method, section 3 and appendix):

      K'_ij = B int_0^inf det(I + 2 s S)^(-1/2) E_{N(0, S_s)}[phi(v_i) phi(v_j)] ds,
      S = G Sigma G,  S_s = S (I + 2 s S)^(-1),

  with E[v_i v_j] = S_s[i, j] for the identity and the arc-cosine form of degree 1 for relu
  (Cho & Saul 2009): a bivariate Gaussian expectation inside a 1-D integral, computed by
  adaptive quadrature to BATCHNORM_QUAD_TOL.
* any other phi: by randomised QMC over v (:func:`nngp_lut.gaussian_expectation`, the
  principal-components construction), to a tolerance, with its error.

References
----------
Ioffe & Szegedy, "Batch Normalization", ICML 2015, Algorithm 1.
Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz, "A Mean Field Theory of Batch
Normalization", ICLR 2019, section 3 and appendix (the Laplace method).
Cho & Saul, "Kernel Methods for Deep Learning", NeurIPS 2009 (the arc-cosine kernel).
"""

import math

import numpy as np
from numba import njit

from .._core.config import BATCHNORM_QUAD_TOL, JIT, REFERENCE_RANK_RTOL
from ..errors import DataError
from ..expectation import gaussian_expectation

#: Activations whose kernel after BN has the one-dimensional integral (degree-1 homogeneous).
HOMOGENEOUS = ("identity", "relu")


def centred(cov):
    """S = G Sigma G: the covariance of the centred batch (B x B)."""
    c = cov - cov.mean(axis=0, keepdims=True)
    return c - c.mean(axis=1, keepdims=True)


def _check(s):
    b = s.shape[0]
    if b < 2:
        raise DataError("BatchNorm needs a batch of at least 2 inputs (its mean and variance "
                        "are over the batch): give more inputs")
    if np.trace(s) <= 0:
        raise DataError("BatchNorm gets a batch whose pre-activations do not vary across the "
                        "batch (every input the same): normalisation divides by zero there")


def _relu_pair(a, b, c):
    """E[relu(u) relu(v)] for (u, v) ~ N(0, [[a, c], [c, b]]) (arc-cosine kernel, degree 1)."""
    root = np.sqrt(np.maximum(a * b, 1e-300))
    cos = np.clip(c / root, -1.0, 1.0)
    theta = np.arccos(cos)
    return root / (2.0 * math.pi) * (np.sin(theta) + (math.pi - theta) * cos)


def homogeneous_kernel(cov, phi):
    """K' of phi(BN(h)) for phi "identity" or "relu", by the 1-D integral of the module
    docstring; cov the B x B pre-activation kernel of the batch."""
    from scipy.integrate import quad_vec

    s_mat = centred(np.asarray(cov, dtype=np.float64))
    _check(s_mat)
    lam, vec = np.linalg.eigh(s_mat)
    # BN is scale-free: S / its largest eigenvalue has the same kernel; the direction 1
    # (and any other null direction) has eigenvalue 0 exactly.
    lam = lam / lam.max()
    lam[lam < 1e-12] = 0.0
    b = s_mat.shape[0]

    def integrand(u):  # s = e^u: smooth, and decaying exponentially at both ends
        s = math.exp(u)
        shrink = lam / (1.0 + 2.0 * s * lam)
        det = math.exp(-0.5 * np.log1p(2.0 * s * lam).sum())
        tilted = (vec * shrink) @ vec.T
        if phi == "identity":
            e = tilted
        else:
            d = np.diag(tilted)
            e = _relu_pair(d[:, None], d[None, :], tilted)
        return (b * s * det) * e

    # Beyond these ends the integrand is below e^-40 of its peak (it falls as e^u as s -> 0
    # and at least as e^(-u/2) as s -> inf, the batch's rank being at least 1).
    value, _ = quad_vec(integrand, -50.0, 80.0, epsabs=BATCHNORM_QUAD_TOL, epsrel=0.0)
    return (value + value.T) / 2


def reference_kernel(cov, var1, var2, b, phi):
    """K' of phi(BN_R(h)) for phi "identity" or "relu" over two input sets that start with
    the same ``b`` reference inputs R, whose statistics normalise every input (inference
    mode with R as the batch): BN_R(h)(z) = sqrt(b) (h(z) - mean_R h) / |G h_R|.

    ``cov`` (b + n1, b + n2) is the pre-activation kernel between the sets, ``var1`` and
    ``var2`` their diagonals.  Returns the kernel after the layer and its two diagonals; the
    reference's own block is the training-mode kernel of R.

    Write h_R = A xi (A A^T = K_R, xi standard normal on K_R's range) and each input's
    centred value a_z = h(z) - mean_R h = q_z^T xi + e_z, e_z independent of h_R (zero for
    z in R).  With |G h_R|^2 = xi^T M xi, M = A^T G A = V diag(lam) V^T, the Laplace method
    of :func:`homogeneous_kernel` gives

        K'(z, w) = b int_0^inf det(I + 2 s M)^(-1/2) E[phi(a_z) phi(a_w)] ds,

    where under the tilt Cov(a_z, a_w) = p_z^T diag(1 / (1 + 2 s lam)) p_w + Cov(e_z, e_w),
    p = V^T q: one bivariate expectation per pair inside a 1-D integral.  For an input
    outside R's span the residual e_z does not shrink with s, so the integral is finite only
    when M has rank >= 3 (E|G h_R|^-2 < inf): at least 4 reference inputs of independent
    pre-activations.
    """
    from scipy.integrate import quad_vec

    cov = np.asarray(cov, dtype=np.float64)
    k_ref = cov[:b, :b]
    mu, q = np.linalg.eigh((k_ref + k_ref.T) / 2)
    keep = mu > REFERENCE_RANK_RTOL * max(mu.max(), 0.0)
    mu, q = mu[keep], q[:, keep]
    a = q * np.sqrt(mu)  # h_R = A xi
    mean = a.mean(axis=0)  # mean_R h = mean^T xi
    lam, v = np.linalg.eigh(a.T @ a - b * np.outer(mean, mean))  # M = A^T G A
    scale = lam.max() if lam.size else 0.0
    rank = int(np.sum(lam > REFERENCE_RANK_RTOL * scale)) if scale > 0 else 0
    if rank < 3:
        raise DataError(f"BatchNorm's reference set gives {rank} independent centred "
                        "pre-activations (3 needed: with fewer, 1 / |G h|^2 has no finite "
                        "mean and the kernel of inputs outside the set is infinite): use at "
                        "least 4 distinct reference inputs")
    lam = np.where(lam > REFERENCE_RANK_RTOL * scale, lam / scale, 0.0)  # BN is scale-free
    whiten = q / np.sqrt(mu)  # c^T K_R^+ c' = (c^T whiten)(whiten^T c')
    w1, w2 = cov[:, :b] @ whiten, cov[:b, :].T @ whiten  # E[h(z) xi]
    p1, p2 = ((w - mean) @ v / math.sqrt(scale) for w in (w1, w2))
    # the residuals, zero for the reference inputs themselves (exactly: no rounding left)
    res = (cov - w1 @ w2.T) / scale
    r1 = np.maximum(np.asarray(var1) - np.einsum("ij,ij->i", w1, w1), 0.0) / scale
    r2 = np.maximum(np.asarray(var2) - np.einsum("ij,ij->i", w2, w2), 0.0) / scale
    res[:b, :] = 0.0
    res[:, :b] = 0.0
    r1[:b] = r2[:b] = 0.0

    def integrand(u):  # s = e^u, as in homogeneous_kernel
        s = math.exp(u)
        shrink = 1.0 / (1.0 + 2.0 * s * lam)
        det = math.exp(-0.5 * np.log1p(2.0 * s * lam).sum())
        c = (p1 * shrink) @ p2.T + res
        d1 = (p1 * p1) @ shrink + r1
        d2 = (p2 * p2) @ shrink + r2
        if phi == "identity":
            e, e1, e2 = c, d1, d2
        else:
            e = _relu_pair(d1[:, None], d2[None, :], c)
            e1, e2 = d1 / 2, d2 / 2  # E[relu(u)^2] = var / 2
        return (b * s * det) * np.concatenate([e.ravel(), e1, e2])

    n1, n2 = cov.shape
    value, _ = quad_vec(integrand, -50.0, 80.0, epsabs=BATCHNORM_QUAD_TOL, epsrel=0.0)
    return value[:n1 * n2].reshape(n1, n2), value[n1 * n2:n1 * n2 + n1], value[n1 * n2 + n1:]


@njit(**JIT)
def _normalised_products(phi, z, out):
    """out[p] = phi(sqrt(B) z_p / |z_p|) phi(...)^T for every point z_p (rows of z, (P, B))."""
    points, b = z.shape
    y = np.empty(b)
    for p in range(points):
        norm = 0.0
        for i in range(b):
            norm += z[p, i] * z[p, i]
        scale = math.sqrt(b / norm) if norm > 0.0 else 0.0
        for i in range(b):
            y[i] = phi(z[p, i] * scale)
        for i in range(b):
            for j in range(b):
                out[p, i, j] = y[i] * y[j]


def sampled_kernel(cov, function, tol):
    """K' of phi(BN(h)) for any activation (a :class:`~nngp_lut.Activation`), by randomised
    QMC over v = G h to ``tol``; returns the :class:`~nngp_lut.expectation.Estimate` (value
    (B, B), error)."""
    s_mat = centred(np.asarray(cov, dtype=np.float64))
    _check(s_mat)
    b = s_mat.shape[0]

    def f(z):  # z (1, P, B) -> (1, P, B, B)
        flat = np.ascontiguousarray(z.reshape(-1, b))
        out = np.empty((flat.shape[0], b, b))
        _normalised_products(function.phi, flat, out)
        return out.reshape(z.shape[:2] + (b, b))

    return gaussian_expectation(f, (s_mat + s_mat.T) / 2, tol=tol)
