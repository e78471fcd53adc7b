"""Softmax attention at the standard 1/sqrt(n) scaling (issue 23, item 4), multi-head.

Oracles that share nothing with the layer's rule (the decomposition (3) of
nngp_lut/kernel/attention.py, randomised QMC, the Numba integrand):

* logits sampled from their Gaussian law directly: the whole 2T^2-dimensional vector of the
  two inputs' logit matrices, Cov(G_ij(x), G_kl(y)) = logit_var K(x_i, y_k) K(x_j, y_l),
  drawn by numpy, 10^6 samples, the tolerance from their standard error;
* closed-form limits: logit_var = 0 is uniform attention (the untied 1/n kernel), one
  position is the identity mixing;
* the mean kernel of finite JAX networks with several heads (a transformer block);
* symmetry, positive semidefiniteness, one-line errors, the ``mc`` report.
"""

import math
import warnings

import numpy as np
import pytest

from nngp_lut.errors import ArchitectureError, ToleranceWarning
from nngp_lut.kernel import (Activation, Dense, FanInSum, FanOut, GlobalAvgPool, Identity,
                             LastStep, LayerNorm, Network, SelfAttention, parallel, serial)

#: Standard errors a Monte Carlo estimate may be off (with the QMC error added on top).
SIGMAS = 4.5
#: The same rule twice (kernel() tiles layerwise(); exact symmetry by the canonical order).
TOL_SAME = 1e-12


def sqrt_attention(w=1.5, b=0.1, logit_var=2.0, **kwargs):
    return SelfAttention(w, b, logit_var=logit_var, tied=False, scaling="1/sqrt(n)", **kwargs)


def _sequences(n, steps, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, steps, channels)) * rng.uniform(0.6, 1.4, (n, 1, 1))


def _brute_force(x, y, w, b, logit_var, samples, seed=1):
    """b + w E[A(x) K(x, y) A(y)^T] with the logit matrices G(x), G(y) of both inputs drawn
    jointly from their Gaussian law; returns the (T, T) map and its standard error."""
    t, c = x.shape[0], x.shape[1]
    z = np.concatenate([x, y])                        # the 2T positions of both inputs
    m = z @ z.T / c                                   # K over them
    own = [(q, k) for side in (0, 1) for q in range(side * t, side * t + t)
           for k in range(side * t, side * t + t)]    # (query, key) of G(x), then G(y)
    cov = logit_var * np.array([[m[q1, q2] * m[k1, k2] for q2, k2 in own] for q1, k1 in own])
    g = np.random.default_rng(seed).multivariate_normal(np.zeros(len(own)), cov, samples,
                                                         method="eigh")
    g = g.reshape(samples, 2, t, t)
    a = np.exp(g - g.max(axis=-1, keepdims=True))
    a /= a.sum(axis=-1, keepdims=True)
    values = b + w * np.einsum("sij,jl,skl->sik", a[:, 0], m[:t, t:], a[:, 1])
    return values.mean(0), values.std(0) / math.sqrt(samples)


@pytest.mark.parametrize("steps, logit_var", [(3, 2.0), (4, 0.5)])
def test_the_kernel_matches_logits_drawn_from_their_law(steps, logit_var):
    x = _sequences(2, steps, seed=steps)
    w, b = 1.3, 0.2
    layer = sqrt_attention(w, b, logit_var, tol=1e-3, max_points=2 ** 16)
    maps = Network(layer).maps(x[:1], x[1:])[0, 0]
    est = layer.mixing(x[0] @ x[0].T / 2, x[1] @ x[1].T / 2, x[0] @ x[1].T / 2)
    assert np.all(w * est.error <= 1e-3)
    ref, se = _brute_force(x[0], x[1], w, b, logit_var, 10 ** 6)
    assert np.all(np.abs(maps - ref) <= SIGMAS * se + w * est.error), (maps - ref) / se
    # an input with itself: the diagonal record (its own map)
    own = Network(layer).maps(x[:1])[0, 0]
    ref, se = _brute_force(x[0], x[0], w, b, logit_var, 10 ** 6, seed=2)
    assert np.all(np.abs(own - ref) <= SIGMAS * se + 1e-3), (own - ref) / se


