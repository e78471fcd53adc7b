"""--arch and --kernel on the command line (issue #12): the same numbers as the library,
usage errors for conflicting flags, one-line errors for architectures outside the grammar."""

import numpy as np
import pytest
from click.testing import CliRunner

from nngp_lut.cli.main import cli
from nngp_lut.gp import evaluate
from nngp_lut.kernel import Network, deep_network
from nngp_lut.kernel.arch import parse_arch
from nngp_lut.search import COLUMNS, read_results

RESIDUAL = ("serial(Dense(1.5, 0.1), FanOut(2), parallel(serial(Activation('relu'), "
            "Dense(1.5, 0.1)), Identity()), FanInSum(), LayerNorm(), Dense(1.0, 0.0))")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def files(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((90, 7))
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(int)
    np.savez(tmp_path / "d.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
    np.save(tmp_path / "x.npy", x[:25])
    monkeypatch.chdir(tmp_path)
    return x, y


def test_predict_arch_ntk_equals_the_library(files):
    x, y = files
    res = run("predict", "--data", "d.npz", "--arch", RESIDUAL, "--kernel", "ntk", "--json",
              "-q")
    assert res.exit_code == 0, res.output
    import json
    out = json.loads(res.stdout.strip().splitlines()[-1])
    ref = evaluate(x[:60], y[:60], x[60:], y[60:], network=Network(parse_arch(RESIDUAL)),
                   kernel="ntk")
    assert out["kernel"] == "ntk" and out["arch"] == RESIDUAL.replace("FanOut(2)",
                                                                      "FanOut(n=2)")
    assert out["accuracy"] == pytest.approx(ref.accuracy)
    assert out["mse"] == pytest.approx(ref.mse, rel=1e-9)


def test_kernel_arch_equals_the_shorthand(files):
    arch = "serial(Dense(1.5, 0.1), repeat(serial(Activation('relu'), Dense(1.5, 0.1)), 2))"
    for kind in ("nngp", "ntk"):
        assert run("kernel", "--arch", arch, "--kernel", kind, "--x1", "x.npy", "--out",
                   f"a_{kind}.npy", "-q").exit_code == 0
        assert run("kernel", "--phi", "relu", "--depth", 2, "--weight-var", 1.5,
                   "--bias-var", 0.1, "--kernel", kind, "--x1", "x.npy", "--out",
                   f"b_{kind}.npy", "-q").exit_code == 0
        a, b = np.load(f"a_{kind}.npy"), np.load(f"b_{kind}.npy")
        np.testing.assert_array_equal(a, b)
        ref = deep_network("relu", 2, 1.5, 0.1).layerwise(files[0][:25], get=kind)
        np.testing.assert_allclose(a, ref, rtol=0, atol=1e-7 * np.abs(ref).max())


@pytest.mark.parametrize("args,code,msg", [
    (["kernel", "--arch", "serial(Dense(1.0))", "--depth", "2"], 2, "drop --depth"),
    (["kernel", "--phi", "relu", "--depth", "2"], 2, "--weight-var"),
    (["predict", "--data", "d.npz", "--arch", "serial(Dense(1.0))", "--phi", "tanh"], 2,
     "drop --phi"),
    (["kernel", "--arch", "serial(Dense(1.0), __import__('os'))"], 1, "__import__"),
    (["kernel", "--arch", "serial(Dense(1.0), Activation('relu').table)"], 1, "not allowed"),
    (["kernel", "--arch", "serial(Activation('relu'), Dense(1.0))"], 1, "Gaussian"),
    (["kernel", "--arch", "@missing.txt"], 1, "missing.txt"),
    (["search", "--data", "d.npz", "--optimize", "--kernel", "ntk"], 2, "--kernel ntk"),
])
def test_bad_flags_and_architectures(files, args, code, msg):
    if args[0] == "kernel" and "--x1" not in args:
        args = args + ["--x1", "x.npy", "--out", "k.npy"]
    res = run(*args)
    assert res.exit_code == code, res.output
    assert msg in res.output
    assert "Traceback" not in res.output


def test_search_scores_the_ntk_and_reads_old_results(files):
    res = run("search", "--data", "d.npz", "--phi", "relu", "--depths", "1,2",
              "--weight-var-grid", "1:2:2", "--bias-var-grid", "0.1", "--n-val", 15,
              "--kernel", "ntk", "--out", "r.csv", "-q")
    assert res.exit_code == 0, res.output
    rows, whole = read_results("r.csv")
    assert whole and len(rows) == 4 and {r["kernel"] for r in rows} == {"ntk"}
    assert all(np.isnan(r["log_marginal_likelihood"]) for r in rows)
    assert all(0 <= r["val_accuracy"] <= 1 for r in rows)
    # An NNGP search cannot resume the NTK's file.
    res = run("search", "--data", "d.npz", "--phi", "relu", "--depths", "1,2",
              "--weight-var-grid", "1:2:2", "--bias-var-grid", "0.1", "--n-val", 15,
              "--out", "r.csv", "--resume", "-q")
    assert res.exit_code == 1 and "NTK" in res.output
    # A file written before the kernel column reads as the NNGP's.
    with open("old.csv", "w") as f:
        f.write(",".join(COLUMNS[:-1]) + "\nrelu,1,1.0,0.1,0.9,0.2,-10.5,1e-10\n")
    (row,), whole = read_results("old.csv")
    assert row["kernel"] == "nngp" and row["log_marginal_likelihood"] == -10.5


def test_layers_print_as_architectures_that_parse_back():
    for text in [RESIDUAL, "serial(Dense(2.0, None, parameterization='standard', width=8), "
                 "Activation('x*tanh(x)'), FanOut(3), parallel(Identity(), Dropout(0.1), "
                 "LayerNorm()), FanInConcat())"]:
        net = parse_arch(text)
        assert parse_arch(repr(net)) == net
