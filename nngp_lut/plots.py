"""The paper's figures, each written as a PNG and the numbers behind it as CSV.

* calibration (Lee et al. 2018, Figure 2): predicted variance against realised squared error,
  test points binned by predicted variance in groups of 100;
* phase (Figure 3): validation accuracy over the (weight_var, bias_var) grid at one depth
  with the order-to-chaos line chi_1 = weight_var E[phi'(u)^2] = 1 at the fixed point q* of
  q = bias_var + weight_var E[phi(u)^2], u ~ N(0, q) (Schoenholz et al. 2017), and the
  settings where no finite fixed point exists;
* table: F_phi(q, q, rho) over the table's domain (FIG.csv) and its measured interpolation
  error at random off-grid points (FIG_error.csv: q, rho, abs_error_normalized).
* convergence: the error of finite random networks' kernels against the infinite-width ones
  over width, log-log, with a reference slope of -1/2 (``nngp-lut mc``; Yang 2019, GP4A).
* compare (Figure 1): test accuracy and MSE of trained finite networks against width beside
  the NNGP and NTK-GP (``nngp-lut compare``).

matplotlib is an optional extra (``pip install "nngp-lut[plot]"``), checked before any work.
Every file is written atomically; existing files are overwritten only with ``force=True``,
and a figure's numbers never overwrite one of its inputs.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import _files, paper
from .errors import MissingDependency, OutputExists, ParameterError
from .gp import evaluate, regression_targets
from .tables import Integrator, as_table, random_points

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numpy.typing import ArrayLike

    from ._typing import PathLike, PhiLike

__all__ = ["CALIBRATION_SETTING", "PAPER_NN_1K", "calibration", "calibration_bins", "chi1",
           "compare_figure", "compare_summary", "fixed_point", "phase", "table_figure"]

#: The paper's Figure 2 setting (from :mod:`nngp_lut.paper`).
CALIBRATION_SETTING = paper.FIGURE2_SETTING


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency('plots need matplotlib: pip install "nngp-lut[plot]"') \
            from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, png):
    fig.tight_layout()
    try:
        _files.atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)


def _write_csv(path, header, columns):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for row in zip(*columns):
        w.writerow([repr(float(v)) for v in row])
    _files.write_bytes(path, buf.getvalue().encode())


def output_paths(out, kind=None):
    """The files a figure writes: FILE.png, FILE.csv (and FILE_error.csv for the table)."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ParameterError(f"{out}: the figure is written as PNG (name it *.png)")
    paths = [out, out.with_suffix(".csv")]
    if kind == "table":
        paths.append(out.with_name(out.stem + "_error.csv"))
    return paths


def check_outputs(out, *, kind=None, force=False, inputs=()):
    """Before any work: matplotlib is installed, every output can be written, none
    exists unless ``force``, and none is one of the ``inputs`` (a figure's numbers must
    never overwrite its own data, even with ``force``).  Returns the output paths."""
    _pyplot()
    paths = output_paths(out, kind)
    for path in paths:
        for source in inputs:
            if Path(source).exists() and path.exists() and os.path.samefile(source, path):
                raise OutputExists(f"the figure's numbers would be written to {path}, which is "
                                   f"its input {source}; choose another --out")
        _files.check_output(path, force=force)
    return paths


# --- calibration (Figure 2) ------------------------------------------------------------------
def calibration_bins(variance: np.ndarray, squared_error: np.ndarray, bin_size: int = 100
                     ) -> tuple[np.ndarray, np.ndarray, float]:
    """Test points sorted by predicted variance, in consecutive groups of ``bin_size``:
    (mean predicted variance, mean squared error) per group, and their correlation."""
    order = np.argsort(variance, kind="stable")
    groups = len(order) // bin_size
    if groups < 2:
        raise ParameterError(f"calibration needs at least {2 * bin_size} test points "
                         f"(bins of {bin_size}); got {len(order)}")
    idx = order[: groups * bin_size].reshape(groups, bin_size)
    v, e = variance[idx].mean(axis=1), squared_error[idx].mean(axis=1)
    return v, e, float(np.corrcoef(v, e)[0, 1])


