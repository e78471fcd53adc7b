"""BatchNorm in training mode (issue 23, item 5) against oracles that share no rule with it:
brute-force sampling of the batch's pre-activations, a batch of two (a closed form), the
1-D integral against randomised QMC (two independent methods), and invariances.  Finite
networks of the twin: tests/test_registry.py ("batchnorm")."""

import math

import numpy as np
import pytest

from nngp_lut import gp
from nngp_lut.activations import get_activation
from nngp_lut.errors import ArchitectureError, DataError, ParameterError
from nngp_lut.kernel import BatchNorm, Conv, Dense, Flatten, Network, serial
from nngp_lut.kernel.arch import parse_arch
from nngp_lut.kernel.batchnorm import homogeneous_kernel, sampled_kernel

SAMPLES = 2_000_000
SIGMAS = 5.0


def _batch_cov(b, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, 4))
    return x @ x.T / 4 + 0.3


def _sampled(cov, phi, seed=1):
    """Brute force: h ~ N(0, cov) drawn directly, normalised over the batch, phi applied;
    the mean of phi phi^T and its standard error."""
    rng = np.random.default_rng(seed)
    b = cov.shape[0]
    lam, vec = np.linalg.eigh(cov)
    h = (rng.standard_normal((SAMPLES, b)) * np.sqrt(np.maximum(lam, 0))) @ vec.T
    v = h - h.mean(axis=1, keepdims=True)
    z = phi(math.sqrt(b) * v / np.linalg.norm(v, axis=1, keepdims=True))
    prod = z[:, :, None] * z[:, None, :]
    return prod.mean(axis=0), prod.std(axis=0) / math.sqrt(SAMPLES)


@pytest.mark.parametrize("name, phi", [("relu", lambda z: np.maximum(z, 0)),
                                       ("identity", lambda z: z)])
def test_the_integral_formula_against_brute_force(name, phi):
    cov = _batch_cov(5)
    want, se = _sampled(cov, phi)
    got = homogeneous_kernel(cov, name)
    assert np.all(np.abs(got - want) <= SIGMAS * se + 1e-12)


def angular_relu_kernel(cov):
    """Independent truth for a batch of 3: the centred batch lies in the plane orthogonal to
    1, so BN(h) = sqrt(3) Q u with u = w / |w| on the unit circle, w ~ N(0, Q^T cov Q), whose
    angle has the density 1 / (2 pi sqrt(det C) u^T C^-1 u) (the angular central Gaussian):
    one quadrature over the angle, split at relu's kinks."""
    from scipy.integrate import quad

    q = np.array([[1, -1, 0], [1, 1, -2]], float).T / np.array([math.sqrt(2), math.sqrt(6)])
    c = q.T @ cov @ q
    c_inv, det = np.linalg.inv(c), np.linalg.det(c)
    kinks = sorted({(math.atan2(-q[i, 0], q[i, 1]) + k * math.pi) % (2 * math.pi)
                    for i in range(3) for k in (0, 1)})

    def entry(i, j, t):
        u = np.array([math.cos(t), math.sin(t)])
        zi, zj = math.sqrt(3) * (q[i] @ u), math.sqrt(3) * (q[j] @ u)
        return max(zi, 0.0) * max(zj, 0.0) / (2 * math.pi * math.sqrt(det) * (u @ c_inv @ u))

    return np.array([[quad(lambda t: entry(i, j, t), 0, 2 * math.pi, points=kinks,
                           epsabs=1e-14, epsrel=1e-13, limit=400)[0] for j in range(3)]
                     for i in range(3)])


def test_relu_formula_against_the_angular_integral_of_a_batch_of_three():
    cov = _batch_cov(3, seed=7)
    assert np.abs(homogeneous_kernel(cov, "relu") - angular_relu_kernel(cov)).max() <= 1e-9


def test_relu_formula_against_quasi_monte_carlo_to_1e_5():
    cov = _batch_cov(6, seed=2)
    est = sampled_kernel(cov, get_activation("relu"), tol=5e-6)
    assert np.abs(homogeneous_kernel(cov, "relu") - est.value).max() <= 1e-5


