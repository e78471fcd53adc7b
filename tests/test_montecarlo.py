"""Finite random networks (JAX) against the infinite-width NNGP and NTK.

Small on purpose: 8 standardised inputs of dimension 6, widths up to 512, a few draws.  The
bounds come from the 1/sqrt(width) law: a relative error e(n) ~ C / sqrt(n * draws), C of
order 1 to 5 here (measured at widths 64..4096 in bench/bench_montecarlo.py), so at n = 512
and 8 draws e ~ 0.02..0.08; the bound 0.15 leaves about a factor of two for the spread of
one sample.  The slope is fitted to the rms-over-draws error (montecarlo.convergence), whose
relative spread with 8 draws is ~0.2, i.e. ~0.13 in the slope over 64..512 (log-spacing
ln 2, four widths); the interval [-0.95, -0.15] is -1/2 +- 3.5 of those.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from nngp_lut import finite_network as fn
from nngp_lut import montecarlo as mc
from nngp_lut.activations import _FUNCTIONS, from_callable, get_activation
from nngp_lut.kernel import (Activation, ArchitectureError, Dense, FanInSum, FanOut,
                             Identity, LayerNorm, Network, parallel, repeat, serial)

WIDTHS = (64, 128, 256, 512)
DRAWS = 8
#: Largest relative error at width 512 with 8 draws (see the module docstring).
ERROR_AT_512 = 0.15
#: The fitted slope of the rms error over WIDTHS.
SLOPE_RANGE = (-0.95, -0.15)


def deep(phi, w, b, depth=3):
    return serial(Dense(w, b), repeat(serial(Activation(phi), Dense(w, b)), depth))


def residual():
    """A residual block with LayerNorm, then a readout Dense."""
    return serial(Dense(1.0, 0.0), FanOut(2),
                  parallel(serial(Activation("relu"), Dense(1.0, 0.0)), Identity()),
                  FanInSum(), LayerNorm(), Dense(1.0, 0.1))


NETWORKS = {"relu": deep("relu", 2.0, 0.1), "tanh": deep("tanh", 1.5, 0.1),
            "residual+layernorm": residual()}


@pytest.fixture(scope="module")
def x():
    a = np.random.default_rng(3).standard_normal((8, 6))
    return (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)


@pytest.mark.parametrize("name", NETWORKS)
def test_empirical_kernels_approach_the_infinite_ones(name, x):
    rows, slopes = mc.convergence(NETWORKS[name], x, WIDTHS, DRAWS, seed=0)
    assert [r["width"] for r in rows] == list(WIDTHS)
    for kind in ("nngp", "ntk"):
        assert rows[-1][f"{kind}_error"] < ERROR_AT_512, (kind, rows)
        assert SLOPE_RANGE[0] < slopes[f"{kind}_rms"] < SLOPE_RANGE[1], (kind, slopes, rows)
        assert rows[-1][f"{kind}_rms"] < rows[0][f"{kind}_rms"]


def test_standard_parameterisation_matches_its_rule(x):
    """The standard parameterisation's NTK grows with the widths (n_in K + 1 + w Theta):
    the empirical NTK of a network with declared widths matches layers.py's rule, and the
    NNGP is the NTK parameterisation's."""
    n = 256
    std = serial(*[layer for _ in range(2) for layer in
                   (Dense(1.5, 0.1, "standard", width=n), Activation("relu"))],
                 Dense(1.5, 0.1, "standard", width=n))
    ntk_param = serial(Dense(1.5, 0.1), Activation("relu"), Dense(1.5, 0.1),
                       Activation("relu"), Dense(1.5, 0.1))
    k_std, t_std = Network(std).kernel(x, get=("nngp", "ntk"))
    k_ntk, t_ntk = Network(ntk_param).kernel(x, get=("nngp", "ntk"))
    np.testing.assert_allclose(k_std, k_ntk, rtol=1e-12)
    assert np.linalg.norm(t_std) > 50 * np.linalg.norm(t_ntk)  # a different kernel indeed
    emp = mc.empirical_kernels(std, x, width=8, draws=DRAWS, seed=1)  # width: all declared
    assert mc.relative_error(emp["nngp"], k_std) < ERROR_AT_512
    assert mc.relative_error(emp["ntk"], t_std) < ERROR_AT_512
    assert mc.relative_error(emp["ntk"], t_ntk) > 10  # the other rule is far off


