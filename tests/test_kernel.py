"""Deep NNGP kernels (issue #3): closed-form recursions, identities, the layerwise twin."""

import numpy as np
import pytest

from nngp_lut.kernel import deep_network, nngp_diag, nngp_kernel
from nngp_lut.tables import DomainError

from .naive import closed_form

#: Tolerances, stated once: max |K - K_exact| / max diagonal.
TOL_KERNEL = 1e-6
#: Fused (per-layer slices) against layerwise (2-D table): both read the same table.
TOL_FUSED = 1e-7


def exact_kernel(name, x1, x2, depth, w, b):
    """The recursion of DESIGN.md section 1 with the closed form of F (numpy, full matrices)."""
    d = x1.shape[1]
    k = b + w * x1 @ x2.T / d
    q1 = b + w * np.sum(x1 * x1, 1) / d
    q2 = b + w * np.sum(x2 * x2, 1) / d
    for _ in range(depth):
        rho = np.clip(k / np.sqrt(np.outer(q1, q2)), -1, 1)
        k = b + w * closed_form(name, q1[:, None], q2[None, :], rho)
        q1 = b + w * closed_form(name, q1, q1, 1.0)
        q2 = b + w * closed_form(name, q2, q2, 1.0)
    return k


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((120, 30))
    raw = x * np.exp(rng.uniform(np.log(0.1), np.log(10.0), (120, 1)))  # norms span 2 decades
    std = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    return raw, std


@pytest.mark.parametrize("depth", [0, 1, 3, 20])
def test_relu_closed_form_any_norms(data, depth):
    raw, _ = data
    k = nngp_kernel(raw, phi="relu", depth=depth, weight_var=1.45, bias_var=0.28)
    e = exact_kernel("relu", raw, raw, depth, 1.45, 0.28)
    assert np.max(np.abs(k - e)) <= TOL_KERNEL * np.max(np.diag(e))


@pytest.mark.parametrize("depth", [1, 5, 20])
def test_erf_closed_form_standardised(data, depth):
    _, std = data
    k = nngp_kernel(std, phi="erf", depth=depth, weight_var=1.6, bias_var=0.2)
    e = exact_kernel("erf", std, std, depth, 1.6, 0.2)
    assert np.max(np.abs(k - e)) <= TOL_KERNEL * np.max(np.diag(e))


def test_erf_closed_form_unequal_norms(data):
    raw, _ = data
    k = nngp_kernel(raw, phi="erf", depth=4, weight_var=2.0, bias_var=0.1)
    e = exact_kernel("erf", raw, raw, 4, 2.0, 0.1)
    scale = np.sqrt(np.outer(np.diag(e), np.diag(e)))
    assert np.max(np.abs(k - e) / scale) <= 1e-5


@pytest.mark.parametrize("x", ["raw", "std"])
def test_fused_equals_layerwise(data, x):
    inputs = dict(zip(["raw", "std"], data))[x][:60]
    net = deep_network("tanh", 3, 1.7, 0.3)
    fused = net.kernel(inputs)
    ref = net.layerwise(inputs)
    assert np.max(np.abs(fused - ref)) <= TOL_FUSED * np.max(np.diag(ref))


def test_identities(data):
    raw, _ = data
    a, b = raw[:50], raw[50:90]
    net = deep_network("gelu", 2, 1.3, 0.05)
    k = net.kernel(a)
    np.testing.assert_array_equal(k, k.T)
    np.testing.assert_allclose(k, net.kernel(a, a), rtol=0, atol=1e-12 * k.max())
    np.testing.assert_array_equal(np.diag(k), nngp_diag(a, phi="gelu", depth=2,
                                                       weight_var=1.3, bias_var=0.05))
    kab = net.kernel(a, b)
    # Equal up to the order in which BLAS sums <a, b> and <b, a>.
    np.testing.assert_allclose(kab, net.kernel(b, a).T, rtol=0, atol=1e-12 * k.max())
    np.testing.assert_allclose(kab, net.kernel(raw[:90])[:50, 50:], rtol=0,
                               atol=1e-12 * k.max())
    assert np.linalg.eigvalsh(k).min() >= -1e-10 * np.trace(k)


def test_all_depths_from_one_pass(data):
    _, std = data
    net = deep_network("tanh", 4, 1.5, 0.2)
    stack = net.kernel(std[:40], all_depths=True)
    assert stack.shape == (5, 40, 40)
    for depth in range(5):
        one = deep_network("tanh", depth, 1.5, 0.2).kernel(std[:40])
        np.testing.assert_allclose(stack[depth], one, rtol=0, atol=1e-14 * one.max())


def test_streams_to_hdf5_over_budget(data, tmp_path):
    import h5py

    raw, _ = data
    net = deep_network("relu", 2, 1.2, 0.1)
    ram = net.kernel(raw)
    path = net.kernel(raw, memory=20_000, out=tmp_path / "k.h5", tile_rows=17)
    with h5py.File(path) as h5:
        streamed = h5["kernel"][()]
    np.testing.assert_array_equal(streamed, streamed.T)
    # Equal up to BLAS summation order (other tile sizes).
    np.testing.assert_allclose(streamed, ram, rtol=0, atol=1e-13 * ram.max())
    with pytest.raises(MemoryError, match="--out"):
        net.kernel(raw, memory=20_000)


def test_variance_outside_domain_is_an_error(data):
    raw, _ = data
    with pytest.raises(DomainError, match="--variance-max"):
        nngp_kernel(raw * 100, phi="tanh", depth=2, weight_var=5.0, bias_var=0.0)


@pytest.mark.parametrize("bad,msg", [
    (np.full((3, 4), np.nan), "NaN"),
    (np.zeros((0, 4)), "empty"),
    (np.ones(4), "2-D"),
    ([["a", "b"]], "numeric"),
])
def test_bad_inputs(bad, msg):
    with pytest.raises(ValueError, match=msg):
        nngp_kernel(bad, phi="relu", depth=1, weight_var=1.0, bias_var=0.1)


def test_feature_mismatch():
    with pytest.raises(ValueError, match="features"):
        nngp_kernel(np.ones((2, 3)), np.ones((2, 4)), phi="relu", depth=1, weight_var=1.0,
                    bias_var=0.1)


def test_selected_depths_equal_the_all_depths_stack(rng):
    x = rng.standard_normal((30, 5))
    xt = rng.standard_normal((11, 5))
    for phi in ("relu", "tanh"):  # slice path, and general path (unequal norms)
        net = deep_network(phi, 6, 1.4, 0.2)
        full = net.kernel(x, all_depths=True)
        np.testing.assert_array_equal(net.kernel(x, depths=[5, 0, 2]), full[[5, 0, 2]])
        cross = net.kernel(xt, x, all_depths=True)
        np.testing.assert_array_equal(net.kernel(xt, x, depths=[6, 3]), cross[[6, 3]])
        np.testing.assert_array_equal(net.kernel(x, depths=[6])[0], net.kernel(x))
    with pytest.raises(ValueError, match="0..6"):
        net.kernel(x, depths=[7])
    with pytest.raises(ValueError, match="repeat"):
        net.kernel(x, depths=[1, 1])
