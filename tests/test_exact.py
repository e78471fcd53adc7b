"""Exact semantics of every composition the grammar accepts (issue #20), each against an
oracle that does not share the engine's rules: explicit numpy recursions with closed forms,
and Monte Carlo over finite networks.

* An Activation after Flatten acts on a mixture over positions: mean_h F(K_hh), not
  F(mean_h K_hh); after FanInConcat on a mixture over branches: (F(K_a) + F(K_b)) / 2.
* A unit of variance 0 is the constant phi(0): F(0, q, rho) = phi(0) E[phi(v)] and
  Fdot(0, q, rho) = phi'(0) E[phi'(v)].
* relu's NTK at correlation exactly 1 (x' = c x) is the arc-cosine recursion to rounding.
"""

import math

import numpy as np
import pytest

from nngp_lut.errors import DataError, LayerwiseWarning, NonFiniteKernel
from nngp_lut.kernel import (Activation, ArchitectureError, AvgPool, Conv, Dense,
                             FanInConcat, FanInSum, FanOut, Flatten, GlobalAvgPool,
                             Identity, LayerNorm, Network, parallel, serial)
from nngp_lut.kernel.layers import exact_form

from .naive import closed_form, closed_form_dot

#: Explicit closed-form recursions against the engine (relu slices: ~1e-9 of the scale).
TOL_CLOSED = 1e-8
#: relu's NTK of x' = c x against its closed form (issue #20: exact at rho = 1).
TOL_RHO_ONE = 1e-12
#: Monte Carlo: the infinite-width kernel lies within this many standard errors of the
#: mean over draws (the finite-width bias, O(1/width), is ~1e-3 of the entries at 512).
MC_SIGMAS = 5.0


def conv2_same(img1, img2, w, b):
    """K_hh(x, x') of Conv(w, b, filter_shape=(2, 2), padding='SAME') on one-channel images,
    by explicit sums over the window (XLA's SAME pads 1 after each axis for a 2x2 filter)."""
    h, wd = img1.shape
    p1, p2 = np.pad(img1, ((0, 1), (0, 1))), np.pad(img2, ((0, 1), (0, 1)))
    out = np.empty((h, wd))
    for i in range(h):
        for j in range(wd):
            out[i, j] = b + w * np.mean(p1[i:i + 2, j:j + 2] * p2[i:i + 2, j:j + 2])
    return out


def flatten_then_relu_oracle(x, w_conv, b_conv, w_out, b_out):
    """serial(Conv 2x2 SAME, Flatten(), Activation('relu'), Dense): per pair the mean over
    positions of relu's closed forms, each position with its own variances."""
    n = len(x)
    k = np.empty((n, n))
    t = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            c = conv2_same(x[i], x[j], w_conv, b_conv)
            q1 = conv2_same(x[i], x[i], w_conv, b_conv)
            q2 = conv2_same(x[j], x[j], w_conv, b_conv)
            rho = np.clip(c / np.sqrt(q1 * q2), -1, 1)
            if i == j:
                rho[:] = 1.0
            f = closed_form("relu", q1, q2, rho)
            fd = closed_form_dot("relu", q1, q2, rho)
            k[i, j] = b_out + w_out * f.mean()
            t[i, j] = k[i, j] + w_out * (fd * c).mean()  # Theta of the conv is its K
    return k, t


def concat_then_relu_oracle(x, shares=(0.5, 0.5)):
    """serial(FanOut(2), parallel(Dense(1, 0), Dense(1, 1)), FanInConcat(), relu,
    Dense(1, 0)): the mean of relu's closed forms over the two branches, weighted by their
    shares of the features."""
    g = x @ x.T / x.shape[1]
    k, t = 0.0, 0.0
    for b, share in zip((0.0, 1.0), shares):
        kb = b + g
        q = np.diag(kb)
        rho = np.clip(kb / np.sqrt(np.outer(q, q)), -1, 1)
        np.fill_diagonal(rho, 1.0)
        k = k + closed_form("relu", q[:, None], q[None, :], rho) * share
        t = t + closed_form_dot("relu", q[:, None], q[None, :], rho) * kb * share
    return k, k + t


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).standard_normal((4, 3, 3))


