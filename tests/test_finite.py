"""Trained finite networks (nngp_lut.finite) and ``nngp-lut compare`` / ``plot compare``.

Small on purpose: tiny synthetic data (a few dozen inputs of dimension 6), widths <= 256,
at most a few hundred steps; one architecture, so JAX compiles few functions.
"""

import csv
import math

import numpy as np
import pytest
from click.testing import CliRunner

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

from nngp_lut import finite, montecarlo  # noqa: E402
from nngp_lut.finite_network import finite_network, with_width, x64  # noqa: E402
from nngp_lut.gp import evaluate, regression_targets  # noqa: E402
from nngp_lut.kernel import Activation, Conv, Dense, Flatten, Network, serial  # noqa: E402

ARCH = "serial(Dense(2, 0.1), Activation('relu'), Dense(2, 0.1))"
NET = serial(Dense(2.0, 0.1), Activation("relu"), Dense(2.0, 0.1))
#: Agreement of two computations of the same float64 quantity (different summation order).
EXACT = 1e-10


def blobs(n, seed, classes=3, d=6):
    """Three Gaussian blobs: a classification problem a small network learns in a few
    dozen steps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = np.random.default_rng(99).standard_normal((classes, d)) * 1.5
    return centres[y] + rng.standard_normal((n, d)), y


@pytest.fixture(scope="module")
def data():
    return blobs(48, 0), blobs(24, 1), blobs(30, 2)


def test_training_decreases_the_loss(data):
    (x, y), _, _ = data
    net = finite.train(NET, 64, x, y, steps=200, learning_rate=1e-2, batch_size=16, seed=0)
    t, _ = regression_targets(y, y)
    before = float(np.mean((net.outputs(x, net.initial_params) - t) ** 2))
    after = net.score(x, y)["mse"]
    assert net.steps == 200 and not net.diverged
    assert after < 0.2 * before, (before, after)
    assert net.history[-1]["train_loss"] < 0.2 * net.history[0]["train_loss"]
    # the reported MSE is the GP's: mean over examples and outputs, in the shifted space
    assert after == pytest.approx(float(np.mean((net.outputs(x) - t) ** 2)), rel=EXACT)


def test_a_convolutional_network_trains_on_images(rng):
    x = rng.normal(size=(24, 6, 6, 1))
    y = rng.integers(0, 3, 24)
    cnn = serial(Conv(2.0, 0.1), Activation("relu"), Flatten(), Dense(2.0, 0.1))
    net = finite.train(cnn, 16, x, y, steps=60, learning_rate=1e-2, seed=0)
    t, _ = regression_targets(y, y)
    before = float(np.mean((net.outputs(x, net.initial_params) - t) ** 2))
    assert net.outputs(x).shape == (24, 3)
    assert net.score(x, y)["mse"] < 0.5 * before


def test_seeds_reproduce_exactly(data):
    (x, y), (xv, yv), _ = data
    kw = dict(x_val=xv, y_val=yv, steps=60, learning_rate=1e-2, batch_size=16, eval_every=6)
    a = finite.train(NET, 32, x, y, seed=3, **kw)
    b = finite.train(NET, 32, x, y, seed=3, **kw)
    c = finite.train(NET, 32, x, y, seed=4, **kw)
    leaves = jax.tree_util.tree_leaves
    assert all(np.array_equal(p, q) for p, q in zip(leaves(a.params), leaves(b.params)))
    assert a.history == b.history and a.best_step == b.best_step
    assert not all(np.array_equal(p, q) for p, q in zip(leaves(a.params), leaves(c.params)))


def _empirical(layer, params, x, unit):
    """NNGP f f^T / outputs and the NTK of output ``unit`` (sum over all parameters of
    grad f_unit(x) . grad f_unit(x')) from a full Jacobian: the definition, computed
    independently of montecarlo's vjp/jvp."""
    net = finite_network(layer)
    with x64():
        p = jax.tree_util.tree_map(jax.numpy.asarray, params)
        f = net.apply(p, jax.numpy.asarray(x))
        xj = jax.numpy.asarray(x)
        jac = jax.jacobian(lambda q: net.apply(q, xj)[:, unit])(p)
        flat = np.concatenate([np.asarray(j).reshape(x.shape[0], -1)
                               for j in jax.tree_util.tree_leaves(jac)], axis=1)
        f = np.asarray(f)
    return f @ f.T / f.shape[1], flat @ flat.T


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_initial_network_is_the_samplers(parameterization, data):
    """train(seed=s) starts from the sampler's draw 0 of seed s: the initial empirical NNGP
    and NTK equal montecarlo.empirical_kernels' (the readout declares its 3 units, so both
    draw the same shapes)."""
    (x, y), _, _ = data
    x = x[:10]
    layer = serial(Dense(2.0, 0.1, parameterization), Activation("relu"),
                   Dense(2.0, 0.1, parameterization, width=3))
    net = finite.train(layer, 128, x, y[:10], steps=0, seed=5)
    nngp, ntk = _empirical(net.layer, net.initial_params, x, unit=0)
    ref = montecarlo.empirical_kernels(layer, x, width=128, draws=1, seed=5, ntk_units=1)
    np.testing.assert_allclose(nngp, ref["nngp"], rtol=EXACT, atol=EXACT)
    np.testing.assert_allclose(ntk, ref["ntk"], rtol=EXACT, atol=EXACT)
    if parameterization == "ntk":  # and it is a draw of the infinite-width NTK: O(1/sqrt(n))
        exact = Network(with_width(layer, 128)).kernel(x, get="ntk")
        assert np.linalg.norm(ntk - exact) / np.linalg.norm(exact) < 0.3


def test_readout_gets_one_unit_per_class(data):
    (x, y), _, _ = data
    net = finite.train(NET, 16, x, y, steps=0)
    assert net.outputs(x).shape == (len(x), 3)
    assert net.layer.children[-1].width == 3 and net.layer.children[0].width == 16


def test_early_stopping_keeps_the_best_validation_step(data):
    (x, y), (xv, yv), _ = data
    net = finite.train(NET, 32, x, y, x_val=xv, y_val=yv, steps=300, learning_rate=5e-2,
                       batch_size=16, eval_every=3, patience=2, monitor="mse", seed=0)
    val = [h["val_mse"] for h in net.history]
    best = int(np.argmin(val))
    assert net.best_step == net.history[best]["step"]
    assert net.score(xv, yv)["mse"] == pytest.approx(val[best], rel=EXACT)
    if net.stopped_early:  # stopped after `patience` evaluations without improvement
        assert len(val) - 1 - best == 2


def test_centred_network_starts_at_zero(data):
    (x, y), _, _ = data
    net = finite.train(NET, 16, x, y, steps=0, centre=True)
    assert np.array_equal(net.outputs(x), np.zeros((len(x), 3)))


def test_ntk_gp_mean_at_step_is_gradient_descent_on_the_linear_model(rng):
    """mu_k of Lee et al. 2019 eq. 16 (discrete time) against k explicit steps of the
    linearised model's gradient descent, and mu_inf against a dense solve."""
    a = rng.standard_normal((12, 12))
    theta = a @ a.T + 0.5 * np.eye(12)
    theta_star = rng.standard_normal((5, 12))
    y = rng.standard_normal((12, 2))
    c = 1.2 / np.linalg.eigvalsh(theta)[-1]
    f_train, f_test = np.zeros((12, 2)), np.zeros((5, 2))
    for _ in range(37):  # f <- f - c Theta (f_D - Y): the linear model's GD from 0
        residual = f_train - y
        f_train, f_test = f_train - c * theta @ residual, f_test - c * theta_star @ residual
    np.testing.assert_allclose(finite.ntk_gp_mean_at_step(theta, theta_star, y, c, 37),
                               f_test, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(finite.ntk_gp_mean_at_step(theta, theta_star, y, c, math.inf),
                               theta_star @ np.linalg.solve(theta, y), rtol=1e-9)


def test_wider_networks_follow_the_ntk_gp_mean(data):
    """Lee et al. 2019 in miniature: the distance to mu_k shrinks from width 16 to 256."""
    (x, y), _, (xt, _) = data
    rows, summary = finite.linearization(NET, x[:24], y[:24], xt[:10], widths=[16, 256],
                                         seeds=1, steps=40)
    assert rows[1]["distance"] < 0.6 * rows[0]["distance"], rows
    assert summary["slope"] < 0


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory, data):
    (x, y), (xv, yv), (xt, yt) = data
    path = tmp_path_factory.mktemp("compare") / "tiny.npz"
    np.savez(path, x_train=x, y_train=y, x_val=xv, y_val=yv, x_test=xt, y_test=yt)
    return path


def test_compare_writes_its_csv_and_the_figure(tiny_npz, tmp_path, data):
    pytest.importorskip("matplotlib")
    from nngp_lut.cli.main import cli

    out = tmp_path / "rows.csv"
    res = CliRunner().invoke(cli, ["compare", "--data", str(tiny_npz), "--arch", ARCH,
                                   "--widths", "16,64", "--seeds", "2", "--steps", "30",
                                   "--batch-size", "16", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == finite.COMPARE_COLUMNS
    nets = [r for r in rows if r["model"] == "network"]
    assert sorted((int(r["width"]), int(r["seed"])) for r in nets) == [
        (16, 0), (16, 1), (64, 0), (64, 1)]
    # the GP rows are nngp_lut.gp.evaluate's on the same split
    (x, y), _, (xt, yt) = data
    for kind in ("nngp", "ntk"):
        row = next(r for r in rows if r["model"] == kind)
        ref = evaluate(x, y, xt, yt, network=NET, kernel=kind)
        assert float(row["test_accuracy"]) == ref.accuracy
        assert float(row["test_mse"]) == pytest.approx(ref.mse, rel=EXACT)
    assert "NNGP" in res.output and "NTK-GP" in res.output
    png = tmp_path / "fig.png"
    res = CliRunner().invoke(cli, ["plot", "compare", "--results", str(out), "--out",
                                   str(png), "--reference", "0.9"])
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 0
    with open(png.with_suffix(".csv"), newline="") as f:
        fig_rows = list(csv.DictReader(f))
    assert [float(r["width"]) for r in fig_rows] == [16.0, 64.0]
    # refuses to overwrite without --force, and never its own input
    res = CliRunner().invoke(cli, ["plot", "compare", "--results", str(out), "--out",
                                   str(png)])
    assert res.exit_code == 1 and "exists" in res.output
    res = CliRunner().invoke(cli, ["plot", "compare", "--results", str(out), "--out",
                                   str(tmp_path / "rows.png"), "--force"])
    assert res.exit_code == 1 and "its input" in res.output


def test_plot_compare_rejects_other_csv(tmp_path):
    pytest.importorskip("matplotlib")
    from nngp_lut.cli.main import cli

    other = tmp_path / "other.csv"
    other.write_text("width,nngp_error\n64,0.1\n")
    res = CliRunner().invoke(cli, ["plot", "compare", "--results", str(other), "--out",
                                   str(tmp_path / "f.png")])
    assert res.exit_code == 1 and "not a CSV of nngp-lut compare" in res.output
