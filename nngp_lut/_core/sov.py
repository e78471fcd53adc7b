"""Genz's separation of variables for Gaussian box probabilities: the ordered Cholesky factor.

P(a <= Z <= b), Z ~ N(0, Sigma), becomes an integral over the unit cube of a smooth product
of conditional probabilities (Genz 1992).  Its variance, and hence the randomised-QMC error,
depends on the order of the variables; the priority ordering of Genz & Bretz (2002; 2009,
section 4.1.3) puts first, at each step, the variable with the smallest conditional
probability given the expected values of the variables already placed.

References
----------
Genz, "Numerical computation of multivariate normal probabilities", J. Comput. Graph.
Stat. 1, 141-149, 1992, section 2.
Genz & Bretz, "Computation of Multivariate Normal and t Probabilities", Springer 2009,
section 4.1.3 (variable prioritisation) and 4.1.4 (singular covariances).
"""

import math

import numpy as np
from numba import njit

from .config import JIT, SOV_SINGULAR_RTOL

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


@njit(**JIT)
def _ndtr(x):
    return 0.5 * math.erfc(-x / _SQRT2)


@njit(**JIT)
def _pdf(x):
    return math.exp(-0.5 * x * x) / _SQRT2PI if math.isfinite(x) else 0.0


@njit(**JIT)
def ordered_cholesky(cov, lower, upper, chol, lo, hi):
    """Fill ``chol`` (B, d, d) with the lower Cholesky factor of each ``cov`` (B, d, d) with
    its variables in Genz-Bretz priority order, and ``lo``, ``hi`` (B, d) with the limits
    ``lower``, ``upper`` (B, d) in that order.  A zero pivot (rank deficiency) leaves a zero
    column: that variable is the linear function chol[i, :i] y of the previous ones."""
    n_batch, d = lower.shape
    for b in range(n_batch):
        sigma = cov[b].copy()
        a = lower[b].copy()
        c = upper[b].copy()
        L = np.zeros((d, d))
        y = np.zeros(d)  # expected values of the standardised variables already placed
        scale = 0.0
        for i in range(d):
            scale = max(scale, sigma[i, i])
        eps = SOV_SINGULAR_RTOL * scale
        for k in range(d):
            best, best_p, best_a, best_c = -1, 2.0, 0.0, 0.0
            for i in range(k, d):
                v = sigma[i, i]
                for j in range(k):
                    v -= L[i, j] * L[i, j]
                if v > eps:
                    s = 0.0
                    for j in range(k):
                        s += L[i, j] * y[j]
                    sd = math.sqrt(v)
                    ai, ci = (a[i] - s) / sd, (c[i] - s) / sd
                    p = _ndtr(ci) - _ndtr(ai)
                    if p < best_p:
                        best, best_p, best_a, best_c = i, p, ai, ci
            if best < 0:  # every remaining variable is determined by the previous ones
                break
            i = best
            if i != k:  # swap variables k and i everywhere
                for j in range(d):
                    t = sigma[k, j]; sigma[k, j] = sigma[i, j]; sigma[i, j] = t  # noqa: E702
                for j in range(d):
                    t = sigma[j, k]; sigma[j, k] = sigma[j, i]; sigma[j, i] = t  # noqa: E702
                for j in range(k):
                    t = L[k, j]; L[k, j] = L[i, j]; L[i, j] = t  # noqa: E702
                t = a[k]; a[k] = a[i]; a[i] = t  # noqa: E702
                t = c[k]; c[k] = c[i]; c[i] = t  # noqa: E702
            v = sigma[k, k]
            for j in range(k):
                v -= L[k, j] * L[k, j]
            L[k, k] = math.sqrt(v)
            for r in range(k + 1, d):
                s = sigma[r, k]
                for j in range(k):
                    s -= L[r, j] * L[k, j]
                L[r, k] = s / L[k, k]
            # E[y_k | a~ <= y_k <= c~], the truncated normal mean (Genz & Bretz eq. 4.7)
            if best_p > 1e-300:
                y[k] = (_pdf(best_a) - _pdf(best_c)) / best_p
            else:
                y[k] = best_a if math.isfinite(best_a) else best_c
        chol[b] = L
        lo[b] = a
        hi[b] = c
