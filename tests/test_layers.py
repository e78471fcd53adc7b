"""The layer algebra and the NTK (issue #12): closed forms, the layer-by-layer reference,
identities of kernels (symmetry, positive semi-definiteness, the NTK above the NNGP)."""

import numpy as np
import pytest

from nngp_lut.errors import LayerwiseWarning
from nngp_lut.kernel import (Activation, ArchitectureError, Dense, Dropout, FanInConcat,
                             FanInSum, FanOut, Identity, LayerNorm, Network, deep_network,
                             nngp_diag, nngp_kernel, ntk_kernel, parallel, repeat, serial)
from nngp_lut.kernel.compiler import compile_network

from .naive import exact_kernels

#: max |Theta - Theta_exact| / sqrt(Theta(x,x) Theta(x',x')) against the closed forms.
TOL_RELU = 1e-9
TOL_ERF = 1e-6
#: Fused against layer-by-layer (the same tables; relative to the diagonal scale).
TOL_FUSED = 1e-7
#: K(X) against K(X, X): equal up to BLAS summation order, except that K(X, X) meets the
#: correlation 1 - O(1e-16) at identical inputs, where E[phi'(u) phi'(v)] of a kinked phi
#: has a square-root singularity (relu: (pi - arccos rho) / 2 pi), so the NTK moves ~1e-8.
TOL_SAME = {"nngp": 1e-12, "ntk": 1e-7}


def relative_error(k, exact):
    d1 = np.diag(exact) if exact.shape[0] == exact.shape[1] else None
    scale = np.sqrt(np.outer(d1, d1)) if d1 is not None else np.abs(exact).max()
    return float(np.max(np.abs(k - exact) / scale))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((40, 8))
    raw = x * np.exp(rng.uniform(np.log(0.3), np.log(3.0), (40, 1)))  # norms span a decade
    std = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    return raw, std


def residual(phi="relu", w=1.2, b=0.1):
    block = serial(FanOut(2), parallel(serial(Activation(phi), Dense(w, b)), Identity()),
                   FanInSum(), LayerNorm())
    return serial(Dense(w, b), repeat(block, 3), Activation(phi), Dense(w, b))


NETWORKS = {
    "dense": lambda: serial(Dense(1.3, 0.2)),
    "tanh": lambda: deep_network("tanh", 3, 1.6, 0.2).layer,
    "standard": lambda: serial(Dense(1.3, 0.2, "standard", width=64), Activation("erf"),
                               Dense(1.1, 0.1, "standard", width=32), Activation("relu"),
                               Dense(0.9, 0.0, "standard")),
    "residual-layernorm": residual,
    "concat-dropout": lambda: serial(Dense(1.4, 0.1), FanOut(3),
                                     parallel(Activation("relu"), Activation("tanh"),
                                              Identity()),
                                     FanInConcat(), Dropout(0.3), Dense(1.0, 0.05)),
    "no-bias": lambda: serial(Dense(2.0, None), Activation("relu"), Dense(2.0, None)),
}


@pytest.mark.parametrize("depth", [1, 3, 20])
def test_relu_ntk_closed_form(data, depth):
    raw, _ = data
    net = deep_network("relu", depth, 1.45, 0.28)
    k, t = net.kernel(raw, get=("nngp", "ntk"))
    ek, et = exact_kernels("relu", raw, None, depth, 1.45, 0.28)
    assert relative_error(t, et) <= TOL_RELU
    assert relative_error(k, ek) <= TOL_RELU
    kx, tx = net.kernel(raw[:15], raw[15:], get=("nngp", "ntk"))
    ekx, etx = exact_kernels("relu", raw[:15], raw[15:], depth, 1.45, 0.28)
    scale = np.sqrt(np.outer(np.diag(et)[:15], np.diag(et)[15:]))
    assert np.max(np.abs(tx - etx) / scale) <= TOL_RELU


