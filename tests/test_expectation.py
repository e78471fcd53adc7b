"""The Gaussian-expectation engine (issue 23, item 3) against independent truth: closed forms
(arc-cosine, erf, bivariate and trivariate orthants), scipy's multivariate normal CDF, and
identities of singular covariances; its error estimate, its tolerance loop, its errors."""

import math
import warnings

import numpy as np
import pytest
from scipy.special import erf
from scipy.stats import multivariate_normal

from nngp_lut import expectation
from nngp_lut.errors import DataError, ParameterError, ToleranceWarning
from nngp_lut.expectation import Estimate, gaussian_expectation, gaussian_probability


def relu_product(z):
    return np.maximum(z, 0.0).prod(axis=-1)


def erf_product(z):
    return erf(z).prod(axis=-1)


def bivariate(q1, q2, rho):
    c = rho * np.sqrt(q1 * q2)
    return np.stack([np.stack([q1, c], -1), np.stack([c, q2], -1)], -2)


def random_correlations(rng, n, d):
    a = rng.standard_normal((n, d, d))
    c = a @ np.swapaxes(a, -1, -2) + 0.2 * np.eye(d)
    s = np.sqrt(np.diagonal(c, axis1=-2, axis2=-1))
    return c / (s[:, :, None] * s[:, None, :])


def arccos_relu(q1, q2, rho):
    """E[relu(u) relu(v)] (Cho & Saul 2009, arc-cosine kernel of degree 1)."""
    theta = np.arccos(rho)
    return np.sqrt(q1 * q2) / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * rho)


def erf_closed(q1, q2, rho, a=1.0, b=1.0):
    """E[erf(a u) erf(b v)] = 2/pi asin(2 a b c / sqrt((1 + 2 a^2 q1)(1 + 2 b^2 q2)))."""
    c = rho * np.sqrt(q1 * q2)
    return 2 / np.pi * np.arcsin(2 * a * b * c / np.sqrt((1 + 2 * a * a * q1)
                                                          * (1 + 2 * b * b * q2)))


@pytest.fixture
def pairs(rng):
    n = 12
    q1, q2 = rng.uniform(0.2, 3.0, n), rng.uniform(0.2, 3.0, n)
    rho = rng.uniform(-0.98, 0.98, n)
    return q1, q2, rho


def one_seed_each(fn, cov, **kwargs):
    """Each covariance with its own seed: the errors of one batch share the points and are
    correlated, so a fraction covered within one batch is one trial, not many."""
    out = [fn(c, seed=i, **kwargs) for i, c in enumerate(cov)]
    return (np.array([e.value for e in out]), np.array([e.error for e in out]),
            np.array([e.converged for e in out]))


def test_relu_and_erf_against_closed_forms_with_covering_errors(pairs):
    q1, q2, rho = pairs
    cov = bivariate(q1, q2, rho)
    for f, exact, tol in ((relu_product, arccos_relu(q1, q2, rho), 1e-4),
                          (erf_product, erf_closed(q1, q2, rho), 1e-5)):
        value, error, converged = one_seed_each(
            lambda c, **k: gaussian_expectation(f, c, **k), cov, tol=tol)
        assert converged.all() and (error <= tol).all()
        err = np.abs(value - exact)
        assert np.mean(err <= error) >= 0.9, (err / error).max()
        assert err.max() < 3 * tol


def test_bivariate_and_trivariate_orthants_against_closed_forms(rng):
    c2 = random_correlations(rng, 30, 2)
    exact2 = 0.25 + np.arcsin(c2[:, 0, 1]) / (2 * np.pi)
    c3 = random_correlations(rng, 30, 3)
    exact3 = 0.125 + (np.arcsin(c3[:, 0, 1]) + np.arcsin(c3[:, 0, 2])
                      + np.arcsin(c3[:, 1, 2])) / (4 * np.pi)
    for cov, exact in ((c2, exact2), (c3, exact3)):
        value, error, _ = one_seed_each(gaussian_probability, cov, tol=1e-6)
        err = np.abs(value - exact)
        assert (error <= 1e-6).all()
        assert np.mean(err <= error) >= 0.9
        assert err.max() < 3e-6


