"""Convolutional kernels (issue 13): the fused spatial engine against the layer-by-layer
reference, the reference's first layer against a direct sum, closed forms (a constant image
through pooling, 1x1 images as a fully connected network), symmetry and positive
semi-definiteness, translation invariance of circular padding, and one-line errors."""

import numpy as np
import pytest
import scipy.sparse

from nngp_lut.errors import DataError
from nngp_lut.kernel import (Activation, Aggregate, ArchitectureError, AvgPool, Conv, Dense,
                             FanInSum, FanOut, Flatten, GlobalAvgPool, Identity, LayerNorm,
                             Network, parallel, serial)
from nngp_lut.kernel.arch import parse_arch
from nngp_lut.kernel.compiler import diagonal_prefix

#: Fused against layer-by-layer: the same look-ups, so only summation order differs (the
#: symmetric NTK's diagonal comes from the diagonal recursion, E[phi'^2], where the pairs
#: read Fdot at rho = 1 from the table: ~1e-8 apart for relu's kink).
TOL_FUSED = 1e-9
TOL_FUSED_SYM_NTK = 1e-7
#: Identities that hold up to rounding.
TOL_EXACT = 1e-12


@pytest.fixture(scope="module")
def relu(table_of):
    return Activation(table_of("relu"))


@pytest.fixture(scope="module")
def erf(table_of):
    return Activation(table_of("erf"))


@pytest.fixture(scope="module")
def imgs():
    rng = np.random.default_rng(13)
    return rng.standard_normal((4, 5, 5, 2)), rng.standard_normal((3, 5, 5, 2))


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def networks(relu, erf):
    """One small network per layer and option (the layer under test after a Conv)."""
    c = Conv(1.7, 0.1)
    ring = np.roll(np.eye(5), 1, axis=1) + np.roll(np.eye(5), -1, axis=1)
    return {
        "conv same": serial(c, relu, Conv(1.3, 0.2), relu, Flatten(), Dense(1.5, 0.1)),
        "conv valid stride": serial(c, relu, Conv(1.3, 0.2, filter_shape=(2, 3),
                                                   strides=(2, 1), padding="VALID"),
                                    Flatten(), Dense(1.5, 0.1)),
        "conv circular stride": serial(c, relu, Conv(1.3, None, strides=(2, 2),
                                                      padding="CIRCULAR"), relu, Flatten(),
                                       Dense(1.5, 0.1)),
        "conv standard": serial(Conv(1.7, 0.1, parameterization="standard", width=8), relu,
                                Conv(1.3, 0.2, parameterization="standard"), Flatten(),
                                Dense(1.5, 0.1)),
        "avgpool": serial(c, relu, AvgPool((2, 2)), Conv(1.3, 0.1), relu, GlobalAvgPool(),
                          Dense(1.5, 0.1)),
        "avgpool same stride": serial(c, relu, AvgPool((3, 2), strides=(1, 2),
                                                        padding="SAME"), Flatten(),
                                      Dense(1.5, 0.1)),
        "avgpool circular": serial(c, relu, AvgPool((2, 2), padding="CIRCULAR"),
                                   GlobalAvgPool(), Dense(1.5, 0.1)),
        # Pools after the last activation: the inputs' vectors from the diagonal recursion.
        "global pool": serial(c, relu, Conv(1.3, 0.1), relu, GlobalAvgPool(), Dense(1.5, 0.1)),
        "residual global pool": serial(c, FanOut(2), parallel(serial(relu, Conv(1.3, 0.1)),
                                                              Identity()),
                                       FanInSum(), erf, GlobalAvgPool(), Dense(1.5, 0.1)),
        "layernorm channels": serial(c, LayerNorm(), relu, Flatten(), Dense(1.5, 0.1)),
        "layernorm all": serial(c, LayerNorm(over="all"), relu, Flatten(), Dense(1.5, 0.1)),
        "residual": serial(c, FanOut(2), parallel(serial(relu, Conv(1.3, 0.1)), Identity()),
                           FanInSum(), relu, Flatten(), Dense(1.5, 0.1)),
        "erf (unequal variances)": serial(c, erf, Conv(1.3, 0.1), erf, Flatten(),
                                          Dense(1.5, 0.1)),
        "1-D conv": serial(Conv(1.7, 0.1, filter_shape=(3,)), relu,
                           Conv(1.2, 0.1, filter_shape=(2,), strides=(2,)), Flatten(),
                           Dense(1.5, 0.1)),
        "aggregate dense": serial(Conv(1.7, 0.1, filter_shape=(1,)), relu, Aggregate(ring),
                                  Conv(1.2, 0.1, filter_shape=(1,)), relu, GlobalAvgPool(),
                                  Dense(1.5, 0.1)),
        "aggregate sparse": serial(Conv(1.7, 0.1, filter_shape=(1,)), relu,
                                   Aggregate(scipy.sparse.csr_matrix(0.5 * ring)), Flatten(),
                                   Dense(1.5, 0.1)),
    }


