"""The paper's figures, each written as a PNG and the numbers behind it as CSV.

* calibration (Lee et al. 2018, Figure 2): predicted variance against realised squared error,
  test points binned by predicted variance in groups of 100;
* phase (Figure 3): validation accuracy over the (weight_var, bias_var) grid at one depth
  with the order-to-chaos line chi_1 = weight_var E[phi'(u)^2] = 1 at the fixed point q* of
  q = bias_var + weight_var E[phi(u)^2], u ~ N(0, q) (Schoenholz et al. 2017);
* table: F_phi(q, q, rho) over the table's domain and its measured interpolation error;
* convergence: the error of finite random networks' kernels against the infinite-width ones
  over width, log-log, with a reference slope of -1/2 (``nngp-lut mc``; Yang 2019, GP4A).

matplotlib is an optional extra (``pip install "nngp-lut[plot]"``); the numbers are computed
without it.
"""

import csv
import math
from pathlib import Path

import numpy as np

from .gp import evaluate, regression_targets
from .tables import Integrator, as_table, random_points

#: The paper's Figure 2 setting.
CALIBRATION_SETTING = dict(depth=3, weight_var=2.0, bias_var=0.2)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError('plots need matplotlib: pip install "nngp-lut[plot]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, png):
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def _write_csv(path, header, columns):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in zip(*columns):
            w.writerow([repr(float(v)) for v in row])


def _outputs(out):
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: the figure is written as PNG (name it *.png)")
    return out, out.with_suffix(".csv")


# --- calibration (Figure 2) ------------------------------------------------------------------
def calibration_bins(variance, squared_error, bin_size=100):
    """Test points sorted by predicted variance, in consecutive groups of ``bin_size``:
    (mean predicted variance, mean squared error) per group, and their correlation."""
    order = np.argsort(variance, kind="stable")
    groups = len(order) // bin_size
    if groups < 2:
        raise ValueError(f"calibration needs at least {2 * bin_size} test points "
                         f"(bins of {bin_size}); got {len(order)}")
    idx = order[: groups * bin_size].reshape(groups, bin_size)
    v, e = variance[idx].mean(axis=1), squared_error[idx].mean(axis=1)
    return v, e, float(np.corrcoef(v, e)[0, 1])


def calibration(x_train, y_train, x_test, y_test, out, *, phi="relu", bin_size=100,
                standardize=True, progress=None, **setting):
    """Write the calibration figure and CSV; returns {"correlation", "bins", "png", "csv"}.

    ``setting`` (depth, weight_var, bias_var) defaults to the paper's Figure 2 setting.
    """
    png, table_csv = _outputs(out)
    setting = {**CALIBRATION_SETTING, **setting}
    res = evaluate(x_train, y_train, x_test, y_test, phi=phi, standardize=standardize,
                   variance=True, progress=progress, **setting)
    _, target = regression_targets(y_train, y_test)
    sq_err = np.mean((res.mean - target) ** 2, axis=1)
    v, e, r = calibration_bins(res.variance, sq_err, bin_size)
    _write_csv(table_csv, ["mean_predicted_variance", "mean_squared_error"], [v, e])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(v, e, "o", ms=4)
    lim = [0, max(v.max(), e.max()) * 1.05]
    ax.plot(lim, lim, "k:", lw=0.8)
    ax.set_xlabel("predicted variance (mean over bin)")
    ax.set_ylabel("squared error (mean over bin)")
    ax.set_title(f"{res.n_train} train, depth {setting['depth']}, "
                 f"$\\sigma_w^2$={setting['weight_var']:g}, $\\sigma_b^2$={setting['bias_var']:g}"
                 f"\ncorrelation {r:.3f}", fontsize=9)
    _save(plt, fig, png)
    return {"correlation": r, "bins": len(v), "accuracy": res.accuracy, "mse": res.mse,
            "png": str(png), "csv": str(table_csv)}


# --- order to chaos (Figure 3) ---------------------------------------------------------------
def chi1(table, weight_vars, bias_vars, iterations=5000, rtol=1e-12):
    """chi_1 = weight_var E[phi'(u)^2], u ~ N(0, q*), on the grid (len(w), len(b)).

    q* is the fixed point of q = bias_var + weight_var E[phi(u)^2] reached by iterating
    from q = 1 (the variance of standardised inputs).  An iteration falling below the
    table's smallest variance is held there (q* = 0 in the limit: chi_1 is then its value
    at q -> 0 to O(variance_min)); NaN where it grows past the largest variance (no finite
    fixed point, e.g. relu with weight_var >= 2).
    """
    table = as_table(table)
    w, b = np.meshgrid(np.asarray(weight_vars, float), np.asarray(bias_vars, float),
                       indexing="ij")
    q = np.ones_like(w)
    ok = np.ones(w.shape, bool)
    for _ in range(iterations):
        new = b + w * table.second_moment(q)
        ok &= np.isfinite(new) & (new < table.variance_max)
        new = np.where(ok, np.maximum(new, table.variance_min), 1.0)
        converged = np.all(np.abs(new - q) <= rtol * q)
        q = new
        if converged:
            break
    out = w * table.derivative_second_moment(q)
    out[~ok] = np.nan
    return out


def phase(rows, depth, out, *, phi=None):
    """Validation accuracy (or MSE for regression) of a search's rows at one depth over the
    (weight_var, bias_var) grid, with the order-to-chaos line chi_1 = 1 overlaid."""
    png, table_csv = _outputs(out)
    rows = [r for r in rows if r["depth"] == depth]
    if not rows:
        raise ValueError(f"the results hold no rows at depth {depth}")
    ws = np.array(sorted({r["weight_var"] for r in rows}))
    bs = np.array(sorted({r["bias_var"] for r in rows}))
    classification = not math.isnan(rows[0]["val_accuracy"])
    metric = "val_accuracy" if classification else "val_mse"
    grid = np.full((ws.size, bs.size), np.nan)
    for r in rows:
        grid[np.searchsorted(ws, r["weight_var"]), np.searchsorted(bs, r["bias_var"])] = r[metric]
    table = as_table(phi or rows[0]["phi"])
    chi = chi1(table, ws, bs)
    ww, bb = np.meshgrid(ws, bs, indexing="ij")
    _write_csv(table_csv, ["weight_var", "bias_var", metric, "chi1"],
               [ww.ravel(), bb.ravel(), grid.ravel(), chi.ravel()])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    mesh = ax.pcolormesh(bs, ws, grid, shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label=metric.replace("_", " "))
    if bs.size > 1 and ws.size > 1 and np.nanmin(chi) < 1 < np.nanmax(chi):
        ax.contour(bs, ws, chi, levels=[1.0], colors="w", linestyles="--")
    ax.set_xlabel("bias_var $\\sigma_b^2$")
    ax.set_ylabel("weight_var $\\sigma_w^2$")
    ax.set_title(f"{table.activation_name}, depth {depth}; dashed: $\\chi_1 = 1$", fontsize=9)
    _save(plt, fig, png)
    return {"png": str(png), "csv": str(table_csv), "points": int(np.isfinite(grid).sum())}


# --- the table -------------------------------------------------------------------------------
def table_figure(table, out, *, n_q=120, n_rho=121, n_error=2000, seed=7):
    """F_phi(q, q, rho) / E[phi^2](q) over ln q x rho, and |F_table - F_quadrature| /
    E[phi^2](q) at ``n_error`` random off-grid points (direct quadrature as truth)."""
    png, table_csv = _outputs(out)
    table = as_table(table)
    lo, hi = (table.variance_min, table.variance_max) if not table.homogeneous else (1e-2, 1e2)
    q = np.geomspace(lo, hi, n_q)
    rho = np.linspace(-1.0, 1.0, n_rho)
    qq, rr = np.meshgrid(q, rho, indexing="ij")
    f = table.F(qq, qq, rr) / table.second_moment(qq)
    pq, theta = random_points(table, n_error, seed)
    if table.homogeneous:
        pq = np.exp(np.random.default_rng(seed).uniform(math.log(lo), math.log(hi), n_error))
    truth, _ = Integrator(table.activation_name if not table.activation_name.startswith(
        "expr:") else table.activation_source, table.variance_max).bivariate(pq, pq, theta)
    err = np.abs(table.F(pq, pq, np.cos(theta)) - truth) / table.second_moment(pq)
    _write_csv(table_csv, ["q", "rho", "F_normalized"], [qq.ravel(), rr.ravel(), f.ravel()])
    _write_csv(png.with_name(png.stem + "_error.csv"), ["q", "rho", "abs_error_normalized"],
               [pq, np.cos(theta), err])
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8))
    mesh = a1.pcolormesh(rho, q, f, shading="nearest", cmap="RdBu_r", vmin=-1, vmax=1)
    a1.set_yscale("log")
    a1.set_xlabel("rho")
    a1.set_ylabel("variance q")
    a1.set_title(f"F(q, q, rho) / E[phi^2](q), {table.activation_name}", fontsize=9)
    fig.colorbar(mesh, ax=a1)
    a2.scatter(pq, np.maximum(err, 1e-18), s=3)
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("variance q")
    a2.set_ylabel("|F_table - F_quadrature| / E[phi^2]")
    a2.set_title(f"measured error, max {err.max():.1e}", fontsize=9)
    _save(plt, fig, png)
    return {"png": str(png), "csv": str(table_csv), "max_error": float(err.max())}


