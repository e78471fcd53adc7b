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


def _options(group=None, path=()):
    """(command path, option) of every option of every command, subcommands included."""
    import click

    group = group or cli
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _options(cmd, (*path, name))
        else:
            yield from (((*path, name), p) for p in cmd.params if isinstance(p, click.Option))


#: Flags whose meaning differs between commands (what --out writes, what --memory bounds,
#: --phi of plot phase, --depth of plot phase, --arch of search, ...): their help texts may.
MEANING_DIFFERS = {"--out", "--force", "--memory", "--data", "--json", "--phi", "--depth",
                   "--arch", "--standardize", "--quiet", "--resume", "--results",
                   "--reference", "--widths"}


def test_one_vocabulary():
    """Issue 20, item 7: a flag has the same aliases everywhere, and one help text where it
    means the same; --quiet's help starts the same way everywhere."""
    aliases, helps = {}, {}
    for path, opt in _options():
        aliases.setdefault(opt.opts[0], set()).add((tuple(opt.opts), tuple(opt.secondary_opts)))
        helps.setdefault(opt.opts[0], set()).add(opt.help)
    assert {flag: a for flag, a in aliases.items() if len(a) > 1} == \
        {"--standardize": {(("--standardize",), ()), (("--standardize",), ("--no-standardize",))}}
    shared = {flag: h for flag, h in helps.items() if flag not in MEANING_DIFFERS}
    assert {flag: h for flag, h in shared.items() if len(h) > 1} == {}
    assert all(h.startswith("No progress on stderr") for h in helps["--quiet"])


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
    assert '"format_version": 2' in res.output


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
    (["--x1", "words.csv"], 1, "is not a number"),
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


# --- predict -----------------------------------------------------------------------------------
def last_json(res):
    import json

    return json.loads(res.stdout.strip().splitlines()[-1])


def test_predict_default_is_the_papers_setting_on_the_sample(tmp_path):
    import numpy as np

    from nngp_lut.data import load_dataset
    from nngp_lut.gp import evaluate

    out = tmp_path / "pred.npz"
    res = run("predict", "--n-test", "300", "--json", "--quiet", "--variance", "--out",
              str(out))
    assert res.exit_code == 0, res.output
    summary = last_json(res)
    assert (summary["phi"], summary["depth"], summary["weight_var"],
            summary["bias_var"]) == ("relu", 20, 1.45, 0.28)
    assert summary["n_train"] == 1000 and summary["n_test"] == 300
    d = load_dataset()
    ref = evaluate(d.x_train, d.y_train, d.x_test[:300], d.y_test[:300], phi="relu",
                   depth=20, weight_var=1.45, bias_var=0.28, standardize=True)
    assert summary["accuracy"] == ref.accuracy and summary["jitter"] == ref.jitter
    assert summary["mse"] == pytest.approx(ref.mse, rel=1e-9)
    with np.load(out) as z:
        assert np.mean(z["predicted"] == z["y_test"]) == ref.accuracy
        assert z["variance"].shape == (300,) and np.all(z["variance"] > 0)


def test_predict_out_of_core_cleans_its_scratch(tmp_path):
    # 1000 training images under a 7MB budget: out of core, tiles of ~350.
    res = run("predict", "--n-test", "200", "--memory", "7MB", "--scratch",
              str(tmp_path / "s"), "--json", "-q")
    assert res.exit_code == 0, res.output
    in_ram = run("predict", "--n-test", "200", "--json", "-q")
    assert last_json(res)["accuracy"] == last_json(in_ram)["accuracy"]
    assert last_json(res)["mse"] == pytest.approx(last_json(in_ram)["mse"], rel=1e-9)
    assert list((tmp_path / "s").iterdir()) == []


