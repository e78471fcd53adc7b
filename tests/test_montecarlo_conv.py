"""Finite convolutional and graph networks (JAX) against the infinite-width kernels.

Two kinds of check:

* exact: each finite spatial layer against a plain numpy loop of its definition (a
  cross-correlation with zero, wrapped or no padding; window means; z_i = sum_j A_ij x_j),
  and the NTK of a network with spatial outputs against J J^T from the full Jacobian;
* statistical: the empirical NNGP and NTK of a small CNN with pooling, a residual CNN and a
  graph network, mean of DRAWS networks of WIDTH channels, against ``Network.kernel``.  The
  error of one network falls like C / sqrt(width) with C = 1.5..3 for these nets (measured
  at widths 64..1024 against neural-tangents, bench/bench_conv.py), so the mean of 8
  networks of 256 channels is within ~C / sqrt(256 * 8) = 0.03..0.07; the bound 0.15 leaves
  a factor of two for the spread of one sample, and a wrong rule (a missing 1/|window|, a
  transposed adjacency, a shifted padding) is off by far more.
"""

import numpy as np
import pytest

from nngp_lut import finite_network as fn
from nngp_lut import montecarlo as mc
from nngp_lut.errors import DataError
from nngp_lut.kernel import Network
from nngp_lut.kernel.layers import (Activation, Aggregate, ArchitectureError, AvgPool, Conv,
                                    Dense, FanInConcat, FanInSum, FanOut, Flatten,
                                    GlobalAvgPool, Identity, LayerNorm, parallel, serial)

WIDTH = 256
DRAWS = 8
#: Largest relative error of the mean of DRAWS networks of WIDTH channels (module docstring).
ERROR_BOUND = 0.15


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).standard_normal((4, 5, 5, 2))