def inputs_for(name, imgs):
    x, y = imgs
    if name.startswith(("1-D", "aggregate")):  # (n, L, C): 5 positions (nodes), 10 channels
        return x.reshape(4, 5, 10), y.reshape(3, 5, 10)
    return x, y


def test_fused_matches_layerwise(relu, erf, imgs):
    for name, layer in networks(relu, erf).items():
        net = Network(layer)
        x, y = inputs_for(name, imgs)
        for get in ("nngp", ("nngp", "ntk")):
            ref = net.layerwise(x, y, get=get)
            got = net.kernel(x, y, get=get)
            ref, got = np.atleast_3d(ref), np.atleast_3d(got)
            assert rel(got, ref) < TOL_FUSED, (name, get)
        sym_ref = net.layerwise(x, get=("nngp", "ntk"))
        sym = net.kernel(x, get=("nngp", "ntk"))
        assert rel(sym[0], sym_ref[0]) < TOL_FUSED, name
        assert rel(sym[1], sym_ref[1]) < TOL_FUSED_SYM_NTK, name
        diag = net.diagonal(x, get="nngp")
        assert rel(np.diag(sym_ref[0]), diag) < TOL_EXACT, name


def test_diagonal_prefix_only_before_mixing(relu):
    """The inputs' full self-covariances are skipped only when no pooling or aggregation
    comes before an activation or a normalisation."""
    c = Conv(1.7, 0.1)
    assert len(diagonal_prefix(serial(c, relu, c, relu, GlobalAvgPool(), Dense(1.0)))) == 4
    assert diagonal_prefix(serial(c, GlobalAvgPool(), Dense(1.0))) == ()
    assert diagonal_prefix(serial(c, relu, GlobalAvgPool(), Dense(1.0), relu)) is None
    assert diagonal_prefix(serial(c, AvgPool((2, 2)), LayerNorm(), Flatten())) is None


def test_first_conv_is_the_box_sum(imgs):
    """The reference's Conv on the input record against the direct sum over offsets with
    explicit zero padding: K'_{h,h'} = b + w/9 sum_D <x_{h+D}, y_{h'+D}> / C."""
    x, y = imgs
    w, b = 1.7, 0.1
    net = Network(serial(Conv(w, b), AvgPool((5, 5)), GlobalAvgPool(), Dense(1.0, 0.0)))
    got = net.layerwise(x, y)
    px, py = (np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0))) for a in (x, y))
    c = x.shape[-1]
    want = np.zeros((4, 3))
    for i in range(4):
        for j in range(3):
            total = 0.0  # mean over all (h, h') pairs of the 5x5 map (the pooling)
            for h in np.ndindex(5, 5):
                for g in np.ndindex(5, 5):
                    box = sum(px[i, h[0] + dy, h[1] + dx] @ py[j, g[0] + dy, g[1] + dx]
                              for dy in range(3) for dx in range(3))
                    total += b + w * box / (9 * c)
            want[i, j] = total / 625
    assert rel(got, want) < TOL_EXACT


def test_symmetric_and_psd(relu, imgs):
    x, _ = imgs
    x = np.concatenate([x, x[:1] + 0.1])
    for layer in (networks(relu, relu)["conv same"], networks(relu, relu)["avgpool"]):
        for get in ("nngp", "ntk"):
            k = Network(layer).kernel(x, get=get)
            assert np.abs(k - k.T).max() == 0.0
            assert np.linalg.eigvalsh(k).min() > -1e-12 * np.abs(k).max()
            k12 = Network(layer).kernel(x, x, get=get)
            assert rel(k12, k) < TOL_FUSED_SYM_NTK


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (1, 5), (3, 2), (4, 7)])
@pytest.mark.parametrize("filter_shape", [(3, 3), (5, 5), (5, 3), (2, 2)])
def test_box_sums_at_the_edges(relu, shape, filter_shape):
    """Images no wider than the filter (every entry an edge; taps whose shift passes a
    whole row) through diagonal and full maps, against the layer-by-layer reference."""
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((4, *shape, 2)), rng.standard_normal((3, *shape, 2))
    for readout in (Flatten(), GlobalAvgPool()):
        net = Network(serial(Conv(1.5, 0.1, filter_shape=filter_shape), relu,
                             Conv(1.3, 0.2, filter_shape=filter_shape), relu, readout,
                             Dense(1.2, 0.1)))
        ref = net.layerwise(x, y, get=("nngp", "ntk"))
        got = net.kernel(x, y, get=("nngp", "ntk"))
        assert rel(np.asarray(got), np.asarray(ref)) < TOL_FUSED, readout


