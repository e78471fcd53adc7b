"""``nngp-lut search``: grid search over depth, weight_var and bias_var on a validation set."""

import math
from pathlib import Path

import click

from nngp_lut import search as searching

from .common import (BN_REFERENCE_OPTION, JITTER_OPTION, KERNEL_OPTION, PHI_OPTION,
                     SHAPE_OPTION, TABLE_OPTION, TOL_OPTION, TOL_USAGE, check_output,
                     cluster_client, cluster_options, data_options, json_option, load_data,
                     memory_option, network_of, output_options, parse_shape, phi_or_table,
                     progress_bar, shaped, standardizing, table_for, to_json, user_errors,
                     with_bn_reference)

#: Options of the grid that --arch replaces.
GRID_OPTIONS = ("phi", "table_path", "depths", "weight_var_grid", "bias_var_grid",
                "optimize", "resume")


@click.command(short_help="Choose depth, weight_var, bias_var on validation data.")
@data_options(n_val=True, n_test=False)
@PHI_OPTION
@TABLE_OPTION
@click.option("--depths", default=",".join(map(str, searching.PAPER_DEPTHS)),
              show_default=True, help="Depths, comma separated (all from one kernel pass).")
@click.option("--weight-var-grid", default=searching.PAPER_WEIGHT_VAR, show_default=True,
              help="weight_var values: a:b:n (n values from a to b) or a comma list.")
@click.option("--bias-var-grid", default=searching.PAPER_BIAS_VAR, show_default=True,
              help="bias_var values: a:b:n or a comma list.")
@click.option("--optimize", is_flag=True,
              help="Instead of the grid: per depth, maximise the log marginal likelihood on "
              "the training set over weight_var and bias_var (L-BFGS-B, finite differences "
              "in log space, within the range of --weight-var-grid and --bias-var-grid, "
              "from its geometric middle), then score the optimum on validation; one CSV "
              "row per depth.")
@click.option("--arch", "archs", multiple=True, metavar="TEXT|@FILE",
              help="Instead of the grid: candidate architectures (repeat --arch, e.g. "
              "convolutional networks of several depths), each fitted on the training set "
              "and scored on validation; the best is scored on the test set.  One CSV row "
              "per architecture.")
@TOL_OPTION
@KERNEL_OPTION
@SHAPE_OPTION
@BN_REFERENCE_OPTION
@JITTER_OPTION
@memory_option("the kernels held at once")
@output_options("Results CSV, one row per (depth, weight_var, bias_var), appended as each "
                "setting finishes.", default=Path("results.csv"),
                force="Start over: replace an existing --out (its rows are lost).")
@click.option("--resume", is_flag=True,
              help="Keep the rows already in --out and skip their settings.")
