"""``nngp-lut predict``: exact NNGP posterior on a dataset; accuracy / MSE, predictions."""

import time

import click
import numpy as np

from nngp_lut import _files, paper
from nngp_lut.data import is_labels
from nngp_lut.gp import evaluate

from .common import (BN_REFERENCE_OPTION, EMBEDDED, JITTER_OPTION, KERNEL_OPTION, SHAPE_OPTION,
                     check_output, cluster_client, cluster_options, data_options, json_option,
                     load_data, memory_option, network_flags, network_of, network_options,
                     output_options, parse_shape, phi_or_table, shaped, stage_bars,
                     standardizing, table_for, to_json, user_errors, with_bn_reference)


@click.command(short_help="Exact GP prediction on a dataset: accuracy, MSE.")
@data_options(EMBEDDED + ", at the paper's Table 1 setting")
@network_options
@KERNEL_OPTION
@SHAPE_OPTION
@BN_REFERENCE_OPTION
@JITTER_OPTION
@memory_option("the kernel tiles and the factorisation",
               more="Larger factorisations run out of core in --scratch.")
@click.option("--scratch", type=click.Path(file_okay=False), default=None,
              help="Directory for out-of-core tiles (default: the system temp directory).")
@click.option("--resume", is_flag=True,
              help="Continue a killed out-of-core run of the same job from its finished "
              "panels.")
@click.option("--variance", is_flag=True,
              help="Also compute the predictive variance of every test point.")
@output_options("Write predictions to PRED.npz (mean, variance, predicted, y_test).")
@json_option("the results")
@cluster_options
def predict(data_path, phi, table_path, depth, weight_var, bias_var, n_train, n_test,
            standardize, jitter, memory, scratch, resume, variance, out, force, as_json, quiet,
            arch, tol, kernel_kind, shape, bn_reference, scheduler, workers):
    """Exact GP prediction with the NNGP kernel: the posterior of Lee et al. 2018, eq. 4.

    Fits the posterior on the training set (blocked Cholesky, in RAM or out of core) and
    reports test accuracy (classification) and MSE, for the fully connected network of
    --phi (default relu) or --table, --depth, --weight-var and --bias-var, or any --arch,
    with the NNGP or (--kernel ntk)
    the NTK's gradient-descent ensemble.  With no arguments it runs the paper's
    MNIST 1k relu setting (Table 1: depth 20, weight_var 1.45, bias_var 0.28) on the
    embedded sample, with the paper's per-input standardisation, and prints the accuracy
    beside the paper's.  The time printed is the whole run's, table and compilation included.
    With --workers or --scheduler the kernel tiles, the factorisation and the solves run as
    Dask task graphs on a cluster (with --scratch each finished tile column is also kept
    there for --resume); the kernel time is then inside the cholesky time.
    """
    wall_start = time.perf_counter()
    if out is not None and out.suffix.lower() != ".npz":
        raise click.UsageError("--out must end in .npz")
    reference = None
    if arch is None and data_path is None:  # the paper's setting on the embedded sample
        reference = paper.TABLE1_MNIST.get((1000, phi_or_table(phi, table_path, "relu")))
        if reference is not None and (depth, weight_var, bias_var) == (None, None, None):
            depth, weight_var, bias_var = reference[:3]
    phi_name = network_flags(arch, phi, table_path, depth, weight_var, bias_var,
                             default_phi="relu", hint=" (defaults exist only for relu and "
                             "tanh on the embedded sample)")
    shape = parse_shape(shape)
    check_output(out, force)  # before the work, not after it
    standardize = standardizing(standardize, data_path)
    with user_errors(), cluster_client(scheduler, workers) as client:
        data = load_data(data_path, n_train)
        x_train, y_train = data.x_train, data.y_train
        x_test, y_test = data.x_test[:n_test], data.y_test[:n_test]
        with stage_bars(quiet) as progress:
            t0 = time.perf_counter()
            network = network_of(arch, phi_name, table_path, depth, weight_var, bias_var,
                                 progress, tol)
            t_table = time.perf_counter() - t0
            x_train, x_test = shaped(network, shape, data.image_shape, x_train, x_test)
            network = with_bn_reference(network, bn_reference, shape, data.image_shape,
                                        standardize)
            if network.rank != 0 and progress:
                progress = _label_kernel(progress, network.storage(np.shape(x_train)[1:]))
            result = evaluate(x_train, y_train, x_test, y_test, network=network,
                              kernel=kernel_kind, standardize=standardize, jitter=jitter,
                              variance=variance, memory=memory, scratch=scratch,
                              resume=resume, progress=progress, client=client)
    result.timings["table"] = t_table
    result.timings["wall"] = time.perf_counter() - wall_start
    setting = {"data": data_path or "embedded MNIST sample", "kernel": kernel_kind,
               "standardize": standardize}
    if arch is None:
        setting.update(phi=table_for(phi_name, table_path).activation_name, depth=depth,
                       weight_var=weight_var, bias_var=bias_var)
    else:
        setting["arch"] = repr(network.layer)
    if reference is not None and (depth, weight_var, bias_var) == reference[:3] and \
            result.n_train == 1000 and result.n_test == 10000 and standardize:
        result.extra["paper_accuracy"] = reference[3]
    # The results are printed first: a failure to write --out cannot lose them.
    _report(result, setting, as_json, out, is_labels(y_train), data_path is None)
    if out is not None:
        with user_errors():
            _save(out, result, y_test, force)
        click.echo(f"predictions written to {out}", err=as_json)


