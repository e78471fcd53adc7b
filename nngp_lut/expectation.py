"""Gaussian expectations in a few to a dozen dimensions, with an error estimate (issue 23).

The layers beyond the bivariate table (GRU and LSTM gates, softmax attention at
1/sqrt(n) scaling, BatchNorm) need E[f(Z)], Z ~ N(mean, Sigma), for a batch of thousands of
covariances Sigma of dimension d ~ 2 to 16, where f is a product or ratio of elementwise
nonlinearities.  Two functions give it:

* :func:`gaussian_expectation` — any vectorised f, by randomised quasi-Monte Carlo:
  scrambled Sobol' points (Owen 1995; Matousek 1998) mapped to normals by ndtri and by a
  factor L L^T = Sigma (the eigen factor, largest components on the first, best
  distributed Sobol' coordinates: the principal-components construction of Acworth,
  Broadie & Glasserman 1998);
* :func:`gaussian_probability` — P(lower <= Z <= upper) (orthant probabilities and boxes),
  by Genz's separation of variables (Genz 1992) with the variables in Genz-Bretz priority
  order: a smooth integrand on the unit cube, where plain sampling of an indicator would
  need ~1e10 points for 1e-6.

Both run R = 16 independent scramblings (:data:`RANDOMIZATIONS`) and report, per batch
entry, the mean of the R estimates and the error

    error = t_{R-1}(1 - (1 - 0.99) / 2) * std(estimates, ddof=1) / sqrt(R)   (2.95 SE at R=16)

— a 99 % Student-t interval half-width (L'Ecuyer & Lemieux 2002, section 4).  The nominal
level is 99 % rather than 95 % because the doubling loop stops at the first round whose
error is below tolerance, which favours rounds whose spread came out small; the aim is that
the true error lies within the returned error in at least 95 % of cases (measured by
``bench/bench_expectation.py``).  Points per randomisation double, from 2^10, until every
entry of the batch has ``error <= max(tol, rtol * |value|)`` or ``max_points`` is reached;
entries that meet it stop early.  An entry that never meets it is returned with its error
estimate, ``converged = False`` and a :class:`~nngp_lut.errors.ToleranceWarning`: never
silently.

Everything is deterministic given ``seed``; the same scrambled points serve every entry of
the batch, so the result does not depend on how the batch is chunked.  The errors of the
entries of one call are therefore correlated (one unlucky scrambling affects them all, most
for similar covariances): the coverage above is per entry, over seeds, not the fraction of
one batch.  Pass different seeds to calls whose errors must be independent.  Memory is bounded:
the points handed to ``f`` in one call take at most :data:`CHUNK_BYTES`.

References
----------
Owen, "Randomly permuted (t,m,s)-nets and (t,s)-sequences", 1995; Matousek, "On the L2
discrepancy for anchored boxes", J. Complexity 14, 1998 (linear matrix scrambling).
L'Ecuyer & Lemieux, "Recent advances in randomized quasi-Monte Carlo methods", 2002,
section 4 (error estimation from independent randomisations).
Acworth, Broadie & Glasserman, "A comparison of some Monte Carlo and quasi Monte Carlo
techniques for option pricing", 1998 (principal-components construction).
Genz, "Numerical computation of multivariate normal probabilities", J. Comput. Graph.
Stat. 1, 1992, section 2; Genz & Bretz, "Computation of Multivariate Normal and t
Probabilities", Springer 2009, sections 4.1.3-4.1.4 (ordering, singular covariances).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from numpy.typing import ArrayLike

from ._core import config
from .errors import DataError, ParameterError, ToleranceWarning

__all__ = ["Estimate", "NormalPoints", "gaussian_expectation", "gaussian_probability",
           "interval_multiplier", "RANDOMIZATIONS", "COVERAGE", "CHUNK_BYTES"]

#: Independent scramblings of the Sobol' points (see module docstring).
RANDOMIZATIONS = config.EXPECTATION_RANDOMIZATIONS
#: Nominal level of the returned error (a Student-t interval over the randomisations).
COVERAGE = config.EXPECTATION_COVERAGE
#: Largest array of points handed to the integrand in one call, in bytes.
CHUNK_BYTES = config.EXPECTATION_CHUNK_BYTES
#: Bits of the scrambled Sobol' digits: scipy's default, 30, puts every point on the grid
#: k / 2^30, a bias of ~1e-9 times the integrand's variation per coordinate, which shows as
#: errors several times the error estimate at tol 1e-7; 64 bits leave float64's resolution.
SOBOL_BITS = 64


@dataclass(frozen=True)
class Estimate:
    """An expectation and its error, per entry of the batch of covariances.

    Attributes
    ----------
    value : ndarray
        The estimate: batch shape (plus the integrand's trailing shape, if any).
    error : ndarray
        Same shape: half-width of the nominal 99 % Student-t interval over the
        randomisations (module docstring); the true error is within it in >= 95 % of cases.
    n_points : ndarray of int
        Batch shape: integrand evaluations spent on each entry (all randomisations).
    converged : ndarray of bool
        Batch shape: whether the entry met the tolerance (False: ``max_points`` reached).
    """

    value: np.ndarray
    error: np.ndarray
    n_points: np.ndarray
    converged: np.ndarray


# --- validation ----------------------------------------------------------------------------
def _as_covariances(cov) -> np.ndarray:
    try:
        cov = np.asarray(cov, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"cov must be a numeric array of shape (..., d, d): {exc}") from None
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2] or cov.shape[-1] == 0:
        raise DataError(f"cov must have shape (..., d, d) with d >= 1 (square last two axes); "
                        f"got shape {cov.shape}")
    if not np.isfinite(cov).all():
        raise DataError("cov has NaN or infinite entries: pass finite covariance matrices")
    asym = np.abs(cov - np.swapaxes(cov, -1, -2)).max(initial=0.0)
    if asym > config.SYMMETRY_RTOL * max(np.abs(cov).max(initial=0.0), 1e-300):
        raise DataError(f"cov is not symmetric (largest |cov - cov.T| = {asym:.3g}): pass "
                        "covariance matrices; if the asymmetry is rounding, pass "
                        "(cov + cov.swapaxes(-1, -2)) / 2")
    return cov


def _eigen_factor(cov: np.ndarray) -> np.ndarray:
    """L with L L^T = cov for each (d, d) of the flat batch cov (B, d, d): the eigen factor,
    columns by decreasing eigenvalue (the first Sobol' coordinates carry the most variance),
    negative rounding eigenvalues set to 0 so that singular covariances are exact."""
    lam, vec = np.linalg.eigh(cov)
    top = np.maximum(lam[:, -1:], 0.0)
    bad = lam[:, 0] < -config.PSD_RTOL * np.maximum(top[:, 0], 1e-300)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"cov is not positive semidefinite: entry {i} of the batch (flattened) "
                        f"has eigenvalue {lam[i, 0]:.3g} (largest {lam[i, -1]:.3g}); pass "
                        "covariance matrices (e.g. clip negative eigenvalues to 0)")
    return (vec * np.sqrt(np.maximum(lam, 0.0))[:, None, :])[:, :, ::-1]


def _options(tol, rtol, n_randomizations, min_points, max_points) -> tuple[int, int, int]:
    if not (tol >= 0 and rtol >= 0 and (tol > 0 or rtol > 0)):
        raise ParameterError(f"tol = {tol!r} and rtol = {rtol!r}: give tol > 0 or rtol > 0 "
                             "(neither negative nor NaN)")
    if int(n_randomizations) != n_randomizations or n_randomizations < 2:
        raise ParameterError(f"n_randomizations = {n_randomizations!r}: give an integer >= 2 "
                             "(the error estimate is their spread; 8-32 is usual)")
    for name, n in (("min_points", min_points), ("max_points", max_points)):
        if int(n) != n or n < 1 or int(n) & (int(n) - 1):
            raise ParameterError(f"{name} = {n!r}: give a power of 2 (Sobol' points keep their "
                                 "balance only in blocks of 2^m)")
    if max_points < min_points:
        raise ParameterError(f"max_points = {max_points} is below min_points = {min_points}: "
                             "raise max_points")
    return int(n_randomizations), int(min_points), int(max_points)


def _batch_arrays(args, batch_shape, name="args") -> list[np.ndarray]:
    """Each array of ``args``, of shape (*batch, *rest) (its leading axes broadcast to the
    batch shape), as (B, *rest)."""
    out = []
    for i, a in enumerate(args):
        a = np.asarray(a)
        rest = a.shape[len(batch_shape):]
        try:
            a = np.broadcast_to(a, batch_shape + rest)
        except ValueError:
            raise DataError(f"{name}[{i}] has shape {a.shape}, whose leading axes do not match "
                            f"the batch shape {batch_shape} of cov") from None
        out.append(a.reshape((-1,) + rest))
    return out


def _vectors(x, batch_shape, d, name, default=None) -> np.ndarray:
    """A (..., d) array (means, limits) broadcast against the batch, as (B, d)."""
    x = np.full(d, default) if x is None else np.asarray(x, dtype=np.float64)
    if x.shape[-1:] != (d,) or np.isnan(x).any():
        raise DataError(f"{name} must have last axis d = {d} and no NaN; got shape {x.shape}")
    try:
        x = np.broadcast_to(x, batch_shape + (d,))
    except ValueError:
        raise DataError(f"{name} has shape {x.shape}, which does not broadcast against the "
                        f"batch shape {batch_shape} of cov (plus d = {d})") from None
    return np.ascontiguousarray(x.reshape(-1, d))


# --- the driver: randomised QMC with doubling ----------------------------------------------
def _sobol_engines(dim, n_randomizations, seed):
    """R independently scrambled Sobol' sequences in dimension dim, deterministic in seed."""
    from scipy.stats import qmc

    return [qmc.Sobol(dim, scramble=True, bits=SOBOL_BITS, seed=np.random.default_rng(s))
            for s in np.random.SeedSequence(seed).spawn(n_randomizations)]


def interval_multiplier(n_randomizations: int) -> float:
    """The Student-t quantile that turns the standard error of R randomisations into the
    returned error (the nominal :data:`COVERAGE` interval's half-width)."""
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.5 + COVERAGE / 2, n_randomizations - 1))