@pytest.mark.parametrize("which", ["raw", "std"])
@pytest.mark.parametrize("depth", [2, 20])
def test_erf_ntk_closed_form(data, which, depth):
    x = dict(zip(["raw", "std"], data))[which]
    k, t = nngp_kernel(x, phi="erf", depth=depth, weight_var=1.6, bias_var=0.1,
                       get=("nngp", "ntk"))
    ek, et = exact_kernels("erf", x, None, depth, 1.6, 0.1)
    assert relative_error(t, et) <= TOL_ERF
    assert relative_error(k, ek) <= TOL_ERF


def test_erf_ntk_at_large_variances(data):
    """Layer variances of ~1e3: the NTK then reads the table, not the correlation slices."""
    _, std = data
    t = nngp_kernel(std, phi="erf", depth=2, weight_var=100.0, bias_var=900.0, get="ntk")
    _, et = exact_kernels("erf", std, None, 2, 100.0, 900.0)
    assert relative_error(t, et) <= TOL_ERF


def composite_of(net, x1, x2=None):
    """The program's composite (one function of the Gram) for these inputs, or None."""
    slot = {net.depth: (0, 1)}
    return compile_network(net.exact_layer, x1, x2, slot, True).composite


@pytest.mark.parametrize("depth", [1, 3, 20])
def test_one_norm_is_one_function_of_the_gram(data, depth):
    """Inputs of one norm: the whole network is read from one tabulated function of the
    Gram entry (Program.composite), checked against the closed forms."""
    _, std = data
    net = deep_network("relu", depth, 1.45, 0.28)
    assert composite_of(net, std) is not None
    assert composite_of(net, std[:15], std[15:]) is not None
    k, t = net.kernel(std, get=("nngp", "ntk"))
    ek, et = exact_kernels("relu", std, None, depth, 1.45, 0.28)
    assert relative_error(t, et) <= TOL_RELU
    assert relative_error(k, ek) <= TOL_RELU
    tx = net.kernel(std[:15], std[15:], get="ntk")
    _, etx = exact_kernels("relu", std[:15], std[15:], depth, 1.45, 0.28)
    scale = np.sqrt(np.outer(np.diag(et)[:15], np.diag(et)[15:]))
    assert np.max(np.abs(tx - etx) / scale) <= TOL_RELU


def test_the_gram_function_only_where_it_holds(data):
    """No composite for inputs of different norms (raw, or a test set of another norm), nor
    where its cells miss the program at their midpoints (erf's NTK at variance ~1e3)."""
    raw, std = data
    net = deep_network("relu", 3, 1.45, 0.28)
    assert composite_of(net, raw) is None
    assert composite_of(net, std, 2.0 * std) is None
    assert composite_of(deep_network("erf", 2, 100.0, 900.0), std) is None


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("which", ["raw", "std"])
def test_fused_equals_layerwise(data, name, which):
    x = dict(zip(["raw", "std"], data))[which]
    net = Network(NETWORKS[name]())
    fused = net.kernel(x, get=("nngp", "ntk"))
    ref = net.layerwise(x, get=("nngp", "ntk"))
    for f, r in zip(fused, ref):
        assert relative_error(f, r) <= TOL_FUSED
    cross = net.kernel(x[:10], x[10:], get=("nngp", "ntk"))
    for c, f in zip(cross, fused):
        np.testing.assert_allclose(c, f[:10, 10:], rtol=0, atol=1e-12 * np.abs(f).max())


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_kernel_identities(data, name):
    raw, _ = data
    net = Network(NETWORKS[name]())
    for kind in ("nngp", "ntk"):
        k = net.kernel(raw, get=kind)
        np.testing.assert_array_equal(k, k.T)
        np.testing.assert_allclose(k, net.kernel(raw, raw, get=kind), rtol=0,
                                   atol=TOL_SAME[kind] * np.abs(k).max())
        np.testing.assert_array_equal(np.diag(k), net.diagonal(raw, get=kind))
        assert np.linalg.eigvalsh(k).min() >= -1e-10 * np.trace(k)


