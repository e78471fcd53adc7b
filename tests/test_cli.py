"""The command line: exit codes, one-line errors, help text, README agreement."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from nngp_lut import __version__
from nngp_lut.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--n-variance", "8", "--n-angle", "8", "--variance-min", "0.1", "--variance-max", "10"]


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_version_and_help():
    assert run("--version").output.strip().endswith(__version__)
    for cmd in cli.commands.values():
        assert cmd.help, f"{cmd.name} has no help text"
        res = run(cmd.name, "--help")
        assert res.exit_code == 0
        for param in cmd.params:
            if isinstance(param, __import__("click").Option) and param.name != "help":
                assert param.help, f"{cmd.name} {param.opts} has no help"


def test_every_command_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in cli.commands:
        assert re.search(rf"nngp-lut {name}\b", readme), name


def test_build_then_info(tmp_path):
    out = tmp_path / "relu.h5"
    res = run("build", "--phi", "relu", "--out", str(out), "--quiet")
    assert res.exit_code == 0 and out.is_file()
    res = run("build", "--phi", "relu", "--out", str(out), "--quiet")
    assert res.exit_code == 1 and "--force" in res.output
    assert run("build", "--phi", "relu", "--out", str(out), "--quiet", "--force").exit_code == 0
    res = run("info", str(out))
    assert res.exit_code == 0 and "relu" in res.output
    res = run("info", str(out), "--json")
    assert '"format_version": 1' in res.output


@pytest.mark.parametrize("args,code", [
    (["build", "--phi", "__import__('os')", "--out", "X.h5"], 1),
    (["build", "--phi", "log(x)", "--out", "X.h5", *FAST], 1),
    (["build", "--phi", "tanh", "--variance-min", "5", "--variance-max", "1"], 2),
    (["build", "--phi", "tanh", "--n-angle", "2"], 2),
    (["build"], 2),
    (["info", "nothing.h5"], 1),
])
def test_errors_are_one_line(args, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.h5").write_text("x")
    res = run(*args)
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    assert len([l for l in res.output.splitlines() if l.startswith("Error")]) == 1
    assert not (tmp_path / "X.h5").exists()


def test_info_on_damaged_file(tmp_path):
    p = tmp_path / "garbage.h5"
    p.write_text("x")
    res = run("info", str(p))
    assert res.exit_code == 1 and "not an HDF5 file" in res.output


@pytest.fixture
def inputs(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((20, 6))
    np.save(tmp_path / "a.npy", a)
    np.savetxt(tmp_path / "b.csv", a[:7], delimiter=",")
    np.save(tmp_path / "nan.npy", np.where(a > 2, np.nan, a))
    np.save(tmp_path / "wide.npy", np.ones((3, 9)))
    np.save(tmp_path / "empty.npy", np.ones((0, 6)))
    (tmp_path / "words.csv").write_text("a,b\nc,d\n")
    return tmp_path


KERNEL = ["kernel", "--phi", "relu", "--depth", "2", "--weight-var", "1.5", "--bias-var", "0.1"]


def test_kernel_command(inputs):
    import h5py
    import numpy as np

    from nngp_lut.kernel import nngp_kernel

    a = np.load(inputs / "a.npy")
    res = run(*KERNEL, "--x1", str(inputs / "a.npy"), "--out", str(inputs / "k.npy"), "-q")
    assert res.exit_code == 0, res.output
    expected = nngp_kernel(a, phi="relu", depth=2, weight_var=1.5, bias_var=0.1)
    np.testing.assert_array_equal(np.load(inputs / "k.npy"), expected)
    res = run(*KERNEL, "--x1", str(inputs / "a.npy"), "--x2", str(inputs / "b.csv"),
              "--all-depths", "--out", str(inputs / "k.h5"), "-q")
    assert res.exit_code == 0, res.output
    with h5py.File(inputs / "k.h5") as h5:
        assert h5["kernel"].shape == (3, 20, 7)
        np.testing.assert_allclose(h5["kernel"][2], expected[:, :7], rtol=1e-12)


@pytest.mark.parametrize("extra,code,msg", [
    (["--x1", "nan.npy"], 1, "NaN"),
    (["--x1", "a.npy", "--x2", "wide.npy"], 1, "features"),
    (["--x1", "empty.npy"], 1, "empty"),
    (["--x1", "words.csv"], 1, "cannot read"),
    (["--x1", "missing.npy"], 1, "no such file"),
    (["--x1", "a.npy", "--table", "t.h5"], 2, "exactly one"),
    (["--x1", "a.npy", "--memory", "lots"], 1, "size"),
])
def test_kernel_errors(inputs, monkeypatch, extra, code, msg):
    monkeypatch.chdir(inputs)
    res = run(*KERNEL, *extra, "--out", "k.npy", "-q")
    assert res.exit_code == code, res.output
    assert msg in res.output and "Traceback" not in res.output
    assert not (inputs / "k.npy").exists()
