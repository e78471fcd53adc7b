"""GRU and LSTM kernels (issue 23, item 3) against oracles that share no rule with them.

* One step (T = 1): h_1 is a product of independent bivariate expectations, here by
  tensor Gauss-Hermite quadrature.
* No recurrent weights (weight_var -> 0): every pre-activation is a fixed Gaussian of the
  inputs, so the whole kernel map is one Gaussian expectation of the cell's update written
  out here in numpy, by nngp_lut.gaussian_expectation (tested on its own).
* With recurrence, finite networks of the twins: tests/test_registry.py ("gru", "lstm").
"""

import warnings

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import expit

from nngp_lut import gaussian_expectation
from nngp_lut.errors import ArchitectureError, ToleranceWarning
from nngp_lut.kernel import GRU, LSTM, Dense, GlobalAvgPool, LastStep, Network, serial
from nngp_lut.kernel.arch import parse_arch

#: The layers' tolerance in these tests, and the oracles' (ten times finer), with a budget
#: of particles that reaches them.
TOL = 2e-3
ORACLE_TOL = 2e-4
POINTS = 2 ** 14


def _sequences(n, steps, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, steps, channels)) * rng.uniform(0.7, 1.3, (n, 1, 1))


def _factor(cov):
    """L with L L^T = cov (2, 2), singular covariances (x = y) included."""
    a, c, b = cov[0, 0], cov[0, 1], cov[1, 1]
    return np.array([[np.sqrt(a), 0.0], [c / np.sqrt(a), np.sqrt(max(b - c * c / a, 0.0))]])


def _bivariate(f, g, cov, nodes=60):
    """E[f(u) g(v)], (u, v) ~ N(0, cov), by tensor Gauss-Hermite quadrature."""
    z, w = hermegauss(nodes)
    w = w / w.sum()
    L = _factor(cov)
    u = L[0, 0] * z[:, None]
    v = L[1, 0] * z[:, None] + L[1, 1] * z[None, :]
    return float(np.einsum("i,j,ij->", w, w, f(u) * g(v)))


def _input_cov(x, y, input_var, bias_var):
    k = np.array([[x @ x, x @ y], [x @ y, y @ y]]) / x.size
    return input_var * k + bias_var


@pytest.mark.parametrize("cls", [GRU, LSTM])
def test_one_step_is_a_product_of_bivariate_expectations(cls):
    x = _sequences(3, 1)
    u, b = 1.3, 0.2
    layer = cls("erf", 1.0, u, b, tol=ORACLE_TOL, max_points=POINTS)
    got = Network(serial(layer, LastStep())).layerwise(x)
    from scipy.special import erf
    for i in range(3):
        for j in range(3):
            cov = _input_cov(x[i, 0], x[j, 0], u, b)
            gate = _bivariate(expit, expit, cov)  # the update (GRU) or output (LSTM) gate
            if cls is GRU:  # h_1 = z phi(a_h)
                want = gate * _bivariate(erf, erf, cov)
            else:  # h_1 = o phi(i phi(g)): (i, i') and (g, g') independent pairs
                z, w = hermegauss(24)
                w = w / w.sum()
                L = _factor(cov)
                pair = np.einsum("ab,b...->a...", L, np.stack(np.meshgrid(z, z, indexing="ij")))
                ii, gg = expit(pair), erf(pair)  # (2, 24, 24) each: the two inputs' values
                cell1 = erf(ii[0][:, :, None, None] * gg[0][None, None, :, :])
                cell2 = erf(ii[1][:, :, None, None] * gg[1][None, None, :, :])
                ww = np.einsum("a,b,c,d->abcd", w, w, w, w)
                want = gate * float((ww * cell1 * cell2).sum())
            assert abs(got[i, j] - want) <= TOL, (i, j, got[i, j], want)


def _cell_maps(cls, z, lengths, gates):
    """The cell written out on a batch of draws z (b, n, gates * (T1 + T2)) of the
    pre-activations of two inputs of T1 and T2 steps (slot-major: x's steps, then y's; gate g
    of slot s at s * gates + g): the (T1, T2) map h_t(x) h_s(y) of each draw."""
    sig, phi = expit, np.tanh
    hs = []
    for side, steps in enumerate(lengths):
        first = lengths[0] if side else 0
        a = z[..., first * gates:(first + steps) * gates].reshape(z.shape[:2] + (steps, gates))
        h = np.zeros(z.shape[:2])
        c = np.zeros(z.shape[:2])
        out = []
        for t in range(steps):
            g = a[:, :, t]
            if cls is GRU:
                update = sig(g[..., 0])
                h = (1 - update) * h + update * phi(g[..., 2])  # no W: the reset is idle
            else:
                c = sig(g[..., 0]) * c + sig(g[..., 1]) * phi(g[..., 3])
                h = sig(g[..., 2]) * phi(c)
            out.append(h)
        hs.append(np.stack(out, axis=-1))
    return hs[0][..., :, None] * hs[1][..., None, :]