def test_rows_in_groups_share_the_column_blocks(relu):
    """A tile of >= 64 rows runs them in groups over each block of columns (on the
    triangle too, its groups paired): the same kernel as the layer-by-layer reference, and
    as tiles too small to group."""
    x = np.random.default_rng(5).standard_normal((150, 4, 4, 1))
    net = Network(networks(relu, relu)["conv same"])
    ref = net.layerwise(x, get=("nngp", "ntk"))
    for tile_rows in (150, 64, 9):
        got = net.kernel(x, get=("nngp", "ntk"), tile_rows=tile_rows)
        assert rel(got[0], ref[0]) < TOL_FUSED
        assert rel(got[1], ref[1]) < TOL_FUSED_SYM_NTK
    cross = net.kernel(x[:100], x[100:], get="nngp")
    assert rel(cross, ref[0][:100, 100:]) < TOL_FUSED


def test_circular_padding_is_translation_invariant(relu, imgs):
    x, y = imgs
    shifted = [np.roll(a, (2, 3), axis=(1, 2)) for a in (x, y)]
    flat = Network(serial(Conv(1.7, 0.1, padding="CIRCULAR"), relu,
                          Conv(1.3, 0.1, padding="CIRCULAR"), relu, Flatten(), Dense(2, 0)))
    pool = Network(serial(Conv(1.7, 0.1, padding="CIRCULAR"), relu, GlobalAvgPool(),
                          Dense(2, 0)))
    for get in ("nngp", "ntk"):
        # both inputs moved by the same shift; with global pooling either one alone
        assert rel(flat.kernel(*shifted, get=get), flat.kernel(x, y, get=get)) < TOL_EXACT
        assert rel(pool.kernel(shifted[0], y, get=get), pool.kernel(x, y, get=get)) \
            < TOL_EXACT
    same = Network(serial(Conv(1.7, 0.1), relu, Flatten(), Dense(2, 0)))
    assert rel(same.kernel(*shifted), same.kernel(x, y)) > 1e-3  # zero padding is not


def test_pooling_a_constant_image(relu):
    """Constant images stay constant through a circular Conv, relu and pooling: the kernel
    is relu's closed form at the constant's variances (DESIGN.md section 1)."""
    c1, c2 = 0.7, -1.3
    x, y = np.full((1, 4, 4, 3), c1), np.full((1, 4, 4, 3), c2)
    w1, b1, w2, b2 = 1.7, 0.2, 1.4, 0.05
    net = Network(serial(Conv(w1, b1, padding="CIRCULAR"), relu, AvgPool((2, 2)),
                         AvgPool((2, 2), padding="SAME"), GlobalAvgPool(), Dense(w2, b2)))
    q1, q2, k = b1 + w1 * c1 * c1, b1 + w1 * c2 * c2, b1 + w1 * c1 * c2
    rho = k / np.sqrt(q1 * q2)
    theta = np.arccos(rho)
    f = np.sqrt(q1 * q2) / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * rho)
    assert rel(net.kernel(x, y)[0, 0], np.float64(b2 + w2 * f)) < 1e-9
    assert rel(net.layerwise(x, y)[0, 0], np.float64(b2 + w2 * f)) < 1e-9


def test_flatten_after_a_1x1_image_is_the_dense_kernel(relu, erf):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((5, 6)), rng.standard_normal((4, 6))
    for act in (relu, erf):
        conv = Network(serial(Conv(1.6, 0.1, filter_shape=(1, 1)), act,
                              Conv(1.2, 0.3, filter_shape=(1, 1)), act, Flatten(),
                              Dense(1.5, 0.2)))
        dense = Network(serial(Dense(1.6, 0.1), act, Dense(1.2, 0.3), act, Dense(1.5, 0.2)))
        for get in ("nngp", "ntk"):
            want = dense.layerwise(x, y, get=get)
            assert rel(conv.kernel(x.reshape(5, 1, 1, 6), y.reshape(4, 1, 1, 6), get=get),
                       want) < TOL_FUSED
            assert rel(conv.layerwise(x.reshape(5, 1, 1, 6), y.reshape(4, 1, 1, 6),
                                      get=get), want) < TOL_EXACT


