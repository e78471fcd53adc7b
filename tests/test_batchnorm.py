"""BatchNorm in training mode (issue 23, item 5) against oracles that share no rule with it:
brute-force sampling of the batch's pre-activations, a batch of two (a closed form), the
1-D integral against randomised QMC (two independent methods), and invariances.  Finite
networks of the twin: tests/test_registry.py ("batchnorm")."""

import math

import numpy as np
import pytest

from nngp_lut import cluster, gp
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
        # checked before the cluster is used: no client needed
        (lambda: cluster.kernel(None, net, x), ParameterError, "tiles on a cluster cannot"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match) as info:
            call()
        assert "\n" not in str(info.value)


def test_arch_round_trip():
    for layer in (BatchNorm(), BatchNorm("relu"), BatchNorm("x*tanh(x)", tol=1e-4)):
        again = parse_arch(repr(layer))
        assert again == layer and repr(again) == repr(layer)


# --- inference mode: a reference batch normalises every input -------------------------------
def _reference_sampled(cov, b, phi, seed=3):
    """Brute force for a reference set: h ~ N(0, cov) over the reference (first b) and the
    other inputs, each input normalised by the reference's mean and spread; the mean of phi
    phi^T and its standard error."""
    rng = np.random.default_rng(seed)
    lam, vec = np.linalg.eigh(cov)
    h = (rng.standard_normal((SAMPLES, cov.shape[0])) * np.sqrt(np.maximum(lam, 0))) @ vec.T
    ref = h[:, :b]
    centre = ref.mean(axis=1, keepdims=True)
    z = phi(math.sqrt(b) * (h - centre) / np.linalg.norm(ref - centre, axis=1, keepdims=True))
    prod = z[:, :, None] * z[:, None, :]
    return prod.mean(axis=0), prod.std(axis=0) / math.sqrt(SAMPLES)


@pytest.mark.parametrize("name, phi", [("relu", lambda z: np.maximum(z, 0)),
                                       ("identity", lambda z: z)])
def test_reference_set_against_brute_force(name, phi):
    """A Dense then BatchNorm(phi) with a reference batch of 6: the kernel of 3 other inputs
    (and with the reference) against direct sampling of the normalisation."""
    rng = np.random.default_rng(8)
    ref, x = rng.standard_normal((6, 4)), rng.standard_normal((3, 4))
    layer = BatchNorm(None if name == "identity" else name)
    net = Network(serial(Dense(1.3, 0.2), layer), reference=ref)
    z = np.concatenate([ref, x])
    want, se = _reference_sampled(1.3 * z @ z.T / 4 + 0.2, 6, phi)
    got = net.kernel(z)
    assert np.all(np.abs(got - want) <= SIGMAS * se + 1e-12)
    np.testing.assert_allclose(net.diagonal(x), np.diag(got)[6:], rtol=1e-12)


def test_reference_inputs_get_the_training_kernel_and_gp_prediction_works():
    """An input of the reference set is normalised as in training mode, through two
    BatchNorm layers; the kernel is one of pairs (tiles and calls agree), so GP prediction
    runs."""
    rng = np.random.default_rng(9)
    ref, x = rng.standard_normal((8, 3)), rng.standard_normal((10, 3))
    layer = serial(Dense(1.0, 0.1), BatchNorm("relu"), Dense(1.5, 0.1), BatchNorm(),
                   Dense(1.0, 0.0))
    net = Network(layer, reference=ref)
    np.testing.assert_allclose(net.kernel(ref), Network(layer).kernel(ref), rtol=0,
                               atol=1e-12)
    k = net.kernel(x)
    np.testing.assert_allclose(net.kernel(x, tile_rows=3), k, rtol=0, atol=1e-14)
    np.testing.assert_allclose(net.kernel(x[:4], x[4:]), k[:4, 4:], rtol=0, atol=1e-14)
    assert np.linalg.eigvalsh(k).min() > 0
    y = (x[:, 0] > 0).astype(int)
    res = gp.evaluate(x[:8], y[:8], x[8:], y[8:], network=net)
    assert res.n_test == 2 and np.isfinite(res.mse)


def test_reference_set_errors():
    rng = np.random.default_rng(10)
    layer = serial(Dense(1.0, 0.1), BatchNorm("relu"), Dense(1.0, 0.0))
    x = rng.standard_normal((3, 3))
    cases = [
        (lambda: Network(serial(Dense(1.0, 0.1)), reference=x), ParameterError,
         "this network has none"),
        (lambda: Network(serial(Dense(1.0, 0.1), BatchNorm("tanh")), reference=x),
         ArchitectureError, "relu and the identity only"),
        (lambda: Network(layer, reference=x[:3]).kernel(x), DataError,
         "use at least 4 distinct reference inputs"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match) as info:
            call()
        assert "\n" not in str(info.value)


def test_cli_bn_reference(tmp_path):
    from click.testing import CliRunner

    from nngp_lut.cli.main import cli

    rng = np.random.default_rng(11)
    ref, x = rng.standard_normal((6, 5)), rng.standard_normal((7, 5))
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "x.npy", x)
    arch = "serial(Dense(1.0, 0.1), BatchNorm('relu'), Dense(1.0, 0.0))"
    res = CliRunner().invoke(cli, ["kernel", "--arch", arch, "--x1", str(tmp_path / "x.npy"),
                                   "--bn-reference", str(tmp_path / "ref.npy"), "--out",
                                   str(tmp_path / "k.npy"), "--quiet"])
    assert res.exit_code == 0, res.output
    want = Network(parse_arch(arch), reference=ref).kernel(x)
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), want, rtol=0, atol=1e-14)
    res = CliRunner().invoke(cli, ["kernel", "--arch", "serial(Dense(1.0, 0.1))", "--x1",
                                   str(tmp_path / "x.npy"), "--bn-reference",
                                   str(tmp_path / "ref.npy"), "--out", str(tmp_path / "k2.npy"),
                                   "--quiet"])
    assert res.exit_code == 1 and "this network has none" in res.output
    # predict and search: the same reference normalises training and test inputs
    y = np.arange(7) % 2
    np.savez(tmp_path / "d.npz", x_train=x[:5], y_train=y[:5], x_test=x[5:], y_test=y[5:],
             x_val=x[5:], y_val=y[5:])
    data = ["--data", str(tmp_path / "d.npz"), "--bn-reference", str(tmp_path / "ref.npy")]
    res = CliRunner().invoke(cli, ["predict", *data, "--arch", arch, "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["search", *data, "--arch", arch, "--arch",
                                   "serial(Dense(1.0, 0.1), Activation('relu'), Dense(1, 0))",
                                   "--out", str(tmp_path / "s.csv"), "--quiet"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["predict", "--data", str(tmp_path / "d.npz"), "--arch", arch,
                                   "--quiet"])
    assert res.exit_code == 1 and "--bn-reference FILE" in res.output