def test_orthants_in_higher_dimensions_against_scipy(rng):
    for d in (5, 8):
        for cov in random_correlations(rng, 2, d):
            est = gaussian_probability(cov, tol=1e-5)
            ref = multivariate_normal.cdf(np.zeros(d), np.zeros(d), cov, abseps=1e-6)
            assert abs(est.value - ref) <= est.error + 1e-6


def test_boxes_with_means_against_scipy(rng):
    cov = random_correlations(rng, 1, 4)[0] * 1.5
    mean = np.array([0.3, -0.2, 0.1, 0.5])
    lower, upper = np.array([-1.0, -np.inf, -0.5, 0.0]), np.array([1.0, 0.5, np.inf, 2.0])
    est = gaussian_probability(cov, lower, upper, mean=mean, tol=1e-5)
    ref = multivariate_normal.cdf(upper, mean, cov, lower_limit=lower, abseps=1e-7)
    assert abs(est.value - ref) <= est.error + 1e-6


def test_the_tolerance_drives_the_work(pairs):
    cov = bivariate(*pairs)[:4]
    loose = gaussian_expectation(erf_product, cov, tol=1e-3)
    tight = gaussian_expectation(erf_product, cov, tol=1e-5)
    assert (loose.error <= 1e-3).all() and (tight.error <= 1e-5).all()
    assert (tight.n_points > loose.n_points).all()
    # rtol: the looser of the two criteria
    rel = gaussian_expectation(erf_product, cov, tol=1e-12, rtol=1e-3)
    assert (rel.error <= 1e-3 * np.abs(rel.value)).all() and rel.converged.all()


def test_a_budget_too_small_warns_and_flags(pairs):
    cov = bivariate(*pairs)[:3]
    with pytest.warns(ToleranceWarning, match="did not reach tol"):
        est = gaussian_expectation(relu_product, cov, tol=1e-9, max_points=2 ** 11)
    assert not est.converged.any() and (est.error > 1e-9).all()
    assert (est.n_points == expectation.RANDOMIZATIONS * 2 ** 11).all()


def test_singular_covariances_are_exact():
    # z2 = z1: E[relu(z1)^2] = q / 2; P(z1 > 0, z2 > 0) = 1/2; z2 = -z1: 0
    q = 1.7
    same = np.array([[q, q], [q, q]])
    est = gaussian_expectation(relu_product, same, tol=1e-4)
    assert abs(est.value - q / 2) <= max(est.error, 1e-12)
    opposite = np.array([[1.0, -1.0], [-1.0, 1.0]])
    p = gaussian_probability(np.stack([same, opposite]), tol=1e-8)
    assert np.allclose(p.value, [0.5, 0.0], atol=1e-12)
    # z3 = z1 + z2 (rank 2): P(z1, z2, z3 > 0) = P(z1, z2 > 0) = 1/4 + asin(r) / (2 pi)
    r = 0.3
    m = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cov = m @ np.array([[1.0, r], [r, 1.0]]) @ m.T
    p = gaussian_probability(cov, tol=1e-6)
    assert abs(p.value - (0.25 + math.asin(r) / (2 * math.pi))) <= p.error + 1e-12
    # a unit of variance 0 is the constant 0: P(z1 > 0, 0 >= 0) = 1/2
    p = gaussian_probability(np.diag([2.0, 0.0]), tol=1e-8)
    assert abs(p.value - 0.5) < 1e-12


def test_several_integrands_means_and_per_entry_arguments(pairs):
    q1, q2, rho = (x[:6] for x in pairs)
    cov = bivariate(q1, q2, rho)
    a = np.linspace(0.5, 2.0, 6)

    def f(z, scale):  # scale: (b, 1) against z (b, n, 2)
        return np.stack([erf(scale * z[..., 0]) * erf(scale * z[..., 1]),
                         z[..., 0] * z[..., 1]], axis=-1)

    mean = np.array([0.4, -0.3])
    est = gaussian_expectation(f, cov, args=(a,), tol=1e-3)
    assert est.value.shape == est.error.shape == (6, 2)
    exact = erf_closed(q1, q2, rho, a, a)
    assert (np.abs(est.value[:, 0] - exact) <= est.error[:, 0]).mean() >= 0.8
    assert (np.abs(est.value[:, 1] - cov[:, 0, 1]) <= est.error[:, 1]).mean() >= 0.8
    shifted = gaussian_expectation(f, cov, args=(a,), mean=mean, tol=1e-3)
    assert np.allclose(shifted.value[:, 1], cov[:, 0, 1] + mean[0] * mean[1], atol=3e-3)