def _without_recurrence(cls, x, y, u, b):
    """E[h_t(x) h_s(y)] of a cell without recurrent weights for sequences x (T1, C) and
    y (T2, C): one Gaussian expectation of the cell written out above."""
    gates = 3 if cls is GRU else 4
    flat = np.concatenate([x, y])  # slot s: x's steps, then y's
    kin = u * flat @ flat.T / x.shape[-1] + b
    cov = np.kron(kin, np.eye(gates))  # gates independent, each with the inputs' covariance
    return gaussian_expectation(lambda z: _cell_maps(cls, z, (len(x), len(y)), gates), cov,
                                tol=ORACLE_TOL / 4).value


@pytest.mark.parametrize("cls", [GRU, LSTM])
def test_without_recurrent_weights_it_is_one_gaussian_expectation(cls):
    """Sequences of one length, and of lengths 3 and 2 (the shorter padded with NaN)."""
    x = _sequences(2, 3, seed=1)
    u, b = 1.1, 0.3
    layer = cls("tanh", 1e-14, u, b, tol=ORACLE_TOL, max_points=POINTS)
    got = Network(layer).maps(x)  # (2, 2, T, T)
    assert np.abs(got[0, 1] - _without_recurrence(cls, x[0], x[1], u, b)).max() <= TOL
    got = Network(layer).maps(x[:1], x[1:, 1:])  # aligned at the last step: NaN before it
    assert np.isnan(got[0, 0, :, 0]).all()
    want = _without_recurrence(cls, x[0], x[1, 1:], u, b)
    assert np.abs(got[0, 0, :, 1:] - want).max() <= TOL


@pytest.mark.parametrize("cls", [GRU, LSTM])
def test_symmetric_and_consistent_with_the_diagonal(cls):
    x = _sequences(4, 5, seed=2)
    net = Network(serial(cls("tanh", 1.4, 1.0, 0.1, tol=TOL, max_points=POINTS), GlobalAvgPool(),
                         Dense(1.0, 0.0)))
    k = net.layerwise(x)
    # the pairs j > i are the transposes of i > j: symmetric to the readout's rounding
    np.testing.assert_allclose(k, k.T, rtol=0, atol=1e-15)
    assert np.abs(np.diag(k) - net.diagonal(x)).max() <= 2 * TOL
    assert np.linalg.eigvalsh((k + k.T) / 2).min() >= -4 * TOL
    fused = net.kernel(x)  # not fusable: layer by layer, without a warning, the same values
    np.testing.assert_allclose(fused[np.tril_indices(4)], k[np.tril_indices(4)], atol=1e-12)
    other = _sequences(3, 5, seed=3)
    k12, k21 = net.layerwise(x, other), net.layerwise(other, x)
    assert np.abs(k12 - k21.T).max() <= 2 * TOL


def test_tolerance_drives_the_particles_and_warns_when_missed():
    x = _sequences(2, 4)
    layer = GRU("tanh", 1.0, 1.0, 0.1, tol=1e-6, max_points=2 ** 7)
    with pytest.warns(ToleranceWarning, match="did not reach tol = 1e-06"):
        Network(layer).maps(x)
    coarse = Network(GRU("tanh", 1.0, 1.0, 0.1, tol=5e-2)).maps(x)
    fine = Network(GRU("tanh", 1.0, 1.0, 0.1, tol=2e-3)).maps(x)
    assert np.abs(coarse - fine).max() <= 5e-2 + 2e-3


def test_the_error_estimates_cover_the_error():
    """maps() gives every entry with its 99 % interval over the randomisations: a coarse
    run's interval (with the fine run's) covers its distance to a run 15 times finer at
    nearly every entry, and the coarse run meets its tolerance."""
    x = _sequences(3, 4)
    kin = np.einsum("ith,jsh->ijts", x, x) / x.shape[-1]
    own = kin[np.arange(3), np.arange(3)]
    coarse = GRU("tanh", 1.2, 1.0, 0.1, tol=3e-2).maps(own, None, kin)
    fine = GRU("tanh", 1.2, 1.0, 0.1, tol=TOL, max_points=POINTS).maps(own, None, kin)
    for c, f in ((coarse[0], fine[0]), (coarse[2], fine[2])):
        assert np.all(c.converged) and c.error.max() <= 3e-2 and np.all(c.n_points > 0)
        assert np.mean(np.abs(c.value - f.value) <= c.error + f.error) >= 0.9


