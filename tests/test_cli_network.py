"""The network options on every command that takes a network (issue 20, item 7): --arch
or the --phi/--depth/--weight-var/--bias-var shorthand, declared once with one help text
each; ``mc`` takes both.

Small on purpose: widths 4 to 16, a handful of inputs, a few steps.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from nngp_lut.cli.main import cli

SHORTHAND = ["--phi", "relu", "--depth", "2", "--weight-var", "1.5", "--bias-var", "0.1"]
#: The network the shorthand above describes (kernel.deep_network), as --arch text.
ARCH = "serial(Dense(1.5, 0.1), repeat(serial(Activation('relu'), Dense(1.5, 0.1)), 2))"
NETWORK_FLAGS = ("--arch", "--phi", "--table", "--depth", "--weight-var", "--bias-var")
COMMANDS = ("predict", "kernel", "mc")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_every_network_command_has_the_same_network_options():
    helps = {}
    for name in COMMANDS + ("search",):
        for param in cli.commands[name].params:
            flag = param.opts[0]
            if flag in NETWORK_FLAGS and not (name == "search" and flag == "--arch"):
                helps.setdefault(flag, set()).add(param.help)
                assert param.required is False
    assert set(helps) == set(NETWORK_FLAGS)
    assert all(len(texts) == 1 for texts in helps.values()), helps


def test_mc_shorthand_gives_the_rows_of_the_same_arch():
    pytest.importorskip("jax")
    common = ["--widths", "4,8", "--draws", "2", "--n-inputs", "3", "--quiet", "--json"]
    short = run("mc", *SHORTHAND, *common)
    assert short.exit_code == 0, short.output
    arch = run("mc", "--arch", ARCH, *common)
    assert arch.exit_code == 0, arch.output
    rows = [json.loads(r.stdout.strip().splitlines()[-1])["rows"] for r in (short, arch)]
    assert rows[0] == rows[1]
    assert [r["width"] for r in rows[0]] == [4, 8]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flags, message", [
    (["--arch", ARCH, "--depth", "2"], "--arch describes the whole network: drop --depth"),
    (["--phi", "relu", "--depth", "2"], "give --weight-var, --bias-var, or the whole network"),
])
def test_conflicting_or_missing_network_flags_are_usage_errors(command, flags, message,
                                                                tmp_path):
    extra = {"kernel": ["--x1", tmp_path / "x.npy", "--out", tmp_path / "k.npy"],
             "predict": ["--data", tmp_path / "d.npz"]}.get(command, [])
    res = run(command, *flags, *extra)
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0]  # one line
    assert "Traceback" not in res.output
    assert not (tmp_path / "k.npy").exists()


def test_mc_needs_a_network():
    res = run("mc")
    assert res.exit_code == 2 and "give the network: --arch, or --phi" in res.output
