"""The network options on every command that takes a network (issue 20, items 6 and 7):
--arch or the --phi/--depth/--weight-var/--bias-var shorthand, declared once with one help
text each; ``mc`` and ``compare`` take both, and ``compare`` trains convolutional networks.

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
COMMANDS = ("predict", "kernel", "mc", "compare")


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


def test_mc_and_compare_need_a_network():
    for command in ("mc", "compare"):
        res = run(command)
        assert res.exit_code == 2 and "give the network: --arch, or --phi" in res.output


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three classes of 6 x 6 one-channel images (bright left, middle or right columns),
    stored as images: the file gives their shape."""
    rng = np.random.default_rng(0)

    def split(n):
        y = np.arange(n) % 3
        x = rng.normal(scale=0.3, size=(n, 6, 6, 1))
        for c in range(3):
            x[y == c, :, 2 * c:2 * c + 2, 0] += 1.0
        return x, y

    (x, y), (xv, yv), (xt, yt) = split(18), split(9), split(9)
    path = tmp_path_factory.mktemp("cnn") / "images.npz"
    np.savez(path, x_train=x, y_train=y, x_val=xv, y_val=yv, x_test=xt, y_test=yt)
    flat = path.with_name("flat.npz")
    np.savez(flat, x_train=x.reshape(18, -1), y_train=y, x_val=xv.reshape(9, -1), y_val=yv,
             x_test=xt.reshape(9, -1), y_test=yt)
    return path, flat


CNN = ("serial(Conv(1.0, 0.1, filter_shape=(2, 2)), Activation('relu'), Flatten(), "
       "Dense(1.0, 0.0))")


def test_compare_trains_a_cnn_on_stored_images_and_on_rows_with_shape(images, tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    stored, flat = images
    common = ["--arch", CNN, "--widths", "4,8", "--seeds", "1", "--steps", "6",
              "--batch-size", "18", "--quiet", "--json"]
    res = run("compare", "--data", stored, *common)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    nets = [r for r in out["rows"] if r["model"] == "network"]
    assert [(r["width"], r["seed"]) for r in nets] == [(4, 0), (8, 0)]
    assert all(np.isfinite(r["test_mse"]) for r in out["rows"])
    assert {r["model"] for r in out["rows"]} == {"network", "nngp", "ntk"}
    assert "NNGP" in res.output and "NTK-GP" in res.output
    # the same images as flattened rows: --shape gives them back their shape
    res = run("compare", "--data", flat, "--shape", "6,6,1", "--no-gp", *common)
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout.strip().splitlines()[-1])["rows"]
    assert [r["test_mse"] for r in again] == [r["test_mse"] for r in nets]
    # without it, rows cannot feed a convolution: one line, exit 1
    res = run("compare", "--data", flat, "--no-gp", *common)
    assert res.exit_code == 1 and "(N, H, W, C)" in res.output
    assert "Traceback" not in res.output
    # --shape with a network of vectors is a usage error
    res = run("compare", "--data", flat, "--shape", "6,6,1", *SHORTHAND, "--quiet")
    assert res.exit_code == 2 and "--shape is for networks with positions" in res.output