def test_batch_shape_determinism_and_chunking(pairs, monkeypatch):
    cov = bivariate(*pairs)[:6].reshape(2, 3, 2, 2)
    est = gaussian_expectation(erf_product, cov, tol=1e-5, seed=3)
    assert isinstance(est, Estimate) and est.value.shape == est.n_points.shape == (2, 3)
    again = gaussian_expectation(erf_product, cov, tol=1e-5, seed=3)
    assert np.array_equal(est.value, again.value) and np.array_equal(est.error, again.error)
    alone = gaussian_expectation(erf_product, cov[1, 2], tol=1e-5, seed=3)
    assert np.isclose(alone.value, est.value[1, 2], rtol=0, atol=1e-14)
    # a tiny memory budget: many calls of f on few points and one entry each, same answer
    monkeypatch.setattr(expectation, "CHUNK_BYTES", 4096)
    calls = []
    small = gaussian_expectation(lambda z: calls.append(z.shape) or erf_product(z), cov,
                                 tol=1e-5, seed=3)
    assert max(b * n * d * 8 for b, n, d in calls) <= 4096
    assert np.allclose(small.value, est.value, rtol=0, atol=1e-14)
    assert np.array_equal(small.n_points, est.n_points)


@pytest.mark.parametrize("cov, match", [
    (np.ones(3), r"shape \(\.\.\., d, d\)"),
    (np.ones((2, 3)), r"shape \(\.\.\., d, d\)"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN or infinite"),
    (np.array([[1.0, 0.5], [0.4, 1.0]]), "not symmetric"),
    (np.array([[1.0, 2.0], [2.0, 1.0]]), "not positive semidefinite.*eigenvalue -1"),
])
def test_bad_covariances_are_one_line_data_errors(cov, match):
    for call in (lambda: gaussian_expectation(relu_product, cov),
                 lambda: gaussian_probability(cov)):
        with pytest.raises(DataError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, match", [
    (dict(tol=0.0), "give tol > 0 or rtol > 0"),
    (dict(tol=-1.0), "give tol > 0 or rtol > 0"),
    (dict(n_randomizations=1), "integer >= 2"),
    (dict(min_points=1000), "power of 2"),
    (dict(min_points=2 ** 12, max_points=2 ** 10), "raise max_points"),
])
def test_bad_options_are_parameter_errors(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        gaussian_expectation(relu_product, np.eye(2), **kwargs)


def test_bad_integrands_and_limits_are_data_errors():
    with pytest.raises(DataError, match=r"must map \(b, n, d\) to \(b, n\)"):
        gaussian_expectation(lambda z: z.sum(), np.eye(2))
    with pytest.raises(DataError, match="NaN or infinite values"):
        gaussian_expectation(lambda z: np.where(z[..., 0] > 0, np.nan, 1.0), np.eye(2))
    with pytest.raises(DataError, match="lower > upper"):
        gaussian_probability(np.eye(2), [1.0, 0.0], [0.0, 1.0])
    with pytest.raises(DataError, match="batch shape"):
        gaussian_expectation(lambda z, a: z[..., 0] * a, np.stack([np.eye(2)] * 3),
                             args=(np.ones(4),))


def test_empty_batch_and_one_dimension():
    est = gaussian_expectation(relu_product, np.zeros((0, 3, 3)))
    assert est.value.shape == (0,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = gaussian_probability(np.array([[2.0]]), [-1.0], [1.0], tol=1e-10)
    assert abs(p.value - math.erf(1 / 2)) < 1e-12  # P(|N(0, 2)| <= 1) = erf(1/2)