@pytest.fixture(scope="module")
def vectors():
    return np.random.default_rng(6).standard_normal((5, 7))


FLATTEN_RELU = serial(Conv(1.0, 0.1, filter_shape=(2, 2), padding="SAME"), Flatten(),
                      Activation("relu"), Dense(1.0, 0.1))
CONCAT_RELU = serial(FanOut(2), parallel(Dense(1.0, 0.0), Dense(1.0, 1.0)), FanInConcat(),
                     Activation("relu"), Dense(1.0, 0.0))


def test_activation_after_flatten_is_the_mean_over_positions(images):
    ek, et = flatten_then_relu_oracle(images, 1.0, 0.1, 1.0, 0.1)
    net = Network(FLATTEN_RELU)
    x = images[..., None]
    for k, t in (net.kernel(x, get=("nngp", "ntk")), net.layerwise(x, get=("nngp", "ntk"))):
        assert np.max(np.abs(k - ek)) <= TOL_CLOSED * np.abs(ek).max()
        assert np.max(np.abs(t - et)) <= TOL_CLOSED * np.abs(et).max()
    np.testing.assert_allclose(net.diagonal(x, get="ntk"), np.diag(et), rtol=TOL_CLOSED)


def test_activation_after_concat_is_the_mean_over_branches(vectors):
    ek, et = concat_then_relu_oracle(vectors)
    net = Network(CONCAT_RELU)
    for k, t in (net.kernel(vectors, get=("nngp", "ntk")),
                 net.layerwise(vectors, get=("nngp", "ntk"))):
        assert np.max(np.abs(k - ek)) <= TOL_CLOSED * np.abs(ek).max()
        assert np.max(np.abs(t - et)) <= TOL_CLOSED * np.abs(et).max()


def test_concat_of_declared_widths_is_weighted_by_them(vectors):
    ek, et = concat_then_relu_oracle(vectors, (0.25, 0.75))
    k, t = Network(CONCAT_WIDTHS).kernel(vectors, get=("nngp", "ntk"))
    assert np.max(np.abs(k - ek)) <= TOL_CLOSED * np.abs(ek).max()
    assert np.max(np.abs(t - et)) <= TOL_CLOSED * np.abs(et).max()


CONCAT_WIDTHS = serial(FanOut(2), parallel(Dense(1.0, 0.0, width=256),
                                           Dense(1.0, 1.0, width=768)),
                       FanInConcat(), Activation("relu"), Dense(1.0, 0.0))


@pytest.mark.parametrize("layer, inputs", [(FLATTEN_RELU, "images"), (CONCAT_RELU, "vectors"),
    (CONCAT_WIDTHS, "vectors"),
    (serial(FanOut(2), parallel(Conv(1.0, 0.0, filter_shape=(2, 2)),
                                Conv(2.0, 0.5, filter_shape=(2, 2))),
            FanInConcat(), AvgPool((2, 2), padding="SAME"), Activation("relu"),
            GlobalAvgPool(), Dense(1.0, 0.0)), "images")])
def test_mixtures_against_finite_networks(layer, inputs, images, vectors):
    mc = pytest.importorskip("nngp_lut.montecarlo")
    pytest.importorskip("jax")
    x = images[..., None] if inputs == "images" else vectors
    draws = list(mc._per_draw(layer, x, None, 512, 24, 0, ("nngp", "ntk"), 1, None))
    k, t = Network(layer).kernel(x, get=("nngp", "ntk"))
    for kind, exact in (("nngp", k), ("ntk", t)):
        a = np.stack([d[kind] for d in draws])
        err = a.std(0, ddof=1) / math.sqrt(len(draws))
        assert np.all(np.abs(a.mean(0) - exact) <= MC_SIGMAS * err + 1e-3 * np.abs(exact)), \
            (kind, a.mean(0), exact, err)