def test_logit_variance_zero_is_uniform_attention():
    """logit_var = 0: every logit is 0, attention uniform, the untied 1/n kernel exactly."""
    x = _sequences(4, 3)
    rest = (GlobalAvgPool(), Dense(1.0, 0.0))
    sqrt = Network(serial(Dense(1.0, 0.1), sqrt_attention(logit_var=0.0), *rest))
    untied = Network(serial(Dense(1.0, 0.1), SelfAttention(1.5, 0.1, tied=False), *rest))
    np.testing.assert_allclose(sqrt.kernel(x), untied.kernel(x), rtol=1e-12, atol=1e-14)


def test_one_position_is_the_identity_mixing():
    """T = 1: softmax of one logit is 1, so K' = b + w K whatever the logits' law."""
    x, y = _sequences(3, 1), _sequences(2, 1, seed=1)
    net = Network(serial(sqrt_attention(1.5, 0.1, 3.0), GlobalAvgPool()))
    gram = np.einsum("itc,jsc->ij", x, y) / 2
    np.testing.assert_allclose(net.kernel(x, y), 0.1 + 1.5 * gram, rtol=1e-12)


def test_symmetric_positive_semidefinite_and_tiling_invariant():
    x = _sequences(6, 3)
    layer = sqrt_attention(tol=1e-3)
    net = Network(serial(Dense(1.0, 0.1), layer, GlobalAvgPool(), Dense(1.0, 0.0)))
    whole = net.layerwise(x)
    np.testing.assert_allclose(whole, whole.T, rtol=TOL_SAME)
    # every entry within tol of the truth: the Gram is PSD up to n * tol
    assert np.linalg.eigvalsh(whole).min() >= -len(x) * 1e-3
    tiled = net.kernel(x, tile_rows=2)
    np.testing.assert_allclose(tiled, whole, rtol=TOL_SAME, atol=TOL_SAME)
    np.testing.assert_allclose(net.diagonal(x), np.diag(whole), rtol=TOL_SAME)
    y = _sequences(2, 3, seed=5)
    np.testing.assert_allclose(net.kernel(y, x), net.kernel(x, y).T, rtol=TOL_SAME)


def test_tolerance_drives_the_work_and_its_miss_is_said():
    kx = np.array([[1.0, 0.3], [0.3, 0.8]])
    layer = sqrt_attention(tol=1e-2)
    loose = layer.mixing(kx, kx, kx)
    tight = sqrt_attention(tol=1e-4, max_points=2 ** 16).mixing(kx, kx, kx)
    assert tight.n_points > loose.n_points
    assert np.all(tight.error <= 1e-4 / 1.5) and np.all(loose.error <= 1e-2 / 1.5)
    net = Network(serial(sqrt_attention(tol=1e-7, max_points=2 ** 8), GlobalAvgPool()))
    with pytest.warns(ToleranceWarning, match="did not reach tol"):
        net.kernel(_sequences(2, 3))


def test_the_mean_over_finite_transformers_and_heads():
    """A transformer block with 1/sqrt(n) attention: the mean kernel of finite networks of
    8 heads within 3 standard errors (plus an allowance for the bias O(1/heads) of the
    LayerNorm after the attention, and O(1/width)) of the infinite-width kernel."""
    pytest.importorskip("jax")
    from nngp_lut import montecarlo as mc

    block = serial(Dense(1.0, 0.1), FanOut(2),
                   parallel(Identity(), sqrt_attention(1.0, 0.1, 1.0, heads=8, tol=1e-3)),
                   FanInSum(), LayerNorm(), FanOut(2),
                   parallel(Identity(), serial(Dense(2.0, 0.1), Activation("relu"),
                                               Dense(1.0, 0.1))),
                   FanInSum(), LayerNorm(), GlobalAvgPool(), Dense(1.0, 0.0))
    x = _sequences(3, 3)
    rows, slopes = mc.mean_convergence(block, x, 128, 16, 0)
    assert [r["draws"] for r in rows] == [4, 8, 16]
    assert all(r["draws_heads"] == 8 * r["draws"] for r in rows)
    last = rows[-1]
    assert last["nngp_sigmas"] <= 3.0 + 0.02 / last["nngp_se"], last


