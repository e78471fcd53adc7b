"""``nngp-lut plot``: the paper's figures (calibration, order-to-chaos phase), the table, and
the Monte-Carlo convergence of ``nngp-lut mc``, and Figure 1 from ``nngp-lut compare``."""

import csv
from pathlib import Path

import click

from nngp_lut import plots
from nngp_lut.errors import DataError
from nngp_lut.search import read_results

from .common import (TABLE_OPTION, data_options, fc_options, load_data, output_options,
                     phi_or_table, stage_bars, standardizing, table_for, user_errors)


def figure_options(quiet=False):
    """--out and --force of every figure (and --quiet for one that shows progress)."""
    return output_options("Figure FILE.png; the numbers go to FILE.csv beside it.",
                          required=True, quiet=quiet,
                          force="Overwrite existing FILE.png and FILE.csv (never the input).")


@click.group(short_help="The paper's figures and the table, as PNG and CSV.")
def plot():
    """Figures as PNG, with the numbers behind them as CSV (needs matplotlib: pip install
    "nngp-lut[plot]")."""


@plot.command()
@data_options()
@fc_options(depth=3, weight_var=2.0, bias_var=0.2)
@click.option("--bin-size", type=click.IntRange(1), default=100, show_default=True,
              help="Test points per bin.")
@figure_options(quiet=True)
def calibration(data_path, phi, table_path, depth, weight_var, bias_var, n_train, n_test,
                bin_size, standardize, out, force, quiet):
    """Predicted variance against realised squared error, test points binned by predicted
    variance (the paper's Figure 2); prints the correlation coefficient.  The network is
    the fully connected one of --phi (default relu) or --table, --depth, --weight-var and
    --bias-var, by default Figure 2's."""
    phi = phi_or_table(phi, table_path, default="relu")
    standardize = standardizing(standardize, data_path)
    with user_errors():
        plots.check_outputs(out, force=force)
        data = load_data(data_path, n_train)
        with stage_bars(quiet) as progress:
            table = table_for(phi, table_path, progress)
            res = plots.calibration(data.x_train, data.y_train, data.x_test[:n_test],
                                    data.y_test[:n_test], out, phi=table, depth=depth,
                                    weight_var=weight_var, bias_var=bias_var,
                                    bin_size=bin_size, standardize=standardize,
                                    progress=progress, force=force)
    click.echo(f"correlation of binned predicted variance and squared error: "
               f"{res['correlation']:.4f} ({res['bins']} bins of {bin_size})")
    click.echo(f"wrote {res['png']} and {res['csv']}"
               + ("; inputs standardised per example" if standardize else ""))


@plot.command()
@click.option("--results", type=click.Path(dir_okay=False, exists=True), required=True,
              help="A results CSV of nngp-lut search.")
@click.option("--depth", type=click.IntRange(0), required=True, help="The depth to show.")
@click.option("--phi", metavar="NAME_OR_EXPR", default=None,
              help="Activation for the critical line (default: the one in the results).")
@figure_options()
def phase(results, depth, phi, out, force):
    """Validation accuracy over (weight_var, bias_var) at one depth with the order-to-chaos
    line chi_1 = 1 (the paper's Figure 3)."""
    with user_errors():
        plots.check_outputs(out, force=force, inputs=[results])
        rows, whole = read_results(results)
        if not whole:
            click.echo(f"Warning: {results} has a torn or unreadable line (a search killed "
                       "mid-write?); it is left out", err=True)
        res = plots.phase(rows, depth, out, phi=phi, force=force, inputs=[results])
    click.echo(f"wrote {res['png']} and {res['csv']} ({res['points']} settings)")


@plot.command("table")
@click.option("--phi", metavar="NAME_OR_EXPR", default=None,
              help="Activation whose table to draw: a built-in name or an expression in x "
              "(its table is built once and cached).")
@TABLE_OPTION
@figure_options()
def table_(phi, table_path, out, force):
    """F_phi(q, q, rho) over the table's domain and its measured error against direct
    quadrature at random off-grid points."""
    phi = phi_or_table(phi, table_path)
    with user_errors():
        plots.check_outputs(out, kind="table", force=force)
        res = plots.table_figure(table_for(phi, table_path), out, force=force)
    click.echo(f"max measured error {res['max_error']:.2e}; wrote {res['png']} and "
               f"{res['csv']}")



@plot.command("convergence")
@click.option("--results", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              required=True, help="A rows CSV of nngp-lut mc --out.")
@figure_options()
def convergence(results, out, force):
    """Relative error of finite random networks' NNGP and NTK against the infinite-width
    kernels over width, log-log, with the fitted slopes and a reference slope of -1/2."""
    with user_errors():
        try:
            with open(results, newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read {results}: {exc}") from None
        if not rows or "width" not in rows[0]:
            raise DataError(f"{results} is not a rows CSV of nngp-lut mc (no width column)")
        res = plots.convergence(rows, out, force=force, inputs=(results,))
    slopes = ", ".join(f"{k} {v:.3f}" for k, v in res["slopes"].items())
    click.echo(f"fitted slopes: {slopes}")
    click.echo(f"wrote {res['png']} and {res['csv']}")


def read_compare_rows(path):
    """The rows of an nngp-lut compare CSV (strings; empty fields are NaN downstream)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    needed = {"model", "width", "seed", "val_accuracy", "val_mse", "test_accuracy",
              "test_mse"}
    if not rows or not needed <= set(rows[0]):
        raise DataError(f"{path} is not a CSV of nngp-lut compare (columns "
                        f"{', '.join(sorted(needed))})")
    return rows


@plot.command("compare")
@click.option("--results", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              required=True, multiple=True,
              help="A CSV of nngp-lut compare --out; repeat it for several curves (each "
              "labelled by its file name), the best of all is then drawn too.")
@click.option("--reference", type=float, default=None,
              help="A reference test accuracy to draw, e.g. the paper's best finite "
              "network (Table 1, MNIST 1k: 0.9252 relu, 0.9254 tanh).")
@figure_options()
def compare(results, reference, out, force):
    """Test accuracy and MSE of trained finite networks against width beside the NNGP and
    NTK-GP (the paper's Figure 1): per width the network with the best validation accuracy,
    and the mean +- standard deviation over seeds."""
    with user_errors():
        plots.check_outputs(out, force=force, inputs=results)
        runs = [(path.stem, read_compare_rows(path)) for path in results]
        res = plots.compare_figure(runs, out, force=force, inputs=results,
                                   reference=reference)
    for label, summary in res["summaries"].items():
        best = ", ".join(f"{s['width']}: {s['best_accuracy']:.4f}" for s in summary)
        click.echo(f"{label}: best network's test accuracy by width: {best}")
    click.echo(f"wrote {res['png']} and {res['csv']}")