# --- Monte-Carlo convergence ---------------------------------------------------------------
#: Columns of ``nngp-lut mc`` rows that the convergence figure draws, with their labels.
CONVERGENCE_COLUMNS = {"nngp_error": "NNGP", "ntk_error": "NTK",
                       "nngp_rms": "NNGP (rms over draws)", "ntk_rms": "NTK (rms over draws)"}


def convergence(rows, out):
    """Relative error of empirical kernels against width, log-log (the rows of
    :func:`nngp_lut.montecarlo.convergence`), with each fitted slope in the legend and a
    reference line of slope -1/2 (error ~ 1/sqrt(width)).

    References
    ----------
    Yang, "Wide Feedforward or Recurrent Neural Networks of Any Architecture are Gaussian
    Processes", NeurIPS 2019 (the convergence plots).
    """
    png, numbers = _outputs(out)
    if len(rows) < 2:
        raise ValueError("the convergence figure needs rows for two widths or more")
    widths = np.array([float(r["width"]) for r in rows])
    order = np.argsort(widths)
    widths = widths[order]
    columns = {c: np.array([float(r[c]) for r in rows])[order]
               for c in CONVERGENCE_COLUMNS if c in rows[0]}
    if not columns or any(np.any(v <= 0) or not np.all(np.isfinite(v))
                          for v in columns.values()):
        raise ValueError("the rows need positive finite errors "
                         f"({', '.join(CONVERGENCE_COLUMNS)})")
    slopes = {c: float(np.polyfit(np.log(widths), np.log(v), 1)[0])
              for c, v in columns.items()}
    first = next(iter(columns.values()))
    reference = first[0] * np.sqrt(widths[0] / widths)  # slope -1/2 through the first point
    _write_csv(numbers, ["width", *columns, "reference_slope_half"],
               [widths, *columns.values(), reference])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for c, v in columns.items():
        ax.loglog(widths, v, "o-" if c.endswith("_error") else "s--", ms=4,
                  label=f"{CONVERGENCE_COLUMNS[c]}: slope {slopes[c]:.2f}")
    ax.loglog(widths, reference, "k:", label="slope -1/2")
    ax.set_xticks(widths, [str(int(w)) for w in widths], minor=False)
    ax.set_xticks([], minor=True)
    ax.set_xlabel("width")
    ax.set_ylabel("$\\|K_{emp} - K_\\infty\\|_F / \\|K_\\infty\\|_F$")
    ax.legend(fontsize=8)
    ax.set_title("finite random networks against the infinite-width kernels", fontsize=9)
    _save(plt, fig, png)
    return {"png": str(png), "csv": str(numbers), "slopes": slopes}
