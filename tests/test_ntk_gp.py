"""The NTK posterior (Lee et al. 2019, eq. 16 at t = infinity) and the GP on any network,
against dense scipy formulas on kernels from the layer-by-layer reference."""

import numpy as np
import pytest
from scipy import linalg as sla

from nngp_lut.gp import NNGPRegressor, evaluate
from nngp_lut.kernel import (Activation, Dense, FanInSum, FanOut, Identity, LayerNorm,
                             Network, parallel, serial)

JITTER = 1e-6
#: Relative tolerance of the predictive variance: a difference of nearly equal terms through
#: (Theta + jitter I)^-1, whose condition number (~1e6) magnifies the ~1e-13 by which the
#: fused kernels differ from the layer-by-layer ones.
TOL_VARIANCE = 1e-6


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((70, 6))
    y = np.sin(x[:, :2].sum(1, keepdims=True)) + 0.1 * x[:, 2:3]
    block = serial(FanOut(2), parallel(serial(Activation("relu"), Dense(1.3, 0.1)),
                                       Identity()), FanInSum(), LayerNorm())
    net = Network(serial(Dense(1.3, 0.1), block, block, Activation("relu"), Dense(1.3, 0.1)))
    return x[:50], y[:50], x[50:], y[50:], net


def dense_ntk_posterior(net, xd, yd, xs):
    kdd, tdd = net.layerwise(xd, get=("nngp", "ntk"))
    ksd, tsd = net.layerwise(xs, xd, get=("nngp", "ntk"))
    kss = net.layerwise(xs)
    tinv = sla.inv(tdd + JITTER * np.eye(len(xd)))
    mean = tsd @ tinv @ yd
    cov = kss + tsd @ tinv @ kdd @ tinv @ tsd.T - (tsd @ tinv @ ksd.T + ksd @ tinv @ tsd.T)
    return mean, np.diag(cov)


@pytest.mark.parametrize("memory", ["auto", 200_000])  # in RAM, and out of core on tiles
def test_ntk_posterior_against_dense(problem, memory, tmp_path):
    xd, yd, xs, _, net = problem
    gp = NNGPRegressor(network=net, kernel="ntk", jitter=JITTER, memory=memory, tile=16,
                       scratch=tmp_path).fit(xd, yd)
    mean, var = gp.predict(xs, return_variance=True)
    gp.close()
    ref_mean, ref_var = dense_ntk_posterior(net, xd, yd, xs)
    np.testing.assert_allclose(mean, ref_mean, rtol=0, atol=1e-8 * np.abs(ref_mean).max())
    np.testing.assert_allclose(var, ref_var, rtol=0, atol=TOL_VARIANCE * ref_var.max())


def test_nngp_posterior_of_any_network(problem):
    xd, yd, xs, _, net = problem
    gp = NNGPRegressor(network=net, jitter=JITTER).fit(xd, yd)
    mean, var = gp.predict(xs, return_variance=True)
    kdd, ksd, kss = net.layerwise(xd), net.layerwise(xs, xd), net.layerwise(xs)
    c = sla.cho_factor(kdd + JITTER * np.eye(len(xd)), lower=True)
    np.testing.assert_allclose(mean, ksd @ sla.cho_solve(c, yd), rtol=0, atol=1e-8)
    ref_var = np.diag(kss - ksd @ sla.cho_solve(c, ksd.T))
    np.testing.assert_allclose(var, ref_var, rtol=0, atol=TOL_VARIANCE * ref_var.max())
    sign, logdet = np.linalg.slogdet(kdd + JITTER * np.eye(len(xd)))
    alpha = sla.cho_solve(c, yd)
    lml = -0.5 * float(yd[:, 0] @ alpha[:, 0]) - 0.5 * logdet - 25 * np.log(2 * np.pi)
    assert gp.log_marginal_likelihood() == pytest.approx(lml, rel=1e-9)


def test_ntk_has_no_marginal_likelihood(problem):
    xd, yd, _, _, net = problem
    gp = NNGPRegressor(network=net, kernel="ntk", jitter=JITTER).fit(xd, yd)
    with pytest.raises(ValueError, match="nngp"):
        gp.log_marginal_likelihood()


def test_evaluate_with_ntk_on_labels(problem):
    xd, _, xs, _, net = problem
    labels = (xd[:, 0] > 0).astype(int), (xs[:, 0] > 0).astype(int)
    res = evaluate(xd, labels[0], xs, labels[1], network=net, kernel="ntk", jitter=JITTER,
                   standardize=False)
    tdd = net.layerwise(xd, get="ntk")
    tsd = net.layerwise(xs, xd, get="ntk")
    onehot = np.eye(2)[labels[0]] - np.eye(2)[labels[0]].mean(0)
    pred = np.argmax(tsd @ sla.solve(tdd + JITTER * np.eye(len(xd)), onehot), 1)
    assert res.accuracy == pytest.approx(np.mean(pred == labels[1]))
    with pytest.raises(ValueError, match="kernel"):
        NNGPRegressor(kernel="gp")