def test_all_depths_read_out_after_flatten_only(relu, imgs):
    """A Dense before Flatten acts per position: the depths are the Dense layers after it,
    and depth 0 is the network cut at the first of them."""
    x, _ = imgs
    head = [Conv(1.7, 0.1), relu, Dense(1.5, 0.1), relu, Flatten(), Dense(2.0, 0.1)]
    net = Network(serial(*head, relu, Dense(1.2, 0.05)))
    assert net.depth == 1
    stack = net.kernel(x, get=("nngp", "ntk"), all_depths=True)
    ref = net.layerwise(x, get=("nngp", "ntk"), all_depths=True)
    assert stack[0].shape == (2, 4, 4)
    assert rel(stack[0], ref[0]) <= TOL_FUSED and rel(stack[1], ref[1]) <= TOL_FUSED_SYM_NTK
    np.testing.assert_allclose(stack[0][0], Network(serial(*head)).kernel(x), rtol=TOL_EXACT)


def test_aggregate_dense_and_sparse_agree(relu, imgs):
    x, y = inputs_for("aggregate", imgs)
    a = np.random.default_rng(5).uniform(0, 1, (5, 5)) * (np.random.default_rng(6)
                                                         .uniform(size=(5, 5)) < 0.5)
    nets = [Network(serial(Conv(1.7, 0.1, filter_shape=(1,)), relu, Aggregate(m),
                           GlobalAvgPool(), Dense(1, 0)))
            for m in (a, scipy.sparse.coo_matrix(a))]
    assert rel(nets[0].kernel(x, y), nets[1].kernel(x, y)) < TOL_EXACT
    # A K A^T: on the input record directly (GlobalAvgPool = mean of all entries)
    got = Network(serial(Aggregate(a), GlobalAvgPool(), Dense(1, 0))).kernel(x, y)
    z1, z2 = np.einsum("hk,ikc->ihc", a, x), np.einsum("hk,ikc->ihc", a, y)
    want = np.einsum("ihc,jgc->ij", z1, z2) / (10 * 25)
    assert rel(got, want) < TOL_EXACT


@pytest.mark.parametrize("layer, x, message", [
    (serial(Conv(1, 0), Flatten(), Dense(1, 0)), np.ones((3, 16)), "--shape H,W,C"),
    (serial(Conv(1, 0, filter_shape=(3,)), Flatten(), Dense(1, 0)), np.ones((3, 4, 4, 1)),
     "(n, L, C)"),
    (serial(Conv(1, 0, filter_shape=(5, 5), padding="VALID"), Flatten(), Dense(1, 0)),
     np.ones((3, 4, 4, 1)), "does not fit"),
    (serial(Conv(1, 0), Dense(1, 0)), np.ones((3, 4, 4, 1)), "Flatten() or GlobalAvgPool()"),
    (serial(Conv(1, 0), LayerNorm(over="space"), Flatten()), np.ones((3, 4, 4, 1)),
     "no Gaussian infinite-width kernel"),
    (serial(Conv(1, 0, filter_shape=(1,)), Aggregate(np.eye(3)), Flatten()),
     np.ones((3, 4, 2)), "3 nodes but its inputs have 4"),
    (serial(Dense(1, 0), Flatten()), np.ones((3, 4)), "(n, L, C) or (n, H, W, C)"),
    (serial(Flatten(), Flatten(), Dense(1, 0)), np.ones((3, 4, 2)), "vector of features"),
])
def test_bad_shapes_give_one_line_errors(layer, x, message):
    with pytest.raises((DataError, ArchitectureError)) as exc:
        Network(layer).kernel(x)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_mismatched_inputs_and_windows():
    net = Network(serial(Conv(1, 0), Flatten(), Dense(1, 0)))
    with pytest.raises(DataError, match="x2"):
        net.kernel(np.ones((2, 4, 4, 1)), np.ones((2, 5, 4, 1)))
    with pytest.raises(ArchitectureError, match="mixes 1-D and 2-D"):
        Network(serial(Conv(1, 0, filter_shape=(3,)), AvgPool((2, 2)), Flatten()))