def test_seeds_reproduce_exactly(x):
    net = NETWORKS["tanh"]
    a = mc.empirical_kernels(net, x, width=32, draws=2, seed=5)
    b = mc.empirical_kernels(net, x, width=32, draws=2, seed=5)
    c = mc.empirical_kernels(net, x, width=32, draws=2, seed=6)
    for kind in ("nngp", "ntk"):
        np.testing.assert_array_equal(a[kind], b[kind])
        assert not np.array_equal(a[kind], c[kind])
        np.testing.assert_allclose(a[kind], a[kind].T, rtol=1e-12, atol=1e-14)
    # x1 against x2 is the off-diagonal block of the same networks.
    cross = mc.empirical_kernels(net, x[:3], x[3:], width=32, draws=2, seed=5)
    np.testing.assert_array_equal(cross["ntk"], a["ntk"][:3, 3:])
    np.testing.assert_array_equal(cross["nngp"], a["nngp"][:3, 3:])


def test_one_readout_unit_ntk_is_the_gradient_inner_product(x):
    """The jvp-of-vjp NTK equals J J^T from the full Jacobian (jax.jacrev)."""
    import jax
    import jax.numpy as jnp

    net = serial(Dense(1.5, 0.1), Activation("tanh"), Dense(1.5, 0.1, width=1))
    emp = mc.empirical_kernels(net, x, width=16, draws=1, seed=2, get="ntk")["ntk"]
    finite = fn.finite_network(net, 16)
    with fn.x64():
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(2), 16), 0)
        params, _ = finite.init(key, x.shape[1])
        jac = jax.jacrev(lambda p: finite.apply(p, jnp.asarray(x))[:, 0])(params)
        flat = np.concatenate([np.asarray(j).reshape(len(x), -1)
                               for j in jax.tree_util.tree_leaves(jac)], axis=1)
    np.testing.assert_allclose(emp, flat @ flat.T, rtol=1e-10)


def test_activations_in_jax_agree_with_the_numba_ones():
    u = np.linspace(-3, 3, 41)
    names = [n for n in mc.BUILTINS if n != "step"] + [
        "leaky_relu(slope=0.2)", "x*tanh(x)", "maximum(x, 0.1*x) + heaviside(x)",
        "sign(x) * sqrt(abs(x)) + erfc(x) - arctan(x) + exp(-x**2) * pi"]
    with fn.x64():
        for name in names:
            phi = mc.jax_activation(Activation(name))
            np.testing.assert_allclose(np.asarray(phi(u)), get_activation(name)(u),
                                       rtol=1e-12, atol=1e-14, err_msg=name)


def test_expression_functions_all_have_a_jax_form():
    namespace = fn._expression_namespace()
    assert set(_FUNCTIONS) <= set(namespace)
    assert all(callable(namespace[name]) for name in _FUNCTIONS)


def test_what_cannot_be_sampled_is_refused(x):
    own = from_callable(lambda v: v * v, "square")
    with pytest.raises(ArchitectureError, match="no JAX form"):
        mc.empirical_kernels(serial(Dense(1.0), Activation(own), Dense(1.0)), x, width=4,
                             draws=1, seed=0)
    with pytest.raises(ArchitectureError, match="branches"):
        mc.empirical_kernels(serial(Dense(1.0), FanOut(2)), x, width=4, draws=1, seed=0)
    with pytest.raises(ValueError, match="width"):
        mc.empirical_kernels(Dense(1.0), x, width=0, draws=1, seed=0)


