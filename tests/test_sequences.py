"""Sequence layers (issue 23): SimpleRNN against closed forms, padding, SelfAttention,
errors.

The RNN's oracle is ``tests.naive.rnn_direct``: the recursion of SimpleRNN's docstring step
pair by step pair with the closed-form V-transforms of relu and erf, for sequences of their
own lengths (no padding, no tables, no engine).  Attention's is its formula written on the
raw inputs.  The finite networks are checked in tests/test_registry.py (Monte Carlo).
"""

import warnings

import numpy as np
import pytest

from nngp_lut.errors import ArchitectureError, DataError
from nngp_lut.kernel import (Activation, Conv, Dense, FanInSum, FanOut, Flatten, GlobalAvgPool,
                             Identity, LastStep, LayerNorm, Network, PositionalEmbedding,
                             SelfAttention, SimpleRNN, parallel, serial)
from tests.conftest import TOL_UNEQUAL
from tests.naive import rnn_direct

#: relu's kernel has no table error (its 1-D table is exact to rounding in the slices);
#: relative to the largest entry.
TOL_RELU = 1e-10
#: Fused against layerwise (the same rule twice).
TOL_ENGINE = 1e-12
W, U, B = 1.4, 1.1, 0.2


def _sequences(lengths, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, channels)) * rng.uniform(0.5, 1.5) for n in lengths]


def _padded(seqs, steps=None, front=False):
    steps = steps or max(len(s) for s in seqs)
    out = np.full((len(seqs), steps, seqs[0].shape[1]), np.nan)
    for i, s in enumerate(seqs):
        if front:
            out[i, steps - len(s):] = s
        else:
            out[i, :len(s)] = s
    return out


def _direct(phi, xs, ys, readout):
    k, t = np.zeros((len(xs), len(ys))), np.zeros((len(xs), len(ys)))
    for i, a in enumerate(xs):
        for j, b in enumerate(ys):
            kh, th = rnn_direct(phi, a, b, W, U, B)
            k[i, j], t[i, j] = (kh[-1, -1], th[-1, -1]) if readout == "last" else \
                (kh.mean(), th.mean())
    return k, t


def _fused(net, x1, x2=None):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # runs fused, no layerwise fallback
        return net.kernel(x1, x2, get=("nngp", "ntk"))


@pytest.mark.parametrize("phi, tol", [("relu", TOL_RELU), ("erf", TOL_UNEQUAL)])
@pytest.mark.parametrize("readout", ["last", "mean"])
def test_recursion_against_closed_forms(phi, tol, readout):
    """Sequences of unequal lengths (padded with NaN after, and before, their steps)
    against the direct recursion on each pair at its own lengths: NNGP and NTK, fused and
    layerwise, both sets and the symmetric case."""
    xs, ys = _sequences([6, 3, 8, 5]), _sequences([4, 7, 1], seed=1)
    net = Network(serial(SimpleRNN(phi, W, U, B),
                         LastStep() if readout == "last" else GlobalAvgPool()))
    x, y = _padded(xs), _padded(ys, front=True)
    for (k, t), (rk, rt) in ((_fused(net, x, y), _direct(phi, xs, ys, readout)),
                             (_fused(net, x), _direct(phi, xs, xs, readout))):
        scale = np.abs(rk).max()
        assert np.abs(k - rk).max() <= tol * scale
        assert np.abs(t - rt).max() <= tol * np.abs(rt).max()
    layerwise = net.layerwise(x, y, get=("nngp", "ntk"))
    for a, b in zip(_fused(net, x, y), layerwise):
        assert np.abs(a - b).max() <= TOL_ENGINE * np.abs(b).max()
    diagonal = net.diagonal(x, get="ntk")
    assert np.abs(diagonal - np.diag(_direct(phi, xs, xs, readout)[1])).max() <= \
        tol * np.abs(diagonal).max()