def test_multi_head_twin_at_1_over_n_has_the_same_kernel():
    """Heads do not change the 1/n kernel; the finite network with 4 heads (W_O over the
    concatenated heads) agrees with it as the one-head network does."""
    pytest.importorskip("jax")
    from nngp_lut import montecarlo as mc

    layer = serial(Dense(1.0, 0.1), SelfAttention(1.0, 0.1, heads=4), GlobalAvgPool(),
                   Dense(1.0, 0.0))
    x = _sequences(3, 3)
    k = Network(layer).kernel(x)
    draws = np.stack([d["nngp"] for d in mc._per_draw(layer, x, None, 256, 16, 0, ("nngp",),
                                                      1, None)])
    se = draws.std(0, ddof=1) / 4
    assert np.all(np.abs(draws.mean(0) - k) <= 5 * se + 5e-3 * np.abs(k).max())


def test_width_slope_is_refused_and_mc_reports_the_mean():
    pytest.importorskip("jax")
    from click.testing import CliRunner

    from nngp_lut import montecarlo as mc
    from nngp_lut.cli.main import cli

    layer = serial(Dense(1.0, 0.1), sqrt_attention(heads=2, tol=1e-2), GlobalAvgPool(),
                   Dense(1.0, 0.0))
    with pytest.raises(ArchitectureError, match="mean_convergence") as info:
        mc.convergence(layer, _sequences(3, 2), [8, 16], 2, 0)
    assert "\n" not in str(info.value)
    assert mc.heads_of(layer) == 2 and mc.heads_of(Dense(1.0)) == 1
    data = np.random.default_rng(0)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/seq.npz"
        np.savez(path, x_train=data.standard_normal((4, 6)), y_train=np.arange(4) % 2,
                 x_test=data.standard_normal((2, 6)), y_test=np.arange(2))
        result = CliRunner().invoke(cli, ["mc", "--arch", repr(layer), "--shape", "3,2",
                                          "--widths", "8,16", "--draws", "8", "--n-inputs",
                                          "3", "--data", path, "--quiet"],
                                    catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "does not converge" in out and "width 16" in out
    assert "draws x heads" in out and "log width" not in out
    assert [line.split()[:2] for line in out.splitlines()[2:4]] == [["4", "8"], ["8", "16"]]


@pytest.mark.parametrize("kwargs, message", [
    (dict(scaling="1/sqrt(n)"), "needs tied=False"),
    (dict(scaling="sqrt"), "scaling must be one of"),
    (dict(heads=0), "heads must be a positive integer"),
    (dict(heads=2.0), "heads must be a positive integer"),
    (dict(tol=0.0), "tol > 0"),
    (dict(max_points=1000), "power of 2"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(ArchitectureError, match=message) as info:
        SelfAttention(**kwargs)
    assert "\n" not in str(info.value)


def test_ntk_is_refused_in_one_line():
    net = Network(serial(sqrt_attention(), GlobalAvgPool()))
    assert net.kinds == ("nngp",) and not net.fused and not net.self_averaging
    for call in (lambda: net.kernel(_sequences(2, 2), get="ntk"),
                 lambda: net.layerwise(_sequences(2, 2), get=("nngp", "ntk"))):
        with pytest.raises(ArchitectureError, match="NNGP only, not the NTK") as info:
            call()
        assert "\n" not in str(info.value)
    one_over_n = Network(serial(SelfAttention(heads=3), GlobalAvgPool()))
    assert one_over_n.kinds == ("nngp", "ntk") and one_over_n.fused


def test_arch_text_round_trip_and_repr():
    from nngp_lut.kernel.arch import parse_arch

    net = serial(Dense(1.0, 0.1), sqrt_attention(heads=4, tol=1e-2), LastStep(),
                 Dense(1.0, 0.0))
    assert parse_arch(repr(net)) == net
    assert repr(SelfAttention(1.2, tied=False)) == "SelfAttention(1.2, 0.0, tied=False)"


def test_runs_layer_by_layer_without_a_warning():
    """No engine op computes it: the network goes layer by layer, by design, silently."""
    net = Network(serial(sqrt_attention(tol=1e-2), GlobalAvgPool()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.kernel(_sequences(2, 2))


def test_the_pairs_chunks_do_not_change_the_values(monkeypatch):
    from nngp_lut.kernel import attention

    x = _sequences(4, 3)
    net = Network(serial(sqrt_attention(tol=1e-2), GlobalAvgPool()))
    whole = net.kernel(x)
    monkeypatch.setattr(attention, "EXPECTATION_CHUNK_BYTES", 1)  # one pair per chunk
    assert np.array_equal(net.kernel(x), whole)