@json_option("the best setting and its test scores")
@cluster_options
def search(data_path, phi, table_path, n_train, n_val, depths, weight_var_grid,
           bias_var_grid, standardize, optimize, memory, jitter, out, resume, force, as_json,
           quiet, archs, tol, kernel_kind, shape, bn_reference, scheduler, workers):
    """Score every (depth, weight_var, bias_var) of the fully connected network of --phi
    (default relu) or --table on a validation set: accuracy, MSE and log marginal likelihood
    per row of --out.  The input Grams are computed once and every depth
    comes from one kernel pass per (weight_var, bias_var).  With --optimize, each depth's
    (weight_var, bias_var) maximises the marginal likelihood instead.  At the end, the best
    setting on validation is fitted on the training set and scored on the test set.  With
    --kernel ntk the NTK's gradient-descent ensemble is scored instead of the NNGP posterior
    (no marginal likelihood: the NTK is not a prior covariance).  With --workers or
    --scheduler the grid's settings are Dask tasks on a cluster (one single-threaded task
    per setting; --memory is then a budget per task) and the final fit runs there too;
    --optimize runs in process."""
    if archs:
        ctx = click.get_current_context()
        given = [f"--{n.replace('_path', '').replace('_', '-')}" for n in GRID_OPTIONS
                 if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"--arch replaces the grid: drop {', '.join(given)}")
        return _arch_search(data_path, n_train, n_val, standardize, memory, jitter, out,
                            force, as_json, quiet, archs, tol, kernel_kind, parse_shape(shape),
                            bn_reference, scheduler, workers)
    if shape is not None:
        raise click.UsageError("--shape is for convolutional networks (--arch)")
    if bn_reference is not None:
        raise click.UsageError("--bn-reference is for --arch candidates with BatchNorm")
    if tol is not None:
        raise click.UsageError(TOL_USAGE)
    phi = phi_or_table(phi, table_path, default="relu")
    if optimize and kernel_kind == "ntk":
        raise click.UsageError("--optimize maximises the NNGP's marginal likelihood: it does "
                               "not go with --kernel ntk")
    if optimize and (scheduler is not None or workers is not None):
        raise click.UsageError("--optimize runs in process: drop --scheduler/--workers, or "
                               "search the grid on the cluster")
    if resume and force:
        raise click.UsageError("--resume keeps the rows of --out and --force discards them: "
                               "give one")
    if out.exists() and not (resume or force):
        raise click.ClickException(f"{out} exists; pass --resume to continue that search, "
                                   "--force to start over, or choose another --out")
    if not resume or not out.exists():
        check_output(out, force=True)  # writable, checked before the work
    standardize = standardizing(standardize, data_path)
    with user_errors(), cluster_client(scheduler, workers) as client:
        depth_list = searching.parse_depths(depths)
        ws = searching.parse_grid(weight_var_grid)
        bs = searching.parse_grid(bias_var_grid)
        data = load_data(data_path, n_train, n_val, need_val=True)
        table = table_for(phi, table_path)
        if force and out.exists():
            out.unlink()
        common = dict(phi=table, depths=depth_list, weight_vars=ws, bias_vars=bs,
                      standardize=standardize, jitter=jitter, memory=memory, out=out,
                      resume=resume)
        if not optimize:
            common["kernel"] = kernel_kind
        if optimize:
            def on_depth(row, opt):
                if not quiet:
                    click.echo(f"depth {row['depth']}: weight_var {row['weight_var']:.4g}, "
                               f"bias_var {row['bias_var']:.4g}, log marginal likelihood "
                               f"{row['log_marginal_likelihood']:.6g} ({opt['evaluations']} "
                               f"evaluations{'' if opt['converged'] else ', not converged'})"
                               f"; validation MSE {row['val_mse']:.5g}", err=True)

            with progress_bar("optimize", quiet) as progress:
                rows = searching.optimize_search(data.x_train, data.y_train, data.x_val,
                                                 data.y_val, progress=progress,
                                                 on_depth=on_depth, **common)
        else:
            with progress_bar("search", quiet) as progress:
                rows = searching.grid_search(data.x_train, data.y_train, data.x_val,
                                             data.y_val, progress=progress, client=client,
                                             **common)
        best, test = searching.test_best(rows, data.x_train, data.y_train, data.x_test,
                                         data.y_test, phi=table, standardize=standardize,
                                         jitter=jitter, memory=memory, client=client)
    summary = {"phi": table.activation_name, "kernel": kernel_kind, "optimize": optimize,
               "standardize": standardize,
               "settings": len(depth_list) if optimize else len(ws) * len(bs),
               "rows": len(rows), "n_train": len(data.y_train), "n_val": len(data.y_val),
               "best": best, "test_accuracy": test.accuracy, "test_mse": test.mse,
               "results": str(out)}
    what = (f"one optimum per depth, {len(depth_list)} depths" if optimize else
            f"{len(ws)} x {len(bs)} settings x {len(depth_list)} depths")
    lines = [f"{len(rows)} rows ({what}, {kernel_kind.upper()}) in {out}"
             + ("; inputs standardised per example" if standardize else ""),
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


def _arch_search(data_path, n_train, n_val, standardize, memory, jitter, out, force, as_json,
                 quiet, archs, tol, kernel_kind, shape, bn_reference, scheduler, workers):
    """search --arch: score each architecture on validation, then the best on test."""
    check_output(out, force)
    standardize = standardizing(standardize, data_path)
    with user_errors(), cluster_client(scheduler, workers) as client:
        data = load_data(data_path, n_train, n_val, need_val=True)
        networks = [network_of(a, tol=tol) for a in archs]
        ranks = {net.rank != 0 for net in networks}
        if len(ranks) > 1:
            raise click.UsageError("the --arch candidates mix convolutional networks and "
                                   "networks of vectors: they take different inputs")
        if bn_reference is not None:  # the candidates with BatchNorm normalise by it
            if not any(net.batch_coupled for net in networks):
                raise click.UsageError("--bn-reference is for --arch candidates with "
                                       "BatchNorm: none has one")
            networks = [with_bn_reference(net, bn_reference, shape, data.image_shape,
                                          standardize) if net.batch_coupled else net
                        for net in networks]
        x_train, x_val, x_test = shaped(networks[0], shape, data.image_shape, data.x_train,
                                        data.x_val, data.x_test)
        with progress_bar("search", quiet) as progress:
            rows = searching.arch_search(networks, x_train, data.y_train, x_val, data.y_val,
                                         kernel=kernel_kind, standardize=standardize,
                                         jitter=jitter, memory=memory, out=out,
                                         progress=progress, client=client)
        best = searching.best_arch(rows)
        net = networks[rows.index(best)]
        test = searching.evaluate(x_train, data.y_train, x_test, data.y_test, network=net,
                                  kernel=kernel_kind, standardize=standardize, jitter=jitter,
                                  memory=memory, client=client)
    lines = [f"{len(rows)} architectures ({kernel_kind.upper()}) in {out}"
             + ("; inputs standardised per example" if standardize else "")]
    lines += [f"  val accuracy {r['val_accuracy']:.4f}, MSE {r['val_mse']:.5g}: {r['arch']}"
              for r in rows]
    lines.append(f"best on validation ({len(data.y_val)} examples): {best['arch']}")
    lines.append(f"its test scores ({test.n_test} examples, {test.n_train} training): "
                 + (f"accuracy {test.accuracy:.4f}, " if test.accuracy is not None else "")
                 + f"MSE {test.mse:.5g}")
    click.echo("\n".join(lines), err=as_json)
    if as_json:
        click.echo(to_json({"kernel": kernel_kind, "standardize": standardize, "rows": rows,
                            "best": best, "test_accuracy": test.accuracy,
                            "test_mse": test.mse, "n_train": len(data.y_train),
                            "n_val": len(data.y_val), "results": str(out)}))
