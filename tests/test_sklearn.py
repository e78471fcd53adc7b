"""The scikit-learn kernel class (optional extra)."""

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.gaussian_process import GaussianProcessRegressor  # noqa: E402

from nngp_lut.sklearn import NNGPKernel  # noqa: E402


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 5))
    return x, np.sin(x[:, 0]) + 0.1 * x[:, 1]


def test_kernel_identities(xy):
    x, _ = xy
    k = NNGPKernel("relu", depth=2, weight_var=1.4, bias_var=0.2)
    np.testing.assert_allclose(k(x), k(x, x), atol=1e-12)
    np.testing.assert_allclose(k.diag(x), np.diag(k(x)), atol=1e-12)


def test_gradient_matches_finite_differences(xy):
    x, _ = xy
    k = NNGPKernel("tanh", depth=2, weight_var=1.4, bias_var=0.2)
    K, grad = k(x, eval_gradient=True)
    assert grad.shape == (40, 40, 2)
    theta = k.theta.copy()
    h = 1e-3
    for i in range(2):
        up, dn = theta.copy(), theta.copy()
        up[i] += h
        dn[i] -= h
        num = (k.clone_with_theta(up)(x) - k.clone_with_theta(dn)(x)) / (2 * h)
        np.testing.assert_allclose(grad[..., i], num, rtol=1e-4, atol=1e-7)


def test_gaussian_process_regressor(xy):
    """GaussianProcessRegressor with fixed hyperparameters gives the posterior mean of the
    paper's eq. (4), checked against scipy's dense solve."""
    from scipy.linalg import cho_factor, cho_solve

    x, y = xy
    kern = NNGPKernel("relu", depth=1, weight_var_bounds="fixed", bias_var_bounds="fixed")
    gp = GaussianProcessRegressor(kern, alpha=1e-4, normalize_y=False).fit(x[:30], y[:30])
    mean = gp.predict(x[30:])
    k_dd = kern(x[:30]) + 1e-4 * np.eye(30)
    expected = kern(x[30:], x[:30]) @ cho_solve(cho_factor(k_dd), y[:30])
    np.testing.assert_allclose(mean, expected, rtol=1e-8, atol=1e-10)
    fitted = GaussianProcessRegressor(NNGPKernel("relu", depth=1), alpha=1e-4).fit(x, y)
    assert np.isfinite(fitted.log_marginal_likelihood_value_)


def test_any_network_and_the_ntk(xy):
    from nngp_lut.kernel import Activation, Dense, LayerNorm, Network, serial

    x, y = xy
    net = Network(serial(Dense(1.3, 0.1), LayerNorm(), Activation("relu"), Dense(1.3, 0.1)))
    kern = NNGPKernel(network=net, kernel="ntk")
    assert kern.n_dims == 0  # the network's variances are its own: nothing to tune
    np.testing.assert_array_equal(kern(x[:10], x[10:]), net.kernel(x[:10], x[10:], get="ntk"))
    np.testing.assert_allclose(kern.diag(x), np.diag(kern(x)), atol=1e-12)
    ref = net.layerwise(x[:10], x[10:], get="ntk")
    np.testing.assert_allclose(kern(x[:10], x[10:]), ref, rtol=0, atol=1e-7 * np.abs(ref).max())
    gp = GaussianProcessRegressor(kern, alpha=1e-4).fit(x, y)
    assert np.isfinite(gp.predict(x[:3])).all()
