"""Model selection (issue #5): the search against a brute-force loop, resume, the marginal
likelihood optimiser, and the figures' numbers."""

import csv
import math

import numpy as np
import pytest

from nngp_lut import build_table, plots, search
from nngp_lut.gp import NNGPRegressor, one_hot

#: Search rows against the brute-force loop (relative), stated once.  Both use a fixed noise
#: variance of 1e-4: with the paper's 1e-10, K_DD has condition numbers ~1e9 here and the
#: 1e-16 differences between two kernel routes would show up at 1e-7.
TOL = 1e-8
NOISE = 1e-4
GRID = dict(depths=[0, 1, 3], weight_vars=[0.5, 1.5], bias_vars=[0.0, 0.3], jitter=NOISE)


@pytest.fixture
def blobs(rng):
    centers = rng.standard_normal((3, 6)) * 1.5
    y = np.arange(90) % 3
    x = centers[y] + rng.standard_normal((90, 6))
    return x[:60], y[:60], x[60:], y[60:]


def brute_force(x, y, xv, yv, depth, w, b):
    offset = one_hot(y, 3).mean(0)
    model = NNGPRegressor("relu", depth, w, b, jitter=NOISE)
    model.fit(x, one_hot(y, 3) - offset)
    mean = model.predict(xv)
    return dict(val_accuracy=np.mean(np.argmax(mean, 1) == yv),
                val_mse=np.mean((mean - (one_hot(yv, 3) - offset)) ** 2),
                log_marginal_likelihood=model.log_marginal_likelihood(), jitter=model.jitter_)


def test_search_rows_and_best_equal_a_brute_force_loop(blobs):
    x, y, xv, yv = blobs
    rows = search.grid_search(x, y, xv, yv, phi="relu", **GRID)
    assert len(rows) == 12
    for r in rows:
        ref = brute_force(x, y, xv, yv, r["depth"], r["weight_var"], r["bias_var"])
        assert r["val_accuracy"] == ref["val_accuracy"] and r["jitter"] == ref["jitter"]
        assert r["val_mse"] == pytest.approx(ref["val_mse"], rel=TOL)
        assert r["log_marginal_likelihood"] == pytest.approx(ref["log_marginal_likelihood"],
                                                             rel=TOL)
    best = search.best_row(rows)
    top = max(rows, key=lambda r: (r["val_accuracy"], -r["val_mse"]))
    assert best is top


def test_interrupted_search_resumes(blobs, tmp_path, monkeypatch):
    x, y, xv, yv = blobs
    out = tmp_path / "r.csv"
    full = search.grid_search(x, y, xv, yv, phi="relu", **GRID)

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search.grid_search(x, y, xv, yv, phi="relu", **GRID, out=out, progress=stop_after_two)
    with open(out, "a") as f:
        f.write("relu,3,1.5,0.3,0.9")  # a torn last line, as from a kill mid-write
    with pytest.raises(FileExistsError, match="--resume"):
        search.grid_search(x, y, xv, yv, phi="relu", **GRID, out=out)
    scored = []
    real = search.score_setting
    monkeypatch.setattr(search, "score_setting",
                        lambda p, t, d, w, b, *a: scored.append((w, b)) or real(p, t, d, w, b, *a))
    rows = search.grid_search(x, y, xv, yv, phi="relu", **GRID, out=out, resume=True)
    assert scored == [(1.5, 0.0), (1.5, 0.3)]  # only the two unfinished settings
    key = lambda r: (r["depth"], r["weight_var"], r["bias_var"])  # noqa: E731
    assert sorted(map(key, rows)) == sorted(map(key, full))
    for a, b in zip(sorted(rows, key=key), sorted(full, key=key)):
        assert a["val_mse"] == b["val_mse"] or math.isclose(a["val_mse"], b["val_mse"],
                                                            rel_tol=1e-12)
    with open(out, newline="") as f:
        lines = list(csv.reader(f))
    assert tuple(lines[0]) == search.COLUMNS and len(lines) == 13


def test_depths_beyond_the_tables_domain_get_empty_rows(blobs):
    x, y, xv, yv = blobs
    # tanh with bias_var 0 and weight_var 0.1: q^l ~ 0.1^l leaves the domain (1e-6) at l = 6.
    rows = search.grid_search(x, y, xv, yv, phi="tanh", depths=[1, 3, 50],
                              weight_vars=[0.1, 1.0], bias_vars=[0.0], jitter=NOISE)
    by = {(r["depth"], r["weight_var"]): r for r in rows}
    assert math.isnan(by[50, 0.1]["val_mse"]) and math.isnan(by[50, 0.1]["val_accuracy"])
    assert not math.isnan(by[3, 0.1]["val_mse"]) and not math.isnan(by[50, 1.0]["val_mse"])
    assert not math.isnan(search.best_row(rows)["val_mse"])


def test_grid_parsing():
    assert np.allclose(search.parse_grid("0.1:5:30"), np.linspace(0.1, 5, 30))
    assert np.allclose(search.parse_grid("1,2.5"), [1, 2.5])
    assert search.parse_depths("3,1,3") == [1, 3]
    for bad in ("1:2", "a:b:3", "0:1:0"):
        with pytest.raises(ValueError, match="a:b:n"):
            search.parse_grid(bad)


