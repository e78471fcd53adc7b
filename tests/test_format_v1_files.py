"""Tables written by nngp-lut 0.1.0 in format version 1 (tests/data, made by
tests/data/make_v1_tables.py) keep loading, and still agree with the closed forms."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from nngp_lut import tables
from nngp_lut.kernel import nngp_kernel

DATA = Path(__file__).resolve().parent / "data"
#: A committed file may be off the closed form by at most this many times the error it
#: measured on itself when it was built (random points differ from its own).
SLACK = 3.0


def closed_forms(name, q1, q2, rho):
    """(F, E[phi'(u) phi'(v)]) of DESIGN.md sections 1 and 6."""
    s, c = np.sqrt(q1 * q2), rho * np.sqrt(q1 * q2)
    if name == "relu":
        theta = np.arccos(rho)
        return s / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * rho), \
            (np.pi - theta) / (2 * np.pi)
    return (2 / np.pi * np.arcsin(2 * c / np.sqrt((1 + 2 * q1) * (1 + 2 * q2))),
            4 / (np.pi * np.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * c * c)))


@pytest.mark.parametrize("name", ["erf", "relu"])
def test_committed_v1_table_loads_and_matches_closed_forms(name, tmp_path, rng):
    path = shutil.copy(DATA / f"{name}_format_v1.h5", tmp_path)  # read-only use of a copy
    info = tables.read_info(path)
    assert info["format"] == "nngp-lut table" and info["format_version"] == 1
    assert info["package_version"] == "0.1.0" and info["activation_name"] == name
    table = tables.open_table(path)
    measured = table.metadata["measured_error"]
    lo, hi = (1e-3, 1e2) if name == "erf" else (1e-2, 1e2)
    q1, q2 = np.exp(rng.uniform(np.log(lo), np.log(hi), (2, 400)))
    rho = rng.uniform(-1, 1, 400)
    f, df = closed_forms(name, q1, q2, rho)
    d1 = closed_forms(name, q1, q1, np.ones(400))[0]  # E[phi^2](q1) = F(q1, q1, 1)
    np.testing.assert_allclose(table.second_moment(q1), d1, rtol=SLACK * measured["F"] + 1e-12)
    for args, key in (((q1, q1, rho), "F"), ((q1, q2, rho), "F_unequal")):
        exact = closed_forms(name, *args)[0]
        norm = np.sqrt(closed_forms(name, args[0], args[0], np.ones(400))[0]
                       * closed_forms(name, args[1], args[1], np.ones(400))[0])
        err = np.max(np.abs(table.F(*args) - exact) / norm)
        assert err <= SLACK * measured.get(key, measured["F"]) + 1e-12, (key, err)
    dnorm = np.sqrt(table.derivative_second_moment(q1) * table.derivative_second_moment(q2))
    err = np.max(np.abs(table.dF(q1, q2, rho) - df) / dnorm)
    assert err <= SLACK * measured.get("dF_unequal", measured["dF"]) + 1e-12
    # and it drives the kernel like any table
    x = rng.standard_normal((5, 3))
    assert np.all(np.isfinite(nngp_kernel(x, phi=path, depth=2, weight_var=1.2, bias_var=0.1)))


@pytest.mark.parametrize("name", ["erf", "relu"])
def test_info_describes_a_v1_file(name, tmp_path):
    """``nngp-lut info`` reads a version-1 file (no derivative variance axes: F's)."""
    from click.testing import CliRunner

    from nngp_lut.cli.main import cli

    path = shutil.copy(DATA / f"{name}_format_v1.h5", tmp_path)
    res = CliRunner().invoke(cli, ["info", str(path)])
    assert res.exit_code == 0, res.output
    assert "nngp-lut table v1" in res.output and name in res.output
    grid = tables.open_table(path).metadata["grid"]
    if name == "erf":
        assert f"{grid['n_variance']} x {grid['n_angle']} (equal)" in res.output
        n = grid["n_unequal"]
        assert f"{n} x {n} x {grid['n_unequal_angle']} (unequal)" in res.output
