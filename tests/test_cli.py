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