def _label_kernel(progress, storage):
    """The progress callback with the kernel stage labelled by what a pair carries."""
    label = f"kernel [{storage}]"
    return lambda stage, done, total: progress(label if stage == "kernel" else stage, done,
                                               total)


def _report(result, setting, as_json, out, classification, embedded):
    s = setting
    std = ("inputs standardised per example" + (" (the paper's convention, on for this "
           "reproduction; --no-standardize turns it off)" if embedded else "")
           if s["standardize"] else "raw inputs (not standardised)")
    net = (s["arch"] if "arch" in s else f"{s['phi']}, depth {s['depth']}, weight_var "
           f"{s['weight_var']:g}, bias_var {s['bias_var']:g}")
    lines = [f"data: {s['data']}: {result.n_train} train, {result.n_test} test",
             f"network: {net}; {std}",
             f"kernel: {s['kernel'].upper()}" + (" (the trained network's ensemble, Lee et al. "
                                                 "2019)" if s["kernel"] == "ntk" else "")]
    if result.accuracy is not None:
        paper = result.extra.get("paper_accuracy")
        lines.append(f"test accuracy: {result.accuracy:.4f}" + (
            f"   (paper, Table 1, MNIST 1k: {paper:.4f})" if paper is not None else ""))
    lines.append(f"test MSE: {result.mse:.6g}" + (
        " (on the one-hot targets minus their training mean)" if classification else ""))
    lines.append(f"jitter (noise variance) used: {result.jitter:g}")
    t = result.timings
    lines.append(f"time: {t['wall']:.1f} s in all: table {t['table']:.1f}, fit and predict "
                 f"{t['total']:.1f} (kernel {t['kernel']:.1f}, cholesky {t['cholesky']:.1f}, "
                 f"solve {t['solve']:.1f}, predict {t['predict']:.1f}; Numba compiles on "
                 "first use, inside the kernel time)")
    if as_json:
        for line in lines:
            click.echo(line, err=True)
        click.echo(to_json({**setting, **result.summary()}))
    else:
        click.echo("\n".join(lines))


def _save(out, result, y_test, force):
    arrays = {"mean": result.mean, "y_test": y_test}
    if result.variance is not None:
        arrays["variance"] = result.variance
    if result.predicted is not None:
        arrays["predicted"] = result.predicted

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a name
            np.savez(f, **arrays)

    _files.atomic_write(out, write, force=force)