@pytest.mark.parametrize("text, match", [
    ("GRU('tanh', 0)", "GRU needs weight_var > 0"),
    ("LSTM('tanh', tol=0)", "LSTM needs tol > 0"),
    ("GRU(max_points=1000)", "GRU max_points must be a power of 2"),
    ("LSTM('nope')", "nope"),
])
def test_bad_parameters_are_one_line_errors(text, match):
    with pytest.raises(ArchitectureError, match=match) as info:
        parse_arch(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cls, readout", [(GRU, LastStep), (LSTM, GlobalAvgPool)])
def test_padding_gives_the_unpadded_kernel(cls, readout):
    """Sequences of lengths 4, 2 and 3, padded with NaN steps to 5 before or after their
    own: the same kernel either way, and each sequence with itself as unpadded, within the
    two runs' errors (a padded chain starts later in its slots: other particles).  Pairs
    of unequal length: the oracle above, without recurrent weights."""
    seqs = [_sequences(1, n, seed=n)[0] for n in (4, 2, 3)]
    net = Network(serial(Dense(1.0, 0.1), cls("tanh", 1.3, 1.0, 0.1, tol=TOL,
                                              max_points=POINTS), readout(), Dense(1.0, 0.0)))
    ks = []
    for front in (True, False):
        padded = np.full((3, 5, 3), np.nan)
        for i, a in enumerate(seqs):
            if front:
                padded[i, 5 - len(a):] = a
            else:
                padded[i, :len(a)] = a
        ks.append(net.kernel(padded))
        for i, a in enumerate(seqs):  # one input with itself: no padding needed
            assert abs(ks[-1][i, i] - net.kernel(a[None])[0, 0]) <= 2 * TOL, i
    np.testing.assert_array_equal(ks[0], ks[1])  # aligned at their ends either way


def test_ntk_and_tables_are_refused_in_one_line(tmp_path):
    x = _sequences(2, 3)
    net = Network(serial(GRU(), LastStep()))
    for call in (lambda: net.kernel(x, get="ntk"), lambda: net.diagonal(x, get="ntk")):
        with pytest.raises(ArchitectureError, match="GRU gives the NNGP only, not the NTK"):
            call()
    with pytest.raises(ArchitectureError, match="phi must be an activation's name"):
        LSTM(str(tmp_path / "table.h5"))


def test_arch_round_trip():
    for layer in (GRU("erf", 1.5, 0.5, 0.1, tol=1e-3), LSTM("x*tanh(x)", max_points=2 ** 10),
                  GRU()):
        again = parse_arch(repr(layer))
        assert again == layer and repr(again) == repr(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Network(parse_arch("serial(LSTM(), LastStep())")).kernel(_sequences(2, 2))


def test_cli_tol_sets_every_gated_layer_and_is_refused_elsewhere(tmp_path):
    from click.testing import CliRunner

    from nngp_lut.cli.main import cli

    x = _sequences(3, 4, channels=2)
    np.save(tmp_path / "x.npy", x.reshape(3, -1))
    arch = "serial(GRU('tanh', 1.5, 1.0, 0.1, tol=0.5), LastStep(), Dense(1, 0))"

    def run(*args):
        return CliRunner().invoke(cli, ["kernel", "--x1", str(tmp_path / "x.npy"), "--out",
                                        str(tmp_path / "k.npy"), "--force", "--quiet",
                                        *args])

    res = run("--arch", arch, "--shape", "4,2", "--tol", str(TOL))
    assert res.exit_code == 0, res.output
    want = Network(parse_arch(arch.replace("tol=0.5", f"tol={TOL}"))).kernel(x)
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), want, rtol=0, atol=1e-12)
    for args in (("--arch", "serial(Dense(1, 0), Activation('relu'))"),
                 ("--phi", "relu", "--depth", "1", "--weight-var", "1", "--bias-var", "0")):
        res = run(*args, "--tol", "0.01")
        assert res.exit_code == 2 and "layers computed to a tolerance" in res.output
    res = run("--arch", arch, "--shape", "4,2", "--kernel", "ntk")
    assert res.exit_code == 1 and "GRU gives the NNGP only" in res.output