def test_arch_text_round_trips():
    for text in ["serial(Conv(2.0, 0.1, filter_shape=(5,), strides=(2,), padding='CIRCULAR'),"
                 " Activation('relu'), AvgPool(window_shape=(3,), strides=(1,), "
                 "padding='SAME'), GlobalAvgPool(), LayerNorm(over='all'), Flatten(), "
                 "Dense(1.0, 0.0))"]:
        layer = parse_arch(text)
        assert parse_arch(repr(layer)) == layer
    assert LayerNorm() == LayerNorm(over="channels") and repr(LayerNorm()) == "LayerNorm()"
    with pytest.raises(ArchitectureError, match="filter_shape"):
        parse_arch("Conv(1, 0, filter_shape=(3, 3, 3))")
    with pytest.raises(ArchitectureError, match="not allowed"):
        parse_arch("Conv(1, 0, filter_shape=(a, 3))")


def test_aggregate_from_a_file(tmp_path):
    a = np.eye(4)
    np.save(tmp_path / "adj.npy", a)
    scipy.sparse.save_npz(tmp_path / "adj.npz", scipy.sparse.csr_matrix(a))
    for name in ("adj.npy", "adj.npz"):
        layer = parse_arch(f"Aggregate({str(tmp_path / name)!r})")
        assert layer == Aggregate(a) and parse_arch(repr(layer)) == layer
    with pytest.raises(ArchitectureError, match="missing.npy: no such file"):
        parse_arch(f"Aggregate({str(tmp_path / 'missing.npy')!r})")


CNN = "serial(Conv(2.0, 0.1, strides=(2, 2)), Activation('relu'), Flatten(), Dense(2.0, 0.1))"


def test_cli_conv_smoke(tmp_path, monkeypatch):
    """kernel with --shape equals the library; predict, search --arch and the errors."""
    from click.testing import CliRunner

    from nngp_lut.cli.main import cli

    def run(*args):
        return CliRunner().invoke(cli, [str(a) for a in args])

    rng = np.random.default_rng(8)
    x = rng.standard_normal((30, 6, 6, 1))
    y = (x[:, :3].sum(axis=(1, 2, 3)) > 0).astype(int)
    monkeypatch.chdir(tmp_path)
    np.save("flat.npy", x.reshape(30, 36))
    np.save("img.npy", x[..., 0])  # (n, H, W): its own shape
    np.savez("d.npz", x_train=x[:16, ..., 0], y_train=y[:16], x_val=x[16:22, ..., 0],
             y_val=y[16:22], x_test=x[22:, ..., 0], y_test=y[22:])
    want = Network(parse_arch(CNN)).kernel(x, get="ntk")
    for args in (("--x1", "flat.npy", "--shape", "6,6,1"), ("--x1", "img.npy")):
        res = run("kernel", "--arch", CNN, *args, "--kernel", "ntk", "--out", "K.npy",
                  "--force", "-q")
        assert res.exit_code == 0, res.output
        assert rel(np.load("K.npy"), want) < TOL_EXACT
    res = run("kernel", "--arch", CNN, "--x1", "flat.npy", "--out", "K.npy", "--force")
    assert res.exit_code == 1 and "--shape H,W,C" in res.output
    assert "diagonal spatial maps: 36 entries per pair" in run(
        "kernel", "--arch", CNN, "--x1", "img.npy", "--out", "K.npy", "--force").output
    res = run("kernel", "--phi", "relu", "--depth", 1, "--weight-var", 1, "--bias-var", 0,
              "--x1", "flat.npy", "--shape", "6,6,1", "--out", "K.npy", "--force")
    assert res.exit_code == 2 and "--shape is for networks with positions" in res.output
    res = run("kernel", "--arch", CNN, "--x1", "flat.npy", "--shape", "6,x", "--out", "K.npy",
              "--force")
    assert res.exit_code == 2
    res = run("predict", "--data", "d.npz", "--arch", CNN, "-q")
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output
    res = run("search", "--data", "d.npz", "--arch", CNN, "--arch",
              CNN.replace("Flatten()", "Conv(2.0, 0.1), Activation('relu'), Flatten()"),
              "--out", "s.csv", "-q")
    assert res.exit_code == 0, res.output
    assert "best on validation (6 examples)" in res.output
    res = run("search", "--data", "d.npz", "--arch", CNN, "--depths", "1,2", "--out", "t.csv")
    assert res.exit_code == 2 and "--depths" in res.output


def test_streamed_to_hdf5_over_the_budget(relu, imgs, tmp_path):
    import h5py

    x = np.concatenate(imgs)
    net = Network(serial(Conv(1.7, 0.1), relu, AvgPool((2, 2)), GlobalAvgPool(), Dense(1, 0)))
    path = net.kernel(x, memory=100, out=tmp_path / "k.h5", tile_rows=3)
    with h5py.File(path) as h5:
        assert rel(h5["kernel"][...], net.layerwise(x)) < TOL_FUSED