def test_exact_form_moves_activations_only():
    moved = exact_form(FLATTEN_RELU)
    assert [type(x).__name__ for x in moved.layers()] == ["Conv", "Activation", "Flatten",
                                                          "Dense"]
    norm = exact_form(serial(Conv(1.0, 0.1), Flatten(), LayerNorm(), Dense(1.0, 0.0)))
    assert norm.layers()[1] == LayerNorm("all")
    concat = exact_form(CONCAT_RELU).layers()
    assert [type(x).__name__ for x in concat] == ["FanOut", "Parallel", "FanInConcat", "Dense"]
    assert all(isinstance(b.layers()[-1], Activation) for b in concat[1].children)


def test_activation_on_an_unmovable_mixture_is_refused(vectors):
    net = Network(serial(FanOut(2), parallel(Dense(1.0, 0.0), Dense(2.0, 1.0)), FanInConcat(),
                         LayerNorm(), Activation("relu"), Dense(1.0, 0.0)))
    for run in (net.kernel, net.layerwise, net.diagonal):
        with pytest.raises(ArchitectureError, match="before Flatten"):
            run(vectors)


@pytest.mark.parametrize("join", [FanInSum(), FanInConcat()])
def test_branches_of_different_shapes_are_refused(join):
    net = Network(serial(FanOut(2), parallel(Conv(1.0, 0.0, strides=(2, 2)),
                                             Conv(1.0, 0.0)),
                         join, Flatten(), Dense(1.0, 0.0)))
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 1))
    for run in (net.kernel, net.layerwise):
        with pytest.raises(ArchitectureError, match="2x2 positions, 4x4 positions"):
            run(x)


@pytest.mark.parametrize("branches", [
    (FanOut(2),),
    (FanOut(2), parallel(Activation("relu"), Identity())),
])
def test_sums_of_dependent_branches_are_refused(branches):
    # relu(z) + z: E[(relu(u) + u)(relu(v) + v)] has the cross terms E[relu(u) v] that the
    # rule K_a + K_b leaves out.
    with pytest.raises(ArchitectureError, match="no Dense or Conv of their own"):
        Network(serial(Dense(1.0, 0.1), *branches, FanInSum(), Dense(1.0, 0.0)))
    Network(serial(Dense(1.0, 0.1), FanOut(2), parallel(serial(Activation("relu"),
                                                                 Dense(1.0, 0.0)),
                                                          Identity()), FanInSum()))


def erf_by_covariance(x, depth, w, b):
    """The erf network's NNGP and NTK by its closed forms written in the covariance c
    (DESIGN.md sections 1 and 6): defined at q = 0, where rho is not."""
    g = x @ x.T / x.shape[1]
    k = b + w * g
    t = k.copy()
    for _ in range(depth):
        q = np.diag(k)
        a = np.sqrt(np.outer(1 + 2 * q, 1 + 2 * q))
        f = 2 / np.pi * np.arcsin(2 * k / a)
        fd = 4 / (np.pi * np.sqrt(a * a - 4 * k * k))
        k, t = b + w * f, b + w * f + w * fd * t
    return k, t


def test_zero_input_is_the_constant_phi0(table_of, vectors):
    erf = table_of("erf")
    x = vectors.copy()
    x[0] = 0.0  # with bias_var = 0 its first pre-activation has variance 0
    net = Network(serial(Dense(1.5, 0.0), Activation(erf), Dense(1.5, 0.0), Activation(erf),
                         Dense(1.5, 0.0)))
    ek, et = erf_by_covariance(x, 2, 1.5, 0.0)
    with pytest.warns(LayerwiseWarning, match="variance 0"):
        fused = net.kernel(x, get=("nngp", "ntk"))
    for k, t in (fused, net.layerwise(x, get=("nngp", "ntk"))):
        assert np.all(np.isfinite(k)) and np.all(np.isfinite(t))
        np.testing.assert_allclose(k, ek, atol=1e-6 * np.abs(ek).max())
        np.testing.assert_allclose(t, et, atol=1e-6 * np.abs(et).max())
    assert erf.F(0.0, 2.0, 0.3) == 0.0  # phi(0) = 0
    np.testing.assert_allclose(erf.dF(0.0, 2.0, 0.3), 4 / (np.pi * math.sqrt(5.0)), rtol=1e-9)
    np.testing.assert_allclose(erf.dF(0.0, 0.0, 0.0), 4 / np.pi, rtol=1e-12)