def calibration(x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike, y_test: ArrayLike,
                out: PathLike, *, phi: PhiLike = "relu", bin_size: int = 100,
                standardize: bool = False, progress: Callable | None = None,
                force: bool = False, **setting) -> dict:
    """Write the calibration figure and CSV; returns {"correlation", "bins", "png", "csv"}.

    ``setting`` (depth, weight_var, bias_var) defaults to the paper's Figure 2 setting.
    """
    png, table_csv = check_outputs(out, force=force)
    setting = {**CALIBRATION_SETTING, **setting}
    res = evaluate(x_train, y_train, x_test, y_test, phi=phi, standardize=standardize,
                   variance=True, progress=progress, **setting)
    _, target = regression_targets(y_train, y_test)
    sq_err = np.mean((res.mean - target) ** 2, axis=1)
    v, e, r = calibration_bins(res.variance, sq_err, bin_size)
    _write_csv(table_csv, ["mean_predicted_variance", "mean_squared_error"], [v, e])
    plt = _pyplot()  # checked before the work by check_outputs
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
def fixed_point(table: PhiLike, weight_vars: ArrayLike, bias_vars: ArrayLike,
                iterations: int = 5000, rtol: float = 1e-12) -> np.ndarray:
    """q*, the fixed point of q = bias_var + weight_var E[phi(u)^2], u ~ N(0, q), on the grid
    (len(w), len(b)), reached by iterating from q = 1 (the variance of standardised inputs).

    ``inf`` where there is none: the iteration grows without bound (relu: weight_var >= 2
    with bias_var > 0) or leaves the table's largest variance.  For an activation homogeneous
    of degree 1 (relu, leaky_relu, abs, identity) E[phi(u)^2] = c q, so q* = bias_var /
    (1 - weight_var c) when weight_var c < 1, none when weight_var c > 1 (or = 1 with
    bias_var > 0); at weight_var c = 1 and bias_var = 0 every q is fixed and q* = 1.  An
    iteration falling below the table's smallest variance is held there (q* = 0 in the
    limit, represented by the table's variance_min).
    """
    table = as_table(table)
    w, b = np.meshgrid(np.asarray(weight_vars, float), np.asarray(bias_vars, float),
                       indexing="ij")
    if table.homogeneous and table.degree == 1.0:
        c = float(table.second_moment(np.array([1.0]))[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(w * c < 1.0, b / (1.0 - w * c), np.inf)
        q[(np.abs(w * c - 1.0) <= 1e-9) & (b == 0.0)] = 1.0
        return q
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
    return np.where(ok, q, np.inf)


def chi1(table: PhiLike, weight_vars: ArrayLike, bias_vars: ArrayLike, iterations: int = 5000,
         rtol: float = 1e-12) -> np.ndarray:
    """chi_1 = weight_var E[phi'(u)^2], u ~ N(0, q*), on the grid (len(w), len(b)).

    q* is :func:`fixed_point`.  For an activation homogeneous of degree 1, E[phi'(u)^2] does
    not depend on q (relu: 1/2), so chi_1 = weight_var E[phi'^2] everywhere, fixed point or
    not (relu's critical line is weight_var = 2).  For any other activation chi_1 is NaN
    where there is no finite fixed point: it is not defined there.

    References
    ----------
    Schoenholz et al., "Deep Information Propagation", ICLR 2017, eq. (5).
    """
    table = as_table(table)
    w, _ = np.meshgrid(np.asarray(weight_vars, float), np.asarray(bias_vars, float),
                       indexing="ij")
    if table.homogeneous and table.degree == 1.0:
        return w * float(table.derivative_second_moment(np.array([1.0]))[0])
    q = fixed_point(table, weight_vars, bias_vars, iterations, rtol)
    finite = np.isfinite(q)
    out = np.full(w.shape, np.nan)
    out[finite] = w[finite] * table.derivative_second_moment(q[finite])
    return out


def phase(rows: list[dict], depth: int, out: PathLike, *, phi: PhiLike | None = None,
          force: bool = False, inputs: tuple = ()) -> dict:
    """Validation accuracy (or MSE for regression) of a search's rows at one depth over the
    (weight_var, bias_var) grid, with the order-to-chaos line chi_1 = 1 (dashed, where the
    grid crosses it) and the settings without a finite fixed point q* (hatched).  The CSV
    holds weight_var, bias_var, the metric, chi1 (NaN where undefined) and fixed_point (q*;
    inf where there is none).  ``inputs``: the results file(s) the rows come from, which
    are never overwritten."""
    png, table_csv = check_outputs(out, force=force, inputs=inputs)
    rows = [r for r in rows if r["depth"] == depth]
    if not rows:
        raise ParameterError(f"the results hold no rows at depth {depth}")
    ws = np.array(sorted({r["weight_var"] for r in rows}))
    bs = np.array(sorted({r["bias_var"] for r in rows}))
    classification = not math.isnan(rows[0]["val_accuracy"])
    metric = "val_accuracy" if classification else "val_mse"
    grid = np.full((ws.size, bs.size), np.nan)
    for r in rows:
        grid[np.searchsorted(ws, r["weight_var"]), np.searchsorted(bs, r["bias_var"])] = r[metric]
    table = as_table(phi or rows[0]["phi"])
    chi = chi1(table, ws, bs)
    qstar = fixed_point(table, ws, bs)
    ww, bb = np.meshgrid(ws, bs, indexing="ij")
    _write_csv(table_csv, ["weight_var", "bias_var", metric, "chi1", "fixed_point"],
               [ww.ravel(), bb.ravel(), grid.ravel(), chi.ravel(), qstar.ravel()])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    mesh = ax.pcolormesh(bs, ws, grid, shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label=metric.replace("_", " "))
    notes = []
    if bs.size > 1 and ws.size > 1 and np.nanmin(chi, initial=np.inf) < 1 < np.nanmax(
            chi, initial=-np.inf):
        ax.contour(bs, ws, chi, levels=[1.0], colors="w", linestyles="--")
        notes.append("dashed: $\\chi_1 = 1$")
    else:
        notes.append("$\\chi_1 = 1$ not crossed on this grid")
    none = ~np.isfinite(qstar)
    if none.any():
        if bs.size > 1 and ws.size > 1:
            ax.contourf(bs, ws, none.astype(float), levels=[0.5, 1.5], colors="none",
                        hatches=["//"])
        notes.append("hatched: no fixed point $q^*$")
    ax.set_xlabel("bias_var $\\sigma_b^2$")
    ax.set_ylabel("weight_var $\\sigma_w^2$")
    ax.set_title(f"{table.activation_name}, depth {depth}; " + "; ".join(notes), fontsize=8)
    _save(plt, fig, png)
    return {"png": str(png), "csv": str(table_csv), "points": int(np.isfinite(grid).sum()),
            "critical_line": bool(notes[0].startswith("dashed")),
            "no_fixed_point": int(none.sum())}


# --- the table -------------------------------------------------------------------------------
def table_figure(table: PhiLike, out: PathLike, *, n_q: int = 120, n_rho: int = 121,
                 n_error: int = 2000, seed: int = 7, force: bool = False) -> dict:
    """F_phi(q, q, rho) / E[phi^2](q) over ln q x rho, and |F_table - F_quadrature| /
    E[phi^2](q) at ``n_error`` random off-grid points (direct quadrature as truth)."""
    png, table_csv, error_csv = check_outputs(out, kind="table", force=force)
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
    _write_csv(error_csv, ["q", "rho", "abs_error_normalized"],
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


def convergence(rows, out, *, force=False, inputs=()):
    """Relative error of empirical kernels against width, log-log (the rows of
    :func:`nngp_lut.montecarlo.convergence`), with each fitted slope in the legend and a
    reference line of slope -1/2 (error ~ 1/sqrt(width)).

    References
    ----------
    Yang, "Wide Feedforward or Recurrent Neural Networks of Any Architecture are Gaussian
    Processes", NeurIPS 2019 (the convergence plots).
    """
    png, numbers = check_outputs(out, force=force, inputs=inputs)
    if len(rows) < 2:
        raise ParameterError("the convergence figure needs rows for two widths or more")
    widths = np.array([float(r["width"]) for r in rows])
    order = np.argsort(widths)
    widths = widths[order]
    columns = {c: np.array([float(r[c]) for r in rows])[order]
               for c in CONVERGENCE_COLUMNS if c in rows[0]}
    if not columns or any(np.any(v <= 0) or not np.all(np.isfinite(v))
                          for v in columns.values()):
        raise ParameterError("the rows need positive finite errors "
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


# --- trained finite networks against the GPs (Figure 1) -----------------------------------
def compare_summary(rows: list[dict]) -> tuple[list[dict], dict]:
    """Per width of the rows of :func:`nngp_lut.finite.compare` (of one run, or of several
    concatenated: the best is then chosen among all of them): the networks' test accuracy
    and MSE, mean and standard deviation over seeds, and those of the best network (highest
    validation accuracy, or lowest validation MSE without labels: the paper's selection of
    the "best finite network" on a validation set; NaN without validation scores, never
    chosen on the test set).  Returns (per-width dicts, {gp kind: {test_accuracy,
    test_mse}})."""
    rows = [{k: (math.nan if v in ("", None) else v) for k, v in r.items()} for r in rows]
    nets = [r for r in rows if r["model"] == "network"]
    gps = {r["model"]: {"test_accuracy": float(r["test_accuracy"]),
                        "test_mse": float(r["test_mse"])}
           for r in rows if r["model"] in ("nngp", "ntk")}
    out = []
    for width in sorted({int(float(r["width"])) for r in nets}):
        group = [r for r in nets if int(float(r["width"])) == width]
        acc = np.array([float(r["test_accuracy"]) for r in group])
        mse = np.array([float(r["test_mse"]) for r in group])
        val_acc = np.array([float(r["val_accuracy"]) for r in group])
        val_mse = np.array([float(r["val_mse"]) for r in group])
        if np.all(np.isfinite(val_acc)):
            best = int(np.argmax(val_acc))
        elif np.all(np.isfinite(val_mse)):
            best = int(np.argmin(val_mse))
        else:  # no validation scores: no selection (never on the test set)
            best = None
        out.append({"width": width, "seeds": len(group),
                    "accuracy_mean": float(np.mean(acc)), "accuracy_std": float(np.std(acc)),
                    "mse_mean": float(np.mean(mse)), "mse_std": float(np.std(mse)),
                    "best_accuracy": math.nan if best is None else float(acc[best]),
                    "best_mse": math.nan if best is None else float(mse[best]),
                    "best_seed": math.nan if best is None else int(float(group[best]["seed"])),
                    "best_arch": "" if best is None else str(group[best].get("arch", ""))})
    return out, gps


#: The paper's best finite networks on MNIST 1k (Table 1's "NN" rows, from nngp_lut.paper).
PAPER_NN_1K = paper.TABLE1_MNIST_NN_1K


def compare_figure(runs: list[tuple[str, list[dict]]], out: PathLike, *, force: bool = False,
                   inputs: Sequence = (), reference: float | None = None) -> dict:
    """Lee et al. 2018, Figure 1: test accuracy and MSE of trained finite networks against
    width (log scale), beside the NNGP and NTK-GP of the same architecture.

    Parameters
    ----------
    runs : list of (label, rows)
        Rows of :func:`nngp_lut.finite.compare` (read from its CSV), one list per curve.
        Each curve is the network with the best validation accuracy at each width
        (markers) and the mean +- standard deviation over seeds (band); its GPs are
        horizontal lines.  With several runs, "best of all" picks among all of them.
    reference : float, optional
        A reference accuracy to draw (e.g. the paper's best finite network).

    Returns
    -------
    dict
        png, csv, and per run its summary (:func:`compare_summary`).
    """
    png, numbers = check_outputs(out, force=force, inputs=inputs)
    if not runs or not any(compare_summary(rows)[0] for _, rows in runs):
        raise ParameterError("the results hold no trained networks (model 'network' rows)")
    curves = [(label, *compare_summary(rows)) for label, rows in runs]
    if len(runs) > 1:
        everything = [r for _, rows in runs for r in rows if r["model"] == "network"]
        curves.append(("best of all", compare_summary(everything)[0], {}))
    columns = {k: [] for k in ("curve", "width", "best_accuracy", "accuracy_mean",
                               "accuracy_std", "best_mse", "mse_mean", "mse_std",
                               "nngp_accuracy", "ntk_accuracy", "nngp_mse", "ntk_mse")}
    for index, (_, summary, gps) in enumerate(curves):
        for s in summary:
            columns["curve"].append(index)
            for k in ("width", "best_accuracy", "accuracy_mean", "accuracy_std", "best_mse",
                      "mse_mean", "mse_std"):
                columns[k].append(s[k])
            for kind in ("nngp", "ntk"):
                g = gps.get(kind, {})
                columns[f"{kind}_accuracy"].append(g.get("test_accuracy", math.nan))
                columns[f"{kind}_mse"].append(g.get("test_mse", math.nan))
    _write_csv(numbers, list(columns), list(columns.values()))
    plt = _pyplot()
    fig, (ax_acc, ax_mse) = plt.subplots(1, 2, figsize=(10, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, summary, gps) in enumerate(curves):
        colour = "k" if label == "best of all" else colours[index % len(colours)]
        w = np.array([s["width"] for s in summary], dtype=float)
        for ax, metric in ((ax_acc, "accuracy"), (ax_mse, "mse")):
            mean = np.array([s[f"{metric}_mean"] for s in summary])
            std = np.array([s[f"{metric}_std"] for s in summary])
            best = np.array([s[f"best_{metric}"] for s in summary])
            ax.plot(w, best, "o-" if label != "best of all" else "s-", color=colour, ms=4,
                    label=f"{label}: best network" if label != "best of all" else label)
            if label != "best of all":
                ax.fill_between(w, mean - std, mean + std, color=colour, alpha=0.15)
            for kind, style in (("nngp", "--"), ("ntk", ":")):
                if kind in gps:
                    value = gps[kind]["test_accuracy" if metric == "accuracy" else "test_mse"]
                    ax.axhline(value, color=colour, ls=style, lw=1,
                               label=f"{label}: {'NNGP' if kind == 'nngp' else 'NTK-GP'}")
    if reference is not None:
        ax_acc.axhline(reference, color="grey", ls="-.", lw=1,
                       label=f"paper's best network {reference:.4f}")
    all_widths = sorted({s["width"] for _, summary, _ in curves for s in summary})
    for ax, name in ((ax_acc, "test accuracy"), (ax_mse, "test MSE")):
        ax.set_xscale("log")
        ax.set_xticks(all_widths, [str(w) for w in all_widths], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_xlabel("width")
        ax.set_ylabel(name)
    ax_acc.legend(fontsize=6)
    ax_acc.set_title("finite networks (band: mean +- sd over seeds) against the GPs",
                     fontsize=9)
    ax_mse.set_title("MSE on the one-hot targets minus their training mean", fontsize=9)
    _save(plt, fig, png)
    return {"png": str(png), "csv": str(numbers),
            "summaries": {label: summary for label, summary, _ in curves}}
