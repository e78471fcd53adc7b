"""``nngp-lut compare``: trained finite networks beside the NNGP and NTK-GP (Figure 1)."""

import csv
import io
import math

import click

from nngp_lut import _files
from nngp_lut.data import standardize_rows
from nngp_lut.errors import DataError

from .common import (JITTER_OPTION, SHAPE_OPTION, check_output, data_options, echo_table,
                     finite_module, json_option, load_data, network_flags, network_of,
                     network_options, output_options, parse_shape, refuse_padding, shaped,
                     stage_bars, standardizing, user_errors)
from .mc import _widths


def write_rows(rows, out, columns):
    """The rows as CSV (the given columns; NaN as an empty field), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                         for k, v in row.items()})
    _files.write_bytes(out, buf.getvalue().encode())


def _finite(value):
    if not math.isfinite(value):
        raise click.BadParameter(f"give a finite number > 0, such as 1e-3; got {value}")
    return value


@click.command(short_help="Trained finite networks beside the NNGP and NTK-GP (Figure 1).")
@network_options
@SHAPE_OPTION
@data_options(n_val=True)
@click.option("--widths", default="10,50,100,500,1000,5000", show_default=True,
              callback=_widths, help="Widths of the finite networks, separated by commas: "
              "every Dense (and Conv) without a declared width gets each in turn, except the "
              "final Dense, which gets one unit per class (or target).")
@click.option("--seeds", type=click.IntRange(1), default=3, show_default=True,
              help="Networks per width (seeds 0, 1, ...).")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam",
              show_default=True, help="The optimiser (optax).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-3,
              show_default=True, callback=lambda ctx, param, value: _finite(value),
              help="Learning rate of the optimiser: a finite number > 0.")
@click.option("--steps", type=click.IntRange(1), default=1000, show_default=True,
              help="Most optimiser steps per network.")
@click.option("--batch-size", type=click.IntRange(1), default=100, show_default=True,
              help="Examples per step (minibatches drawn epoch by epoch); the training "
              "set's size or more: full batch.")
@click.option("--eval-every", type=click.IntRange(1), default=None,
              help="Steps between validation evaluations (default: one epoch).")
@click.option("--patience", type=click.IntRange(1), default=10, show_default=True,
              help="Stop after this many evaluations without a better validation accuracy "
              "(MSE for float targets); the best evaluation's parameters are kept.")
@click.option("--centre/--no-centre", default=True, show_default=True,
              help="Subtract the network's initial output from its output: f(x) - f_0(x), "
              "zero at initialisation (the initial function adds a random offset to each "
              "network's predictions that does not shrink with width; its mean over "
              "initialisations is zero).")
@click.option("--gp/--no-gp", default=True, show_default=True,
              help="Also score the NNGP and NTK-GP posterior means on the same split.")
@JITTER_OPTION
@output_options("Write one row per network and per GP to this CSV file, for nngp-lut plot "
                "compare.")
@json_option("the rows and the per-width summary")
def compare(arch, tol, phi, table_path, depth, weight_var, bias_var, data_path, widths, seeds,
            n_train, n_val, n_test, optimizer, learning_rate, steps, batch_size, eval_every,
            patience, centre, gp, jitter, standardize, out, force, as_json, quiet, shape):
    """Train the finite networks of an architecture (--arch, or the fully connected network
    of --phi or --table, --depth, --weight-var and --bias-var; squared loss on the GP's
    targets, early stopping on the validation set) at each width and seed, and score them beside
    the NNGP and the NTK-GP on the same split: per width the test accuracy and MSE (mean
    and spread over seeds, and the network with the best validation accuracy), as in Lee
    et al. 2018, Figure 1.  Needs JAX and optax: pip install "nngp-lut[finite]"."""
    phi = network_flags(arch, phi, table_path, depth, weight_var, bias_var)
    shape = parse_shape(shape)
    check_output(out, force)  # before the work
    standardize = standardizing(standardize, data_path)
    with user_errors():
        finite = finite_module("finite")
        data = load_data(data_path, n_train, n_val, need_val=True)
        parts = [data.x_train, data.x_val, data.x_test[:n_test]]
        refuse_padding("compare", x_train=parts[0], x_val=parts[1], x_test=parts[2])
        if standardize:
            parts = [standardize_rows(p, name) for p, name in
                     zip(parts, ("x_train", "x_val", "x_test"))]
        if len(data.y_train) < 2:
            raise DataError("the training set has fewer than 2 examples")
        with stage_bars(quiet) as progress:
            network = network_of(arch, phi, table_path, depth, weight_var, bias_var,
                                 progress, tol)
            # A convolutional network takes images (NHWC): the rows reshaped to --shape or
            # to the data file's image shape, as predict does.
            parts = shaped(network, shape, data.image_shape, *parts)
            rows = finite.compare(
                network, parts[0], data.y_train, parts[1], data.y_val, parts[2],
                data.y_test[:n_test], widths=widths, seeds=seeds, gp=gp, jitter=jitter,
                progress=progress, optimizer=optimizer, learning_rate=learning_rate,
                steps=steps, batch_size=batch_size, eval_every=eval_every,
                patience=patience, centre=centre)
        if out is not None:
            write_rows(rows, out, finite.COMPARE_COLUMNS)
        summary, gps = finite.summarize(rows)
    n_tr, n_va, n_te = len(data.y_train), len(data.y_val), len(parts[2])
    lines = [f"{n_tr} train, {n_va} validation, {n_te} test; {optimizer}, learning rate "
             f"{learning_rate:g}, batch {min(batch_size, n_tr)}, at most {steps} steps, "
             f"patience {patience}; {'centred' if centre else 'plain'} networks; "
             + ("inputs standardised per example" if standardize else "raw inputs"),
             f"{'width':>7} {'seeds':>5} {'accuracy':>17} {'best':>7} {'MSE':>19} "
             f"{'best MSE':>9}"]
    lines += [f"{s['width']:>7} {s['seeds']:>5} {s['accuracy_mean']:>8.4f} +- "
              f"{s['accuracy_std']:<6.4f} {s['best_accuracy']:>7.4f} {s['mse_mean']:>9.5f} +- "
              f"{s['mse_std']:<7.5f} {s['best_mse']:>9.5f}" for s in summary]
    for kind, row in gps.items():
        lines.append(f"{kind.upper() + '-GP' if kind == 'ntk' else 'NNGP':>13} "
                     f"{row['test_accuracy']:>8.4f} {'':>17} {row['test_mse']:>9.5f}")
    lines.append("accuracy, MSE: test, mean +- standard deviation over seeds; best: the "
                 "network with the best validation score")
    echo_table(lines, out, as_json, {"rows": rows, "summary": summary, "n_train": n_tr,
                                     "n_val": n_va, "n_test": n_te})