def test_zero_bordered_images_are_the_limit_of_a_small_bias(vectors):
    x = np.zeros((3, 6, 6, 1))
    x[:, 1:5, 1:5, 0] = np.random.default_rng(7).standard_normal((3, 4, 4))

    def cnn(bias):
        return Network(serial(Conv(2.0, bias, filter_shape=(2, 2)), Activation("relu"),
                              Conv(2.0, 0.1, filter_shape=(2, 2)), Activation("relu"),
                              Flatten(), Dense(1.0, 0.0)))
    with pytest.warns(LayerwiseWarning):
        k, t = cnn(0.0).kernel(x, get=("nngp", "ntk"))
    k_lim, t_lim = cnn(1e-13).kernel(x, get=("nngp", "ntk"))
    np.testing.assert_allclose(k, k_lim, rtol=1e-6)
    np.testing.assert_allclose(t, t_lim, rtol=1e-6)


def test_layernorm_of_a_zero_input_is_an_error(vectors):
    x = vectors.copy()
    x[1] = 0.0
    net = Network(serial(Dense(1.0, 0.0), LayerNorm(), Activation("relu"), Dense(1.0, 0.0)))
    for run in (net.kernel, net.layerwise, net.diagonal):
        with pytest.raises(DataError, match="all zero"):
            run(x)


@pytest.mark.parametrize("shape,layer", [
    ((6,), serial(Dense(1.0, 0.1), Dense(1.0, 0.0))),
    ((5, 2), serial(Conv(1.0, 0.1, (2,)), Flatten(), Dense(1.0, 0.0)))])
def test_overflowing_variances_are_an_error_not_inf(shape, layer):
    x = np.full((3,) + shape, 1e160)  # <x, x> / d = 1e320 overflows float64
    net = Network(layer)
    with np.errstate(over="ignore"):
        for run in (net.kernel, net.layerwise, net.diagonal):
            with pytest.raises(NonFiniteKernel, match="NaN or infinite entries"):
                run(x)


@pytest.mark.parametrize("depth", [1, 5, 20])
def test_relu_ntk_at_correlation_one(depth):
    rng = np.random.default_rng(depth)
    x = rng.standard_normal((6, 9))
    c = rng.uniform(0.2, 3.0, (6, 1))
    net = Network(serial(Dense(2.0, 0.0), *[serial(Activation("relu"), Dense(2.0, 0.0))
                                            for _ in range(depth)]))
    # x' = c x: rho = 1 at every layer, F = sqrt(q q') / 2, Fdot = 1 / 2.
    q = 2.0 * np.sum(x * x, 1) / x.shape[1]
    kx = q * c[:, 0]
    tx = kx.copy()
    for _ in range(depth):
        tx = kx + 2.0 * 0.5 * tx  # K stays (w / 2) K = K for w = 2
    for k, t in (net.kernel(x, x * c, get=("nngp", "ntk")),
                 net.layerwise(x, x * c, get=("nngp", "ntk"))):
        np.testing.assert_allclose(np.diag(k), kx, rtol=TOL_RHO_ONE)
        np.testing.assert_allclose(np.diag(t), tx, rtol=TOL_RHO_ONE)


def test_cli_says_it_in_one_line(tmp_path):
    from click.testing import CliRunner

    from nngp_lut.cli.main import cli

    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((3, 4, 4, 1)))
    arch = ("serial(FanOut(2), parallel(Conv(1.0, 0.0, strides=(2, 2)), Conv(1.0, 0.0)), "
            "FanInConcat(), Flatten(), Dense(1.0, 0.0))")
    res = CliRunner().invoke(cli, ["kernel", "--arch", arch, "--x1", str(x), "--out",
                                   str(tmp_path / "k.npy")])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        "Error: FanInConcat() joins branches of different shapes (2x2 positions, 4x4 "
        "positions): give every branch the same spatial shape (the same strides, padding "
        "and pooling, or Flatten() in each)"]
    assert not (tmp_path / "k.npy").exists()