def test_padding_gives_the_unpadded_kernel():
    """Stacked RNNs behind a Dense, in a residual block: the kernel of padded sequences is
    the kernel of the same sequences at one length each (where no padding is needed)."""
    seqs = _sequences([5, 2, 5, 4], seed=2)
    net = Network(serial(Dense(1.0, 0.1), FanOut(2),
                         parallel(Identity(), serial(SimpleRNN("relu", 1.2, 1.0, 0.1),
                                                     Dense(1.0, 0.1))),
                         FanInSum(), SimpleRNN("erf", 1.0, 1.0, 0.0), GlobalAvgPool(),
                         Dense(1.0, 0.0)))
    k, t = _fused(net, _padded(seqs, steps=7))
    for i, a in enumerate(seqs):
        for j, b in enumerate(seqs):
            if len(a) == len(b):  # no padding at all
                ref = net.layerwise(np.stack([a]), np.stack([b]), get=("nngp", "ntk"))
                assert k[i, j] == pytest.approx(ref[0][0, 0], rel=1e-12)
                assert t[i, j] == pytest.approx(ref[1][0, 0], rel=1e-12)
    # Padding before or after the steps, or to a longer common length, changes nothing.
    for other in (_padded(seqs, front=True), _padded(seqs, steps=9)):
        k2, t2 = _fused(net, other)
        np.testing.assert_allclose(k2, k, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(t2, t, rtol=1e-12, atol=1e-15)


def test_sequence_to_sequence_maps():
    """Network.maps: the (n1, n2, T, T') kernel of every pair of steps, whose last step and
    mean are the LastStep and GlobalAvgPool kernels; padded steps are NaN, the others
    those of the unpadded sequences (aligned at their last step)."""
    seqs = _sequences([5, 3, 4], seed=6)
    rnn = SimpleRNN("relu", W, U, B)
    k, t = Network(serial(rnn, Dense(1.0, 0.1))).maps(_padded(seqs), get=("nngp", "ntk"))
    assert k.shape == (3, 3, 5, 5)
    last = Network(serial(rnn, Dense(1.0, 0.1), LastStep())).kernel(_padded(seqs))
    np.testing.assert_allclose(k[..., -1, -1], last, rtol=1e-12)
    for i, a in enumerate(seqs):
        for j, b in enumerate(seqs):
            kh, th = rnn_direct("relu", a, b, W, U, B)
            valid = (slice(5 - len(a), None), slice(5 - len(b), None))
            np.testing.assert_allclose(k[i, j][valid], 0.1 + kh, rtol=TOL_RELU)
            np.testing.assert_allclose(t[i, j][valid], 0.1 + kh + th, rtol=TOL_RELU)
            assert np.isnan(k[i, j]).sum() == 25 - len(a) * len(b)
    with pytest.raises(ArchitectureError, match="maps"):
        Network(serial(rnn, LastStep())).maps(_padded(seqs))


def test_symmetric_and_positive_semidefinite():
    seqs = _sequences([6, 6, 3, 8, 5, 2, 7, 4], seed=3)
    net = Network(serial(SimpleRNN("erf", 1.3, 1.0, 0.1), SimpleRNN("relu", 1.0, 1.2, 0.1),
                         LastStep(), Dense(1.0, 0.0)))
    for kernel in _fused(net, _padded(seqs)):
        assert np.array_equal(kernel, kernel.T)
        assert np.linalg.eigvalsh(kernel).min() >= -1e-12 * np.abs(kernel).max()


@pytest.mark.parametrize("tied", [True, False])
def test_attention_against_its_formula(tied):
    """K' = b + w A_x (X X'^T / C) A_x'^T with A_x = softmax(logit_var X X^T / C) (uniform
    when untied), written on the raw inputs; NTK K' + w A_x Theta A_x'^T with Theta = 0."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((4, 5, 3)), rng.standard_normal((3, 5, 3))
    w, b, logit = 1.5, 0.1, 2.0

    def weights(z):
        if not tied:
            return np.full((5, 5), 0.2)
        e = np.exp(logit * z @ z.T / 3)
        return e / e.sum(axis=1, keepdims=True)

    ref = np.array([[b + w * np.sum(weights(p) @ (p @ q.T / 3) @ weights(q).T) / 25
                     for q in y] for p in x])
    net = Network(serial(SelfAttention(w, b, logit_var=logit, tied=tied), GlobalAvgPool()))
    k, t = _fused(net, x, y)
    np.testing.assert_allclose(k, ref, rtol=1e-12)
    np.testing.assert_allclose(t, ref, rtol=1e-12)  # no NTK before it: Theta' = K'


def test_positional_embedding_adds_its_variance_where_the_positions_meet():
    """Inputs x + sqrt(b) P, P ~ N(0, 1) shared by all inputs: E_P <x_t + P_t, x'_s + P_s> / C
    = <x_t, x'_s> / C + b [t = s]; a Dense and the mean over positions then give
    c + w (mean_{t,s} <x_t, x'_s> / C + b / T), and the NTK adds b / T for P's gradient."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((3, 4, 2)), rng.standard_normal((2, 4, 2))
    b, w, c = 0.7, 1.5, 0.1
    gram = np.einsum("itc,jsc->ij", x, y) / (2 * 16)
    net = Network(serial(PositionalEmbedding(b), Dense(w, c), GlobalAvgPool()))
    k, t = _fused(net, x, y)
    np.testing.assert_allclose(k, c + w * (gram + b / 4), rtol=1e-12)
    np.testing.assert_allclose(t, k + w * b / 4, rtol=1e-12)


@pytest.mark.parametrize("layer, x, message", [
    (serial(SimpleRNN("relu"), LastStep()), np.ones((3, 4)), "sequences"),
    (serial(Dense(1.0), Flatten(), SimpleRNN("relu"), LastStep()), np.ones((3, 4, 2)),
     "spatial axes"),
    (serial(SimpleRNN("relu"), Dense(1.0)), np.ones((3, 4, 2)), "LastStep"),
    (serial(SimpleRNN("relu"), Activation("relu"), LastStep()), np.ones((3, 4, 2)),
     "Gaussian"),
    (serial(SimpleRNN("relu"), Conv(1.0, filter_shape=(2,)), SimpleRNN("relu"), LastStep()),
     [[[1.0], [2.0]], [[np.nan], [1.0]]], "unequal length"),
    (serial(SimpleRNN("relu"), LayerNorm(), GlobalAvgPool()),
     [[[1.0], [2.0]], [[np.nan], [1.0]]], "unequal length"),
    (serial(SimpleRNN("relu"), LastStep()), [[[1.0, np.nan], [2.0, 1.0]]], "inside a step"),
    (serial(SimpleRNN("relu"), LastStep()), [[[1.0], [np.nan], [2.0]]], "between"),
    (serial(SimpleRNN("relu"), LastStep()), [[[np.nan], [np.nan]]], "no steps"),
    (serial(SimpleRNN("relu"), SelfAttention(), LastStep()),
     [[[1.0], [2.0]], [[np.nan], [1.0]]], "unequal length"),
    (serial(PositionalEmbedding(), SimpleRNN("relu"), LastStep()),
     [[[1.0], [2.0]], [[np.nan], [1.0]]], "unequal length"),
])
def test_one_line_errors(layer, x, message):
    with pytest.raises((ArchitectureError, DataError), match=message) as info:
        Network(layer).kernel(np.asarray(x, dtype=float))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs", [dict(weight_var=0.0), dict(input_var=-1.0),
                                    dict(bias_var=float("nan")), dict(width=0)])
