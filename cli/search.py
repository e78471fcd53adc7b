"""``nngp-lut search``: grid search over depth, weight_var and bias_var on a validation set."""

import math
from pathlib import Path

import click

from nngp_lut import search as searching

from .common import (check_output, load_data, phi_or_table, progress_bar, table_for, to_json,
                     user_errors)


@click.command()
@click.option("--data", "data_path", type=click.Path(dir_okay=False), default=None,
              help="Dataset .npz or .h5 (x_train, y_train, x_test, y_test, optionally x_val, "
              "y_val).  Omitted: the embedded MNIST sample (1k train, 1k validation).")
@click.option("--phi", metavar="NAME_OR_EXPR", default=None,
              help="Activation (built-in name or expression in x); default relu.")
@click.option("--table", "table_path", type=click.Path(dir_okay=False), default=None,
              help="A table file made by nngp-lut build (instead of --phi).")
@click.option("--n-train", type=click.IntRange(1), default=None,
              help="The paper's class-balanced subset of N training examples.")
@click.option("--n-val", type=click.IntRange(1), default=None,
              help="Validation examples: the first M of x_val, or (when the file has no "
              "x_val) the last M training examples, default 1000.")
@click.option("--depths", default=",".join(map(str, searching.PAPER_DEPTHS)),
              show_default=True, help="Depths, comma separated (all from one kernel pass).")
@click.option("--weight-var-grid", default=searching.PAPER_WEIGHT_VAR, show_default=True,
              help="weight_var values: a:b:n (n values from a to b) or a comma list.")
@click.option("--bias-var-grid", default=searching.PAPER_BIAS_VAR, show_default=True,
              help="bias_var values: a:b:n or a comma list.")
@click.option("--standardize/--no-standardize", default=True, show_default=True,
              help="Standardise each input across its features (the paper's convention).")
@click.option("--jitter", default="absolute", show_default=True, metavar="RULE",
              help="Noise variance rule: absolute, relative or a number (see predict).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("results.csv"), show_default=True,
              help="Results CSV, one row per (depth, weight_var, bias_var), appended as "
              "each setting finishes.")
@click.option("--resume", is_flag=True,
              help="Keep the rows already in --out and skip their settings.")
@click.option("--force", is_flag=True,
              help="Start over: replace an existing --out (its rows are lost).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the best setting and its test scores as one JSON object (the last "
              "line of stdout).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def search(data_path, phi, table_path, n_train, n_val, depths, weight_var_grid,
           bias_var_grid, standardize, jitter, out, resume, force, as_json, quiet):
    """Score every (depth, weight_var, bias_var) on a validation set: accuracy, MSE and log
    marginal likelihood per row of --out.  The input Grams are computed once and every depth
    comes from one kernel pass per (weight_var, bias_var).  At the end, the best setting on
    validation is fitted on the training set and scored on the test set."""
    phi = phi_or_table(phi, table_path, default="relu")
    if resume and force:
        raise click.UsageError("--resume keeps the rows of --out and --force discards them: "
                               "give one")
    if out.exists() and not (resume or force):
        raise click.ClickException(f"{out} exists; pass --resume to continue that search, "
                                   "--force to start over, or choose another --out")
    if not resume or not out.exists():
        check_output(out, force=True)  # writable, checked before the work
    with user_errors():
        depth_list = searching.parse_depths(depths)
        ws = searching.parse_grid(weight_var_grid)
        bs = searching.parse_grid(bias_var_grid)
        data = load_data(data_path, n_train, n_val, need_val=True)
        table = table_for(phi, table_path)
        if force and out.exists():
            out.unlink()
        with progress_bar("search", quiet) as progress:
            rows = searching.grid_search(
                data.x_train, data.y_train, data.x_val, data.y_val, phi=table,
                depths=depth_list, weight_vars=ws, bias_vars=bs, standardize=standardize,
                jitter=jitter, out=out, resume=resume, progress=progress)
        best, test = searching.test_best(rows, data.x_train, data.y_train, data.x_test,
                                         data.y_test, phi=table, standardize=standardize,
                                         jitter=jitter)
    summary = {"phi": table.activation_name, "settings": len(ws) * len(bs),
               "rows": len(rows), "n_train": len(data.y_train), "n_val": len(data.y_val),
               "best": best, "test_accuracy": test.accuracy, "test_mse": test.mse,
               "results": str(out)}
    lines = [f"{len(rows)} rows ({len(ws)} x {len(bs)} settings x {len(depth_list)} depths) "
             f"in {out}",
             f"best on validation ({len(data.y_val)} examples): depth {best['depth']}, "
             f"weight_var {best['weight_var']:.4g}, bias_var {best['bias_var']:.4g}: "
             + ("" if math.isnan(best["val_accuracy"]) else
                f"accuracy {best['val_accuracy']:.4f}, ") + f"MSE {best['val_mse']:.5g}"]
    lines.append(f"its test scores ({test.n_test} examples, {test.n_train} training): "
                 + (f"accuracy {test.accuracy:.4f}, " if test.accuracy is not None else "")
                 + f"MSE {test.mse:.5g}")
    click.echo("\n".join(lines), err=as_json)
    if as_json:
        click.echo(to_json(summary))