def test_loglog_slope():
    w = np.array([64, 256, 1024, 4096])
    assert mc.loglog_slope(w, 3.0 / np.sqrt(w)) == pytest.approx(-0.5)


# --- the command line ------------------------------------------------------------------------
ARCH = "serial(Dense(2, 0.1), Activation('relu'), Dense(2, 0.1))"


def test_cli_mc_and_plot(tmp_path):
    from nngp_lut.cli.main import cli

    runner = CliRunner()
    rows = tmp_path / "rows.csv"
    args = ["mc", "--arch", ARCH, "--widths", "16,32,64", "--draws", "2", "--n-inputs", "4",
            "--out", str(rows), "--quiet"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "NNGP error" in res.output and "slope" in res.output and rows.is_file()
    res = runner.invoke(cli, args)
    assert res.exit_code == 1 and "--force" in res.output
    res = runner.invoke(cli, args + ["--force", "--json"])
    assert res.exit_code == 0
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert [r["width"] for r in summary["rows"]] == [16, 32, 64]
    assert set(summary["slopes"]) == {"nngp_error", "nngp_rms", "ntk_error", "ntk_rms"}
    arch_file = tmp_path / "net.arch"
    arch_file.write_text(ARCH)
    res = runner.invoke(cli, ["mc", "--arch", f"@{arch_file}", "--widths", "8",
                              "--draws", "1", "--n-inputs", "3", "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    pytest.importorskip("matplotlib")
    res = runner.invoke(cli, ["plot", "convergence", "--results", str(rows), "--out",
                              str(tmp_path / "conv.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "conv.png").is_file() and (tmp_path / "conv.csv").is_file()
    res = runner.invoke(cli, ["plot", "convergence", "--results", str(rows), "--out",
                              str(tmp_path / "rows.png")])
    assert res.exit_code == 1 and "its input" in res.output


@pytest.mark.parametrize("arch, message", [
    ("serial(Dense(2), __import__('os'))", "__import__"),
    ("serial(Dense(2), FanOut(2))", "branches"),
    ("@/nonexistent/net.arch", "cannot read"),
])
def test_cli_mc_bad_arch_is_one_line(arch, message):
    from nngp_lut.cli.main import cli

    res = CliRunner().invoke(cli, ["mc", "--arch", arch, "--widths", "8", "--draws", "1",
                                   "--n-inputs", "3", "--quiet"])
    assert res.exit_code == 1 and message in res.output
    assert res.output.count("\n") == 1 and "Traceback" not in res.output


def test_cli_mc_without_jax(monkeypatch):
    import nngp_lut
    from nngp_lut.cli.main import cli

    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.delitem(sys.modules, "nngp_lut.montecarlo")
    monkeypatch.delattr(nngp_lut, "montecarlo")
    res = CliRunner().invoke(cli, ["mc", "--arch", ARCH, "--widths", "8", "--draws", "1",
                                   "--quiet"])
    assert res.exit_code == 1 and 'pip install "nngp-lut[finite]"' in res.output
    assert res.output.count("\n") == 1


def test_import_without_jax_names_the_extra_and_the_engine_never_needs_jax():
    code = ("import sys; sys.modules['jax'] = None\n"
            "import numpy as np, nngp_lut, nngp_lut.kernel, nngp_lut.kernel.arch\n"
            "from nngp_lut.kernel import Network\n"
            "net = Network(nngp_lut.kernel.arch.parse_arch("
            "\"serial(Dense(2, 0.1), Activation('relu'), Dense(2, 0.1))\"))\n"
            "net.kernel(np.eye(3) + 1, get=('nngp', 'ntk'))\n"
            "import nngp_lut.montecarlo\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0
    assert 'ImportError: nngp_lut.montecarlo needs JAX: pip install "nngp-lut[finite]"' \
        in res.stderr, res.stderr