class NormalPoints:
    """Standard normals at the first m points of R independently scrambled Sobol'
    sequences in dimension ``dim`` (deterministic in ``seed``), for samplers that are not
    one integrand (nngp_lut/_core/gated.py); :meth:`first` grows them by whole blocks, so
    that doubling m keeps the points already used."""

    def __init__(self, dim: int, n_randomizations: int = RANDOMIZATIONS, seed: int = 0):
        self._engines = _sobol_engines(dim, n_randomizations, seed)
        self._uniforms = np.empty((n_randomizations, 0, dim))

    def first(self, m: int) -> np.ndarray:
        """Normals at the first m points of each randomisation, shape (R, m, dim)."""
        from scipy.special import ndtri

        have = self._uniforms.shape[1]
        if m > have:
            more = np.stack([e.random(m - have) for e in self._engines])
            np.clip(more, config.EXPECTATION_CLIP, 1.0 - config.EXPECTATION_CLIP, out=more)
            self._uniforms = np.concatenate([self._uniforms, more], axis=1)
        return ndtri(self._uniforms[:, :m])


def _rqmc(integrand, n_batch, dim, *, tol, rtol, n_randomizations, min_points, max_points,
          seed, antithetic, row_bytes, what):
    """Mean of ``integrand(u, rows)`` over the unit cube [0, 1)^dim for each of ``n_batch``
    entries.  ``integrand`` maps uniforms u (R, c, dim) and an index array ``rows`` of the
    batch to values (len(rows), R, c, *k).  ``row_bytes``: bytes per point and entry of the
    integrand's largest input array, for chunking."""
    R = n_randomizations
    engines = _sobol_engines(dim, R, seed)
    multiplier = interval_multiplier(R)

    sums = None  # (B, R, *k): sums of the integrand over the points so far
    n_done = np.zeros(n_batch, dtype=np.int64)   # points per randomisation, per entry
    active = np.arange(n_batch)
    n_new = total = min_points  # points per randomisation: this round's, all so far
    value = error = None
    while True:
        per_point = max(R * row_bytes, 1)
        fit = max(CHUNK_BYTES // per_point, 1)
        c = min(n_new, 2 ** int(math.floor(math.log2(fit))))  # a power of 2: Sobol' balance
        rows_per_call = max(1, CHUNK_BYTES // (per_point * c))
        for _ in range(n_new // c):
            u = np.stack([e.random(c) for e in engines])          # (R, c, dim)
            np.clip(u, config.EXPECTATION_CLIP, 1.0 - config.EXPECTATION_CLIP, out=u)
            for start in range(0, active.size, rows_per_call):
                rows = active[start:start + rows_per_call]
                vals = integrand(u, rows)
                if antithetic:
                    vals = 0.5 * (vals + integrand(1.0 - u, rows))
                part = vals.sum(axis=2)
                if sums is None:
                    sums = np.zeros((n_batch,) + part.shape[1:])
                    value, error = np.zeros((2, n_batch) + part.shape[2:])
                sums[rows] += part
        n_done[active] = total
        est = sums[active] / total                                 # (a, R, *k)
        value[active] = est.mean(axis=1)
        error[active] = multiplier * est.std(axis=1, ddof=1) / math.sqrt(R)
        met = error[active] <= np.maximum(tol, rtol * np.abs(value[active]))
        active = active[~met.reshape(active.size, -1).all(axis=1)]
        if not active.size or total >= max_points:
            break
        n_new, total = total, 2 * total
    converged = np.ones(n_batch, dtype=bool)
    converged[active] = False
    if active.size:
        warnings.warn(f"{what}: {active.size} of {n_batch} entries did not reach tol = {tol:g} "
                      f"(rtol = {rtol:g}) within max_points = {max_points} per randomisation; "
                      f"their error estimates (largest {error[active].max():.3g}) are returned "
                      "and Estimate.converged is False for them: raise max_points or tol",
                      ToleranceWarning, stacklevel=3)
    return value, error, n_done * R * (2 if antithetic else 1), converged


# --- public functions ----------------------------------------------------------------------
def gaussian_expectation(f: Callable[..., np.ndarray], cov: ArrayLike, *,
                         mean: Optional[ArrayLike] = None, args: tuple = (),
                         tol: float = 1e-6, rtol: float = 0.0,
                         n_randomizations: int = RANDOMIZATIONS,
                         min_points: int = config.EXPECTATION_MIN_POINTS,
                         max_points: int = config.EXPECTATION_MAX_POINTS,
                         antithetic: bool = False, seed: int = 0) -> Estimate:
    """E[f(Z)], Z ~ N(mean, cov), for a batch of covariances, by randomised QMC.

    Parameters
    ----------
    f : callable
        ``f(z, *args) -> values``: z has shape (b, n, d) (b entries of the batch, n points
        each); values has shape (b, n) or (b, n, *k) for several integrands at once
        (vectorised numpy; a Numba ufunc works too).  Each of ``args`` is passed sliced to
        the same b entries, with shape (b, 1, *rest) so that it broadcasts against (b, n).
    cov : array_like, shape (..., d, d)
        Covariances: symmetric positive semidefinite; singular ones are exact (eigen
        factor, zero eigenvalues dropped).
    mean : array_like, shape (..., d), optional
        Means (default 0), broadcast against the batch.
    args : tuple of array_like
        Per-entry parameters of f, each of shape (*batch, *rest) (or broadcastable to it).
    tol, rtol : float
        Stop an entry when error <= max(tol, rtol * |value|) (every component of k).
    n_randomizations : int
        R, independent scramblings; the error is their Student-t interval.
    min_points, max_points : int
        Points per randomisation of the first round, and the budget (powers of 2).
    antithetic : bool
        Also evaluate f at mean - (Z - mean) and average (helps when f has a large odd part;
        doubles the evaluations).
    seed : int
        Seed of the scramblings: the result is a deterministic function of it.

    Returns
    -------
    Estimate
        value, error (nominal 99 % interval, see the module docstring), n_points, converged,
        with the batch shape of cov (and f's trailing shape k).

    Raises
    ------
    DataError
        cov of the wrong shape, not finite, not symmetric or not positive semidefinite;
        a mean or args that do not fit the batch; f returning the wrong shape or NaN.
    ParameterError
        tol/rtol, n_randomizations or the point counts out of range.

    Warns
    -----
    ToleranceWarning
        Some entries reached max_points without meeting the tolerance.

    References
    ----------
    Owen 1995 and Matousek 1998 (scrambled Sobol'); L'Ecuyer & Lemieux 2002, section 4
    (error from independent randomisations); Acworth, Broadie & Glasserman 1998 (principal
    components).
    """
    n_rand, min_points, max_points = _options(tol, rtol, n_randomizations, min_points,
                                              max_points)
    cov = _as_covariances(cov)
    batch_shape, d = cov.shape[:-2], cov.shape[-1]
    n_batch = int(np.prod(batch_shape, dtype=np.int64))
    factor_t = np.ascontiguousarray(np.swapaxes(_eigen_factor(cov.reshape(-1, d, d)), -1, -2)) \
        if n_batch else np.zeros((0, d, d))
    mu = None
    if mean is not None:
        mu = _vectors(mean, batch_shape, d, "mean")[:, None, :]
        if not np.isfinite(mu).all():
            raise DataError("mean has infinite entries: pass finite means")
    extra = _batch_arrays(args, batch_shape)
    if n_batch == 0:
        return Estimate(np.zeros(batch_shape), np.zeros(batch_shape),
                        np.zeros(batch_shape, dtype=np.int64), np.ones(batch_shape, bool))
    state = {}

    def integrand(u, rows):
        R, c, _ = u.shape
        from scipy.special import ndtri
        x = ndtri(u).reshape(1, R * c, d)
        z = np.matmul(x, factor_t[rows])                        # (b, R c, d)
        if mu is not None:
            z += mu[rows]
        vals = np.asarray(f(z, *(a[rows].reshape((len(rows), 1) + a.shape[1:])
                                 for a in extra)), dtype=np.float64)
        if vals.shape[:2] != (len(rows), R * c):
            raise DataError(f"f returned shape {vals.shape} for points of shape {z.shape}: it "
                            "must map (b, n, d) to (b, n) or (b, n, *k)")
        if state.setdefault("k", vals.shape[2:]) != vals.shape[2:]:
            raise DataError("f returned a different trailing shape on different calls")
        if not np.isfinite(vals).all():
            raise DataError("f returned NaN or infinite values: the expectation needs a finite "
                            "integrand on all of R^d (guard divisions, use log-sum-exp)")
        return vals.reshape((len(rows), R, c) + vals.shape[2:])

    value, error, n_points, converged = _rqmc(
        integrand, n_batch, d, tol=tol, rtol=rtol, n_randomizations=n_rand,
        min_points=min_points, max_points=max_points, seed=seed, antithetic=antithetic,
        row_bytes=8 * d, what="gaussian_expectation")
    k = value.shape[1:]
    return Estimate(value.reshape(batch_shape + k), error.reshape(batch_shape + k),
                    n_points.reshape(batch_shape), converged.reshape(batch_shape))


def gaussian_probability(cov: ArrayLike, lower: Optional[ArrayLike] = None,
                         upper: Optional[ArrayLike] = None, *,
                         mean: Optional[ArrayLike] = None, tol: float = 1e-6,
                         rtol: float = 0.0, n_randomizations: int = RANDOMIZATIONS,
                         min_points: int = config.EXPECTATION_MIN_POINTS,
                         max_points: int = config.EXPECTATION_MAX_POINTS,
                         antithetic: bool = False, seed: int = 0) -> Estimate:
    """P(lower <= Z <= upper), Z ~ N(mean, cov), for a batch of covariances.

    Genz's separation of variables turns the box probability into the integral over
    [0, 1)^(d-1) of the product of conditional probabilities
    prod_i [Phi(b_i(y)) - Phi(a_i(y))] (Genz 1992, eq. 2.3; the last variable needs no
    point), with the variables in Genz-Bretz priority order per covariance; that integral is
    estimated by the randomised QMC of :func:`gaussian_expectation` (same error semantics,
    same stopping rule).  A singular covariance (a variable that is a linear function of
    the others) contributes the indicator of its limits (Genz & Bretz 2009, 4.1.4).

    Parameters
    ----------
    cov : array_like, shape (..., d, d)
        Symmetric positive semidefinite covariances.
    lower, upper : array_like, shape (..., d), optional
        Limits (may be -inf / inf), broadcast against the batch.  Default: the positive
        orthant, lower = 0 and upper = inf, so that the result is P(Z > 0).
    mean : array_like, shape (..., d), optional
        Means (default 0).
    tol, rtol, n_randomizations, min_points, max_points, seed
        As for :func:`gaussian_expectation`.
    antithetic : bool
        Average each point u with 1 - u.  Off by default: on orthants (d = 2, 3) it halves
        the variance per point pair, which is what the second evaluation costs.

    Returns
    -------
    Estimate
        value, error, n_points, converged, of the batch shape of cov.

    References
    ----------
    Genz, J. Comput. Graph. Stat. 1, 1992, section 2; Genz & Bretz 2009, sections 4.1.3-4.1.4.
    """
    from scipy.special import ndtr, ndtri

    from ._core.sov import ordered_cholesky

    n_rand, min_points, max_points = _options(tol, rtol, n_randomizations, min_points,
                                              max_points)
    cov = _as_covariances(cov)
    batch_shape, d = cov.shape[:-2], cov.shape[-1]
    flat = cov.reshape(-1, d, d)
    n_batch = flat.shape[0]
    _eigen_factor(flat)  # the positive-semidefinite check, with its message
    lo = _vectors(lower, batch_shape, d, "lower", 0.0 if upper is None else -np.inf)
    hi = _vectors(upper, batch_shape, d, "upper", np.inf)
    if mean is not None:
        mu = _vectors(mean, batch_shape, d, "mean")
        if not np.isfinite(mu).all():
            raise DataError("mean has infinite entries: pass finite means")
        lo, hi = lo - mu, hi - mu
    if (lo > hi).any():
        raise DataError("lower > upper in some coordinate: pass lower <= upper")
    if n_batch == 0:
        return Estimate(np.zeros(batch_shape), np.zeros(batch_shape),
                        np.zeros(batch_shape, dtype=np.int64), np.ones(batch_shape, bool))
    chol = np.zeros_like(flat)
    olo, ohi = np.zeros_like(lo), np.zeros_like(hi)
    ordered_cholesky(np.ascontiguousarray(flat), lo, hi, chol, olo, ohi)
    diag = np.diagonal(chol, axis1=1, axis2=2)

    def integrand(u, rows):
        R, c, _ = u.shape
        w = u.reshape(1, R * c, -1)
        L, a, b, dg = chol[rows], olo[rows], ohi[rows], diag[rows]
        y = np.zeros((len(rows), R * c, d))
        weight = np.ones((len(rows), R * c))
        for i in range(d):
            s = np.matmul(y[:, :, :i], L[:, i, :i, None])[..., 0] if i else 0.0
            piv = dg[:, i:i + 1]
            ok = piv > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                pa = ndtr(np.where(ok, (a[:, i:i + 1] - s) / np.where(ok, piv, 1), -np.inf))
                pb = ndtr(np.where(ok, (b[:, i:i + 1] - s) / np.where(ok, piv, 1), np.inf))
            # a zero pivot: Z_i = s exactly, so the factor is the indicator a_i <= s <= b_i
            inside = (a[:, i:i + 1] <= s) & (s <= b[:, i:i + 1])
            e = np.where(ok, pb - pa, inside.astype(np.float64))
            weight *= e
            if i < d - 1:
                y[:, :, i] = np.where(ok, ndtri(np.clip(pa + w[..., i] * e,
                                                        config.EXPECTATION_CLIP,
                                                        1 - config.EXPECTATION_CLIP)), 0.0)
        return weight.reshape(len(rows), R, c)

    value, error, n_points, converged = _rqmc(
        integrand, n_batch, max(d - 1, 1), tol=tol, rtol=rtol, n_randomizations=n_rand,
        min_points=min_points, max_points=max_points, seed=seed, antithetic=antithetic,
        row_bytes=8 * 2 * d, what="gaussian_probability")
    return Estimate(value.reshape(batch_shape), error.reshape(batch_shape),
                    n_points.reshape(batch_shape), converged.reshape(batch_shape))