# --- exact: the finite layers against numpy loops ---------------------------------------------
def naive_correlate(x, w, strides, padding):
    """sum_{D, c} x[s h + D - pad, c] w[D, c, o] with zero / wrapped padding (numpy loops)."""
    spatial, filt = x.shape[1:-1], w.shape[:-2]
    if padding == "VALID":
        pads = [(0, 0)] * len(spatial)
        out = [(n - f) // s + 1 for n, f, s in zip(spatial, filt, strides)]
    else:
        out = [-(-n // s) for n, s in zip(spatial, strides)]
        total = [max((o - 1) * s + f - n, 0) for o, s, f, n in zip(out, strides, filt, spatial)]
        pads = [(t // 2, t - t // 2) for t in total]
    mode = "wrap" if padding == "CIRCULAR" else "constant"
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], mode=mode)
    z = np.zeros((x.shape[0], *out, w.shape[-1]))
    for pos in np.ndindex(*out):
        for off in np.ndindex(*filt):
            src = tuple(p * s + d for p, s, d in zip(pos, strides, off))
            z[(slice(None), *pos)] += xp[(slice(None), *src)] @ w[off]
    return z


@pytest.mark.parametrize("filter_shape, strides, padding, shape", [
    ((3, 3), (1, 1), "SAME", (5, 5, 2)),
    ((2, 3), (2, 1), "VALID", (5, 6, 2)),
    ((3, 3), (2, 2), "CIRCULAR", (5, 4, 2)),
    ((3,), (2,), "SAME", (7, 3)),
    ((4,), (1,), "CIRCULAR", (6, 2)),
])
def test_conv_is_the_scaled_cross_correlation(filter_shape, strides, padding, shape):
    import jax

    layer = Conv(1.7, 0.3, filter_shape, strides, padding)
    x = np.random.default_rng(0).standard_normal((3, *shape))
    finite = fn.finite_network(layer, 4)
    with fn.x64():
        params, out_shape = finite.init(jax.random.key(1), shape)
        z = np.asarray(finite.apply(params, x))
    w, b = np.asarray(params["W"]), np.asarray(params["b"])
    fan_in = np.prod(filter_shape) * shape[-1]
    expected = np.sqrt(1.7 / fan_in) * naive_correlate(x, w, strides, padding) + np.sqrt(0.3) * b
    assert z.shape == (3, *out_shape)
    np.testing.assert_allclose(z, expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("padding", ["VALID", "SAME", "CIRCULAR"])
def test_avgpool_is_the_window_mean(padding):
    layer = AvgPool((2, 3), (2, 2), padding)
    x = np.random.default_rng(1).standard_normal((2, 5, 6, 3))
    identity = np.broadcast_to(np.eye(3), (2, 3, 3, 3))  # at every offset of the window
    with fn.x64():
        z = np.asarray(fn.finite_network(layer).apply({}, x))
    # a window sum is a cross-correlation with the channels' identity at every offset
    expected = naive_correlate(x, identity, (2, 2), padding) / 6
    np.testing.assert_allclose(z, expected, rtol=1e-12, atol=1e-14)


def test_aggregate_global_pool_flatten_and_layernorm():
    rng = np.random.default_rng(2)
    adjacency = rng.random((4, 4)) * (rng.random((4, 4)) < 0.5)  # not symmetric
    x = rng.standard_normal((3, 4, 5))
    img = rng.standard_normal((2, 3, 4, 5))
    def apply(layer, x):
        return np.asarray(fn.finite_network(layer).apply({}, x))

    with fn.x64():
        agg = apply(Aggregate(adjacency), x)
        gap = apply(GlobalAvgPool(), img)
        flat = apply(Flatten(), img)
        ln_all = apply(LayerNorm(over="all"), img)
        ln_space = apply(LayerNorm(over="space"), img)
    np.testing.assert_allclose(agg, np.stack([adjacency @ xi for xi in x]), rtol=1e-13)
    np.testing.assert_allclose(gap, img.mean(axis=(1, 2)), rtol=1e-13)
    np.testing.assert_array_equal(flat, img.reshape(2, -1))
    for out, axes in ((ln_all, (1, 2, 3)), (ln_space, (1, 2))):
        np.testing.assert_allclose(out.mean(axis=axes), 0.0, atol=1e-13)
        np.testing.assert_allclose((out ** 2).mean(axis=axes), 1.0, rtol=1e-12)


def test_ntk_of_spatial_outputs_is_the_mean_over_positions_of_jjt(images):
    """A network ending in a Conv: the NTK of unit u is mean_p <grad f_pu(x), grad f_pu(x')>
    (the Flatten convention), against jax.jacrev's full Jacobian."""
    import jax
    import jax.numpy as jnp

    net = serial(Conv(1.5, 0.1), Activation("tanh"), Conv(1.5, 0.1, (2, 2), padding="VALID"))
    x = images[:3, :3, :3]  # 3 x 3 images: 2 x 2 output positions
    emp = mc.empirical_kernels(net, x, width=3, draws=1, seed=2, ntk_units=2)
    finite = fn.finite_network(net, 3)
    with fn.x64():
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(2), 3), 0)
        params, shape = finite.init(key, x.shape[1:])
        f = np.asarray(finite.apply(params, jnp.asarray(x)))
        ntk = 0.0
        for unit in range(2):
            jac = jax.jacrev(lambda p: finite.apply(p, jnp.asarray(x))[..., unit])(params)
            flat = np.concatenate([np.asarray(j).reshape(len(x), 4, -1)
                                   for j in jax.tree_util.tree_leaves(jac)], axis=2)
            ntk = ntk + np.einsum("apk,bpk->ab", flat, flat) / 4 / 2
    assert shape == (2, 2, 3)
    np.testing.assert_allclose(emp["nngp"], f.reshape(3, -1) @ f.reshape(3, -1).T / 12,
                               rtol=1e-12)
    np.testing.assert_allclose(emp["ntk"], ntk, rtol=1e-10)


# --- statistical: empirical kernels against Network.kernel -------------------------------------
def graph_adjacency():
    rng = np.random.default_rng(3)
    return (rng.random((5, 5)) < 0.4) * 1.0 + 0.5 * np.eye(5)


NETWORKS = {
    "cnn+pools": (serial(Conv(2.0, 0.1), Activation("relu"), AvgPool((2, 2), padding="SAME"),
                         Conv(2.0, 0.1, padding="CIRCULAR"), Activation("erf"),
                         GlobalAvgPool(), Dense(2.0, 0.1)), "images"),
    "residual": (serial(Conv(1.0, 0.0), FanOut(2),
                        parallel(serial(Activation("relu"), Conv(1.0, 0.0)), Identity()),
                        FanInSum(), LayerNorm(over="all"), Activation("relu"), Flatten(),
                        Dense(1.0, 0.1)), "images"),
    "graph": (serial(Dense(2.0, 0.1), Activation("relu"), Aggregate(graph_adjacency()),
                     Dense(2.0, 0.1), Activation("relu"), GlobalAvgPool(), Dense(2.0, 0.1)),
              "graph"),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_empirical_kernels_approach_the_infinite_ones(name, images):
    net, data = NETWORKS[name]
    x = images if data == "images" else np.random.default_rng(4).standard_normal((4, 5, 3))
    emp = mc.empirical_kernels(net, x, width=WIDTH, draws=DRAWS, seed=0)
    exact = dict(zip(("nngp", "ntk"), Network(net).kernel(x, get=("nngp", "ntk"))))
    for kind in ("nngp", "ntk"):
        assert mc.relative_error(emp[kind], exact[kind]) < ERROR_BOUND, (kind, emp, exact)


# --- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("net, shape, message", [
    (serial(Conv(1.0), Flatten(), Dense(1.0)), (6, 2), r"needs \(N, H, W, C\) inputs"),
    (serial(Conv(1.0, filter_shape=(3,)), Flatten(), Dense(1.0)), (4, 4, 2),
     r"needs \(N, L, C\) inputs"),
    (serial(Conv(1.0, padding="VALID", filter_shape=(5, 5)), Flatten(), Dense(1.0)),
     (4, 4, 2), "larger than"),
    (serial(AvgPool((2, 2)), Flatten(), Dense(1.0)), (8,), r"needs \(N, H, W, C\) inputs"),
    (serial(Dense(1.0), GlobalAvgPool(), Dense(1.0)), (8,), "needs inputs with spatial"),
    (serial(Aggregate(np.eye(3)), GlobalAvgPool(), Dense(1.0)), (4, 2), r"\(N, 3, C\)"),
    (serial(FanOut(2), parallel(Conv(1.0, padding="VALID"), Conv(1.0)), FanInConcat(),
            Flatten(), Dense(1.0)), (5, 5, 2), "equal spatial shapes"),
    (serial(Conv(1.0), FanOut(2), Flatten()), (5, 5, 2), "branches"),
])
def test_bad_shapes_are_one_line_errors(net, shape, message):
    x = np.ones((2, *shape))
    with pytest.raises(ArchitectureError, match=message) as info:
        mc.empirical_kernels(net, x, width=2, draws=1, seed=0)
    assert "\n" not in str(info.value)


def test_bad_inputs(images):
    net = serial(Conv(1.0), GlobalAvgPool(), Dense(1.0))
    with pytest.raises(ValueError, match="shape"):
        mc.empirical_kernels(net, images, images[:, :4], width=2, draws=1, seed=0)
    bad = images.copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        mc.empirical_kernels(net, bad, width=2, draws=1, seed=0)