def test_tanh_against_brute_force():
    cov = _batch_cov(4, seed=3)
    want, se = _sampled(cov, np.tanh)
    layer = BatchNorm("tanh", tol=2e-4)
    assert np.all(np.abs(layer.batch_kernel(cov) - want) <= SIGMAS * se + 2e-4)


def test_a_batch_of_two_is_plus_or_minus_one():
    cov = np.array([[1.0, 0.3], [0.3, 2.0]])  # BN(h) = +-(1, -1), each sign with 1/2
    np.testing.assert_allclose(homogeneous_kernel(cov, "relu"), np.diag([0.5, 0.5]),
                               atol=1e-9)
    np.testing.assert_allclose(homogeneous_kernel(cov, "identity"),
                               [[1.0, -1.0], [-1.0, 1.0]], atol=1e-9)


def test_invariances():
    cov = _batch_cov(5, seed=4)
    k = homogeneous_kernel(cov, "relu")
    perm = np.array([3, 0, 4, 1, 2])
    np.testing.assert_allclose(homogeneous_kernel(cov[np.ix_(perm, perm)], "relu"),
                               k[np.ix_(perm, perm)], atol=1e-9)
    # A unit's common shift over the batch, and its scale, are normalised away.
    np.testing.assert_allclose(homogeneous_kernel(3.0 * cov + 2.0, "relu"), k, atol=1e-9)
    ident = homogeneous_kernel(cov, "identity")
    assert abs(np.trace(ident) - 5) < 1e-9 and np.abs(ident.sum(axis=0)).max() < 1e-9
    assert np.linalg.eigvalsh(k).min() > -1e-12


def test_network_batch_semantics():
    net = Network(serial(Dense(1.0, 0.1), BatchNorm("relu"), Dense(1.5, 0.1),
                         BatchNorm("erf", tol=1e-3), Dense(1.0, 0.0)))
    x = np.random.default_rng(5).standard_normal((6, 3))
    k = net.kernel(x)
    np.testing.assert_allclose(net.kernel(x[:2], x[2:]), k[:2, 2:], atol=1e-12)
    np.testing.assert_allclose(net.diagonal(x), np.diag(k), atol=1e-12)
    np.testing.assert_allclose(net.kernel(x, all_depths=True)[-1], k, atol=1e-12)
    # the batch decides: the same inputs in another batch have another kernel
    assert np.abs(net.kernel(x[:3])[:3, :3] - k[:3, :3]).max() > 1e-3


def test_one_line_errors():
    x = np.random.default_rng(6).standard_normal((4, 3))
    net = Network(serial(Dense(1.0, 0.1), BatchNorm("relu")))
    cases = [
        (lambda: net.kernel(x, get="ntk"), ArchitectureError, "gives the NNGP only"),
        (lambda: net.kernel(x[:1]), DataError, "at least 2 inputs"),
        (lambda: net.kernel(np.ones((3, 3))), DataError, "do not vary across the batch"),
        (lambda: net.kernel(x, out="k.h5"), ParameterError, "one block in RAM"),
        (lambda: Network(serial(BatchNorm(), Dense(1.0, 0.0))).kernel(x), ArchitectureError,
         "needs Gaussian pre-activations"),
        (lambda: Network(serial(Conv(1.0, 0.0), BatchNorm(), Flatten())).kernel(
            x.reshape(4, 3, 1)), ArchitectureError, "not on images or sequences"),
        (lambda: gp.evaluate(x, [0, 1, 0, 1], x, [0, 1, 0, 1], network=net), ArchitectureError,
         "GP prediction needs one prior"),
        (lambda: parse_arch("BatchNorm(tol=0)"), ArchitectureError, "BatchNorm needs tol > 0"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match) as info:
            call()
        assert "\n" not in str(info.value)


def test_arch_round_trip():
    for layer in (BatchNorm(), BatchNorm("relu"), BatchNorm("x*tanh(x)", tol=1e-4)):
        again = parse_arch(repr(layer))
        assert again == layer and repr(again) == repr(layer)
