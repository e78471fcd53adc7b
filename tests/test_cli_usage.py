"""The command line as people use it (issue 11): defaults, help, progress in logs, total
time, the optimiser."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from nngp_lut import data
from nngp_lut.cli.main import cli

NET = ["--phi", "relu", "--depth", "2", "--weight-var", "1.5", "--bias-var", "0.1"]


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def regression(tmp_path):
    """A 5-feature regression set (Friedman #1), where standardising inputs hurts."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (160, 5))
    y = 10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] \
        + 5 * x[:, 4]
    y = (y - y.mean()) / y.std()
    path = tmp_path / "friedman.npz"
    np.savez(path, x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    return path


def test_standardisation_is_off_by_default_and_warns_on_few_features(regression):
    res = run("predict", "--data", str(regression), *NET, "--json", "-q")
    assert res.exit_code == 0, res.output
    off = json.loads(res.stdout.splitlines()[-1])
    assert off["standardize"] is False and "warning" not in res.stderr
    res = run("predict", "--data", str(regression), *NET, "--json", "-q", "--standardize")
    on = json.loads(res.stdout.splitlines()[-1])
    assert on["standardize"] is True
    assert res.stderr.count("Warning: standardising each input across its 5 features") >= 1
    assert off["mse"] < on["mse"]  # the reason for the default


def test_library_warns_below_the_threshold_only():
    with pytest.warns(data.StandardizeWarning, match="5 features"):
        data.standardize_rows(np.random.default_rng(0).standard_normal((3, 5)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.standardize_rows(np.random.default_rng(0).standard_normal((3, 60)))


def test_paper_run_standardises_and_says_so_and_reports_the_whole_time():
    res = run("predict", "--n-test", "50", "--n-train", "100", "-q")
    assert res.exit_code == 0, res.output
    assert "inputs standardised per example (the paper's convention" in res.stdout
    assert "test MSE" in res.stdout and "one-hot targets minus their training mean" in res.stdout
    assert "s in all: table" in res.stdout
    res = run("predict", "--n-test", "50", "--n-train", "100", "-q", "--no-standardize",
              "--json")
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["standardize"] is False
    t = summary["timings"]
    assert t["wall"] >= t["total"] >= t["kernel"] and t["table"] >= 0


def test_progress_lines_when_stderr_is_not_a_terminal(regression):
    res = run("predict", "--data", str(regression), *NET)
    assert res.exit_code == 0
    lines = res.stderr.splitlines()
    for stage in ("kernel", "cholesky", "predict"):
        assert any(l.startswith(f"{stage}: done in ") and l.endswith(" s") for l in lines), \
            res.stderr


def test_progress_lines_every_few_seconds(monkeypatch):
    from nngp_lut.cli import common

    clock = iter(range(0, 1000, 3))
    monkeypatch.setattr(common.time, "perf_counter", lambda: float(next(clock)))
    out = []
    monkeypatch.setattr(common.click, "echo", lambda text, err=False: out.append(text))
    with common.stage_bars(False) as progress:
        for done in range(0, 11):
            progress("kernel", done, 10)
        progress("cholesky", 1, 4)
    assert out[-1].startswith("cholesky: stopped at 25% after")
    kernel = [l for l in out if l.startswith("kernel")]
    assert kernel[-1] == "kernel: done in 33.0 s"  # from the bars opening: 11 ticks of 3 s
    assert 4 <= len(kernel) - 1 <= 7  # about one line per PROGRESS_INTERVAL (5 s) of 33 s


def test_top_level_help_keeps_every_line_whole():
    res = run("--help")
    listing = res.output.split("Commands:")[1].splitlines()[1:]
    assert len(listing) == len(cli.commands)  # one line each, none wrapped
    for line in listing:
        assert not line.rstrip().endswith("...") and "(Lee et" not in line, line


def test_search_optimize_writes_one_row_per_depth(regression, tmp_path):
    out = tmp_path / "opt.csv"
    args = ["search", "--data", str(regression), "--optimize", "--depths", "1,2",
            "--weight-var-grid", "0.5:4:2", "--bias-var-grid", "0.01:1:2", "--out", str(out)]
    res = run(*args, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["optimize"] and summary["rows"] == 2
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["depth"]) for r in rows] == [1, 2]
    for r in rows:
        assert 0.5 <= float(r["weight_var"]) <= 4 and 0.01 <= float(r["bias_var"]) <= 1
    assert "depth 1: weight_var" in res.stderr and "optimize: done in" in res.stderr
    res = run(*args, "--resume", "--json", "-q")  # every depth done: nothing to optimise
    assert json.loads(res.stdout.splitlines()[-1])["best"] == summary["best"]


def test_search_memory_budget_reaches_the_kernels(regression, tmp_path):
    res = run("search", "--data", str(regression), "--depths", "1,2", "--weight-var-grid",
              "1", "--bias-var-grid", "0.1", "--memory", "100KB", "--out",
              str(tmp_path / "r.csv"), "-q")
    assert res.exit_code == 1 and "memory budget" in res.output and "--memory" in res.output


def test_plot_calibration_has_the_standardisation_flag():
    res = run("plot", "calibration", "--help")
    text = " ".join(res.output.split())
    assert "--standardize / --no-standardize" in text and "Default: off" in text