@pytest.fixture
def datasets(tmp_path):
    import numpy as np

    rng = np.random.default_rng(1)
    good = dict(x_train=rng.standard_normal((40, 5)), y_train=np.arange(40) % 4,
                x_test=rng.standard_normal((10, 5)), y_test=np.arange(10) % 4)
    variants = {
        "good": {},
        "nan": dict(x_test=np.where(good["x_test"] > 1, np.nan, good["x_test"])),
        "labels": dict(y_train=np.arange(39) % 4),
        "features": dict(x_test=rng.standard_normal((10, 4))),
        # A rank-2 linear kernel at weight_var 1e16: rounding swamps even jitter 0.1.
        "singular": dict(x_train=rng.standard_normal((60, 2)), y_train=np.arange(60) % 4,
                         x_test=rng.standard_normal((5, 2)), y_test=np.arange(5) % 4),
    }
    for name, change in variants.items():
        np.savez(tmp_path / f"{name}.npz", **{**good, **change})
    return tmp_path


NET = ["--phi", "relu", "--depth", "2", "--weight-var", "1.5", "--bias-var", "0.1"]


@pytest.mark.parametrize("data,extra,code,msg", [
    ("nan", [], 1, "NaN"),
    ("labels", [], 1, "y_train has 39 rows but x_train has 40"),
    ("features", [], 1, "features"),
    ("singular", ["--depth", "0", "--weight-var", "1e16", "--no-standardize"], 1,
     "not positive definite even with jitter 0.1"),
    ("good", ["--memory", "1KB"], 1, "--memory"),
    ("good", ["--n-train", "30"], 1, "divisible"),
    ("good", ["--jitter", "lots"], 1, "jitter"),
    ("missing", [], 1, "no such file"),
])
def test_predict_errors(datasets, monkeypatch, data, extra, code, msg):
    monkeypatch.chdir(datasets)
    res = run("predict", "--data", f"{data}.npz", *NET, *extra, "-q", "--out", "p.npz")
    assert res.exit_code == code, res.output
    assert msg in res.output and "Traceback" not in res.output
    assert len([l for l in res.output.splitlines() if l.startswith("Error")]) == 1
    assert not (datasets / "p.npz").exists()


def test_predict_usage(datasets, monkeypatch):
    monkeypatch.chdir(datasets)
    res = run("predict", "--data", "good.npz", "--phi", "relu")
    assert res.exit_code == 2 and "--depth" in res.output
    res = run("predict", "--data", "good.npz", *NET, "--json", "-q")
    assert res.exit_code == 0 and last_json(res)["n_train"] == 40


def test_predict_checks_free_disk_before_starting(tmp_path, monkeypatch):
    import shutil

    from nngp_lut import linalg

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(linalg.shutil, "disk_usage", lambda p: usage._replace(free=10**6))
    res = run("predict", "--n-test", "10", "--memory", "7MB", "--scratch", str(tmp_path),
              "-q")
    assert res.exit_code == 1 and "GB free" in res.output
    assert list(tmp_path.iterdir()) == []


# --- search and plot ---------------------------------------------------------------------------
def test_search_resume_and_plots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["search", "--n-train", "100", "--n-val", "100", "--depths", "1,2",
            "--weight-var-grid", "1:2:2", "--bias-var-grid", "0:0.2:2", "--out", "r.csv"]
    res = run(*args, "--json", "-q")
    assert res.exit_code == 0, res.output
    summary = last_json(res)
    assert summary["rows"] == 8 and summary["n_train"] == 100 and summary["n_val"] == 100
    assert 0 <= summary["test_accuracy"] <= 1
    res = run(*args, "-q")
    assert res.exit_code == 1 and "--resume" in res.output
    res = run(*args, "--resume", "--json", "-q")
    assert res.exit_code == 0 and last_json(res)["best"] == summary["best"]
    pytest.importorskip("matplotlib")
    res = run("plot", "phase", "--results", "r.csv", "--depth", "2", "--out", "phase.png")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "phase.png").is_file() and (tmp_path / "phase.csv").is_file()
    res = run("plot", "calibration", "--n-train", "100", "--n-test", "300", "--out",
              "cal.png", "-q")
    assert res.exit_code == 0 and "correlation" in res.output
    res = run("plot", "table", "--phi", "relu", "--out", "t.png")
    assert res.exit_code == 0 and (tmp_path / "t.csv").is_file()
    res = run("plot", "phase", "--results", "r.csv", "--depth", "7", "--out", "p.png")
    assert res.exit_code == 1 and "depth 7" in res.output