def test_bad_parameters(kwargs):
    with pytest.raises(ArchitectureError, match="SimpleRNN"):
        SimpleRNN("relu", **kwargs)
    with pytest.raises(ArchitectureError, match="SelfAttention"):
        SelfAttention(**{k: v for k, v in kwargs.items() if k != "input_var"} or
                      dict(logit_var=-1.0))


def test_arch_text_round_trip():
    from nngp_lut.kernel.arch import parse_arch

    net = serial(SimpleRNN("erf", 1.5, 2.0, 0.1, width=64), SelfAttention(1.2, tied=False),
                 LastStep(), Dense(1.0, 0.0))
    assert parse_arch(repr(net)) == net


def test_padded_sequences_from_files(tmp_path):
    """Rows of a file with NaN steps (flattened (T, d) sequences, --shape T,d) give each
    sequence's kernel at its own length, standardised over its own values (the oracle:
    rnn_direct on the unpadded sequences); commands that sample finite networks and networks
    of vectors refuse NaN in one line."""
    from click.testing import CliRunner

    from nngp_lut.cli.main import cli

    seqs = _sequences([4, 2, 3], channels=2, seed=5)
    np.save(tmp_path / "x.npy", _padded(seqs).reshape(3, -1))
    arch = f"serial(SimpleRNN('relu', {W}, {U}, {B}), LastStep())"

    def run(*args):
        return CliRunner().invoke(cli, [*args, "--quiet"])

    res = run("kernel", "--arch", arch, "--shape", "4,2", "--x1", str(tmp_path / "x.npy"),
              "--standardize", "--out", str(tmp_path / "k.npy"))
    assert res.exit_code == 0, res.output
    own = [(s - s.mean()) / s.std() for s in seqs]
    want, _ = _direct("relu", own, own, "last")
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), want, rtol=TOL_RELU, atol=0)

    rng = np.random.default_rng(0)
    x = _padded(_sequences(rng.integers(2, 5, 12), channels=2, seed=6), steps=4).reshape(12, -1)
    np.savez(tmp_path / "d.npz", x_train=x[:8], y_train=np.arange(8) % 2, x_test=x[8:],
             y_test=np.arange(4) % 2)
    data = ["--data", str(tmp_path / "d.npz")]
    res = run("predict", *data, "--arch", arch[:-1] + ", Dense(1.0, 0.0))", "--shape", "4,2")
    assert res.exit_code == 0, res.output
    res = run("mc", *data, "--arch", arch, "--shape", "4,2", "--widths", "8,16")
    assert res.exit_code == 1 and "has NaN (padding of a shorter sequence): mc takes" \
        in res.output, res.output
    res = run("predict", *data, "--phi", "relu", "--depth", "1", "--weight-var", "1",
              "--bias-var", "0")
    assert res.exit_code == 1 and "NaN marks the padding of sequences" in res.output, res.output