def test_marginal_likelihood_optimum_beats_a_grid(rng):
    x = rng.standard_normal((50, 4))
    y = np.sin(x @ [1.0, -1.0, 0.5, 0.0]) + 0.05 * rng.standard_normal(50)
    opt = search.optimize_marginal_likelihood(x, y, phi="erf", depth=2, weight_var=1.0,
                                              bias_var=0.1, jitter=1e-2)
    grid = [search.log_marginal_likelihood(x, y, phi="erf", depth=2, weight_var=w,
                                           bias_var=b, jitter=1e-2)
            for w in np.geomspace(0.05, 50, 9) for b in np.geomspace(1e-4, 5, 9)]
    assert opt["converged"]
    assert opt["log_marginal_likelihood"] >= max(grid) - 1e-6 * abs(max(grid))
    at = search.log_marginal_likelihood(x, y, phi="erf", depth=2, weight_var=opt["weight_var"],
                                        bias_var=opt["bias_var"], jitter=1e-2)
    assert at == pytest.approx(opt["log_marginal_likelihood"], rel=1e-12)


# --- figures -----------------------------------------------------------------------------------
def test_chi1_closed_forms():
    ws, bs = np.array([0.5, 1.5, 2.5]), np.array([0.1, 1.0])
    chi = plots.chi1("relu", ws, bs)  # E[relu'(u)^2] = 1/2 for every q, fixed point or not
    assert np.allclose(chi, np.broadcast_to(ws[:, None] / 2, chi.shape), rtol=1e-9)
    q = plots.fixed_point("relu", ws, bs)  # q* = b / (1 - w/2) for w < 2, none beyond
    assert np.allclose(q[:2], bs[None, :] / (1 - ws[:2, None] / 2), rtol=1e-9)
    assert np.all(np.isinf(q[2]))
    assert plots.fixed_point("relu", [2.0], [0.0])[0, 0] == 1.0  # every q is fixed
    chi = plots.chi1("erf", ws, bs)
    for i, w in enumerate(ws):
        for j, b in enumerate(bs):
            q = 1.0
            for _ in range(5000):  # closed form E[erf(u)^2] = 2/pi arcsin(2q / (1 + 2q))
                q = b + w * 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q))
            assert chi[i, j] == pytest.approx(w * 4 / np.pi / np.sqrt(1 + 4 * q), rel=1e-6)


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


def test_figures_are_written_with_their_numbers(blobs, tmp_path):
    pytest.importorskip("matplotlib")
    x, y, xv, yv = blobs
    rows = search.grid_search(x, y, xv, yv, phi="relu", **GRID)
    res = plots.phase(rows, 1, tmp_path / "phase.png")
    header, data = read_csv(res["csv"])
    assert (tmp_path / "phase.png").stat().st_size > 1000
    assert header == ["weight_var", "bias_var", "val_accuracy", "chi1", "fixed_point"]
    for r in rows:
        if r["depth"] == 1:
            hit = data[(data[:, 0] == r["weight_var"]) & (data[:, 1] == r["bias_var"])]
            assert hit[0, 2] == r["val_accuracy"] and hit[0, 3] == pytest.approx(
                r["weight_var"] / 2)

    rng = np.random.default_rng(3)
    xt = np.concatenate([x, xv, x + 0.3 * rng.standard_normal(x.shape)])
    yt = np.concatenate([y, yv, y])
    res = plots.calibration(x, y, xt, yt, tmp_path / "cal.png", bin_size=30,
                            standardize=False)
    header, data = read_csv(res["csv"])
    assert header == ["mean_predicted_variance", "mean_squared_error"] and len(data) == 5
    assert res["correlation"] == pytest.approx(np.corrcoef(data[:, 0], data[:, 1])[0, 1])
    assert (tmp_path / "cal.png").stat().st_size > 1000

    res = plots.table_figure("relu", tmp_path / "table.png", n_error=200)
    assert res["max_error"] < 1e-7 and (tmp_path / "table_error.csv").is_file()
    with pytest.raises(ValueError, match="PNG"):
        plots.table_figure("relu", tmp_path / "table.pdf")


def test_phase_draws_the_relu_critical_line_and_marks_no_fixed_point(tmp_path):
    pytest.importorskip("matplotlib")
    # relu's chi_1 = weight_var / 2 crosses 1 at weight_var = 2, where q* ceases to exist.
    rows = [{"phi": "relu", "depth": 1, "weight_var": w, "bias_var": b, "val_accuracy": 0.5,
             "val_mse": 0.1, "log_marginal_likelihood": 0.0, "jitter": 1e-10}
            for w in (1.0, 1.5, 2.5, 3.0) for b in (0.1, 0.5)]
    res = plots.phase(rows, 1, tmp_path / "p.png")
    assert res["critical_line"] and res["no_fixed_point"] == 4
    header, data = read_csv(res["csv"])
    assert np.allclose(data[:, 3], data[:, 0] / 2)
    above, below = data[:, 0] > 2, data[:, 0] < 2
    assert np.all(np.isinf(data[above, 4])) and np.all(np.isfinite(data[below, 4]))


def test_chi1_is_nan_where_there_is_no_fixed_point():
    # softplus grows like relu (E[softplus^2] ~ q/2): at weight_var 3 the variance map has
    # no finite fixed point, and chi_1 is NaN there, not a made-up number.  Only moments
    # are used: a coarse table suffices.
    table = build_table("softplus", variance_min=1e-2, variance_max=1e2, n_variance=24,
                        n_angle=8, n_unequal=6, n_unequal_angle=6)
    q = plots.fixed_point(table, [0.5, 3.0], [0.2])
    assert np.isfinite(q[0, 0]) and np.isinf(q[1, 0])
    chi = plots.chi1(table, [0.5, 3.0], [0.2])
    assert 0 < chi[0, 0] < 1 and np.isnan(chi[1, 0])


def test_calibration_bins():
    v = np.arange(10.0)[::-1]
    e = 2 * v
    bv, be, r = plots.calibration_bins(v, e, bin_size=5)
    assert np.allclose(bv, [2, 7]) and np.allclose(be, [4, 14]) and r == pytest.approx(1)