@pytest.mark.parametrize("name", ["tanh", "residual-layernorm", "concat-dropout", "no-bias"])
def test_ntk_dominates_nngp(data, name):
    """In the NTK parameterisation Theta - K is a sum of PSD kernels (the gradients of all
    but the last layer's weights)."""
    raw, _ = data
    k, t = Network(NETWORKS[name]()).kernel(raw, get=("nngp", "ntk"))
    assert np.linalg.eigvalsh(t - k).min() >= -1e-10 * np.trace(t)


def test_selected_depths_of_both_kernels(data):
    _, std = data
    net = deep_network("tanh", 4, 1.5, 0.2)
    k_all, t_all = net.kernel(std, get=("nngp", "ntk"), all_depths=True)
    assert k_all.shape == t_all.shape == (5, 40, 40)
    t_sel = net.kernel(std, get="ntk", depths=[4, 1])
    np.testing.assert_array_equal(t_sel, t_all[[4, 1]])
    np.testing.assert_array_equal(k_all[0], t_all[0])  # Theta^0 = K^0
    np.testing.assert_array_equal(net.kernel(std), k_all[-1])


def test_layerwise_fallback_for_two_unequal_variance_tables(data):
    raw, _ = data  # tanh and erf both need their 3-D tables: not one fused program
    net = Network(serial(Dense(1.5, 0.1), Activation("tanh"), Dense(1.5, 0.1),
                         Activation("erf"), Dense(1.5, 0.1)))
    with pytest.warns(LayerwiseWarning, match="two activations"):  # never silently
        fused = net.kernel(raw, get="ntk")
    np.testing.assert_array_equal(fused, net.layerwise(raw, get="ntk"))


def test_public_functions(data):
    raw, _ = data
    kw = dict(phi="relu", depth=2, weight_var=1.4, bias_var=0.1)
    t = ntk_kernel(raw, **kw)
    np.testing.assert_array_equal(t, nngp_kernel(raw, get="ntk", **kw))
    np.testing.assert_array_equal(np.diag(t), nngp_diag(raw, get="ntk", **kw))
    net = deep_network("relu", 2, 1.4, 0.1)
    np.testing.assert_array_equal(ntk_kernel(raw, network=net), t)
    with pytest.raises(ValueError, match="not both"):
        ntk_kernel(raw, network=net, depth=2)


@pytest.mark.parametrize("layer,msg", [
    (serial(Activation("relu"), Dense(1.0)), "Gaussian"),
    (serial(Dense(1.0), FanOut(2)), "branches"),
    (serial(Dense(1.0), FanInSum()), "FanOut"),
    (serial(Dense(1.0), FanOut(2), parallel(Identity())), "2 branches"),
    (serial(Dense(1.0), Activation("relu"), LayerNorm()), "Gaussian"),
    (serial(Dense(1.0, 0.0, "standard"), Activation("relu"), Dense(1.0, 0.0, "standard")),
     "width"),
])
def test_architecture_errors(data, layer, msg):
    with pytest.raises(ArchitectureError, match=msg):
        Network(layer).kernel(data[0], get=("nngp", "ntk"))


@pytest.mark.parametrize("make,msg", [
    (lambda: Dense(0.0), "weight_var"), (lambda: Dense(1.0, -1.0), "bias_var"),
    (lambda: Dense(1.0, parameterization="mup"), "parameterization"),
    (lambda: Dropout(1.0), "rate"), (lambda: FanOut(0), "FanOut"),
    (lambda: repeat(Dense(1.0), -1), "repeat"), (lambda: serial(Dense(1.0), 3), "not a layer"),
])
def test_bad_layers(make, msg):
    with pytest.raises(ArchitectureError, match=msg):
        make()
