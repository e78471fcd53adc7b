"""GP regression and classification (issue #4) against dense numpy/scipy formulas."""

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from nngp_lut import gp
from nngp_lut.kernel import nngp_diag, nngp_kernel

#: Posterior mean and variance against the dense formulas, stated once (relative).
TOL = 1e-8
NET = dict(depth=3, weight_var=1.6, bias_var=0.1)


@pytest.fixture
def problem(rng):
    x = rng.standard_normal((70, 6))
    xt = rng.standard_normal((23, 6))
    y = np.sin(x[:, :2] @ [1.0, -0.5])[:, None] + 0.1 * rng.standard_normal((70, 1))
    return x, y, xt


def dense_posterior(x, y, xt, phi, noise):
    k = nngp_kernel(x, phi=phi, **NET) + noise * np.eye(len(x))
    ks = nngp_kernel(xt, x, phi=phi, **NET)
    c = scipy.linalg.cho_factor(k, lower=True)
    mean = ks @ scipy.linalg.cho_solve(c, y)
    var = nngp_diag(xt, phi=phi, **NET) - np.einsum("ij,ji->i", ks,
                                                    scipy.linalg.cho_solve(c, ks.T))
    return mean, var, k


@pytest.mark.parametrize("memory", ["auto", "90KB"])  # 90KB: out of core, tiles of 16
def test_posterior_matches_dense_formulas(problem, tmp_path, memory):
    x, y, xt = problem
    model = gp.NNGPRegressor("relu", **NET, jitter=1e-3, memory=memory, scratch=tmp_path,
                             tile=16)
    model.fit(x, y)
    assert (memory == "auto") == (type(model.factor_.store).__name__ == "MemoryTiles")
    mean, var = model.predict(xt, return_variance=True)
    ref_mean, ref_var, k = dense_posterior(x, y, xt, "relu", 1e-3)
    assert np.abs(mean - ref_mean).max() < TOL * np.abs(ref_mean).max()
    assert np.abs(var - ref_var).max() < TOL * ref_var.max()
    assert np.all(var > 0)
    lml = scipy.stats.multivariate_normal(np.zeros(len(x)), k).logpdf(y[:, 0])
    assert model.log_marginal_likelihood() == pytest.approx(lml, rel=1e-10)
    assert model.jitter_ == 1e-3
    model.close()
    assert list(tmp_path.iterdir()) == []


def test_paper_jitter_rule_climbs_until_factorable(rng):
    # A linear kernel of rank 2 on 60 inputs, scaled so that rounding (~1e-16 * 1e8 * 60)
    # swamps the first jitters: K_DD is numerically indefinite.
    x = rng.standard_normal((60, 2))
    y = rng.standard_normal((60, 2))
    net = dict(depth=0, weight_var=1e8, bias_var=0.0)
    model = gp.NNGPRegressor("relu", **net).fit(x, y)
    assert model.jitter_ in gp.jitter_ladder("absolute") and model.jitter_ > 1e-10
    # The reported jitter is the one used: (K + jitter I) alpha = y to backward-stable
    # accuracy (the system is too ill-conditioned to compare alpha itself).
    k = nngp_kernel(x, phi="relu", **net) + model.jitter_ * np.eye(60)
    residual = np.abs(k @ model.alpha_ - y).max()
    assert residual < 1e-12 * np.abs(k).max() * np.abs(model.alpha_).max() * 60


def test_relative_jitter_scales_with_the_diagonal(rng):
    x = rng.standard_normal((20, 3))
    model = gp.NNGPRegressor("relu", depth=1, weight_var=2.0, bias_var=0.5,
                             jitter="relative").fit(x, np.ones(20))
    diag_mean = np.mean(nngp_diag(x, phi="relu", depth=1, weight_var=2.0, bias_var=0.5))
    assert model.jitter_ == pytest.approx(1e-10 * diag_mean)
    with pytest.raises(ValueError, match="absolute"):
        gp.jitter_ladder("paper")


def test_classification_is_regression_on_shifted_one_hot(rng):
    centers = rng.standard_normal((3, 5)) * 3
    y = np.repeat(np.arange(3), 20)
    x = centers[y] + rng.standard_normal((60, 5))
    yt = np.arange(3).repeat(4)
    xt = centers[yt] + rng.standard_normal((12, 5))
    res = gp.evaluate(x, y, xt, yt, phi="relu", **NET, standardize=False)
    targets = np.eye(3)[y] - 1 / 3
    mean, _, _ = dense_posterior(x, targets, xt, "relu", res.jitter)
    assert np.abs(res.mean - mean).max() < 1e-6
    assert res.accuracy == np.mean(np.argmax(mean, 1) == yt)
    assert res.mse == pytest.approx(np.mean((mean - (np.eye(3)[yt] - 1 / 3)) ** 2), rel=1e-6)
    assert res.accuracy > 0.9  # well-separated clusters


def test_regression_targets_and_errors(problem):
    x, y, xt = problem
    res = gp.evaluate(x, y[:, 0], xt, np.zeros(23), phi="relu", **NET, jitter=1e-3,
                      variance=True, standardize=False)
    assert res.accuracy is None and res.variance.shape == (23,)
    assert res.mse == pytest.approx(np.mean(res.mean ** 2))
    with pytest.raises(ValueError, match="targets"):
        gp.NNGPRegressor("relu", **NET).fit(x, y[:-1])
    model = gp.NNGPRegressor("relu", **NET).fit(x, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(xt[:, :5])
