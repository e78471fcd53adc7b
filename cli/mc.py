"""``nngp-lut mc``: finite random networks against the infinite-width kernels."""

import csv
import io

import click

from nngp_lut import _files
from nngp_lut.data import load_dataset, standardize_rows, validate_inputs
from nngp_lut.errors import DataError

from .common import (SHAPE_OPTION, check_output, data_option, echo_table, finite_module,
                     json_option, network_flags, network_of, network_options, output_options,
                     parse_shape, refuse_padding, shaped, stage_bars, standardize_option,
                     standardizing, user_errors)


def _widths(ctx, param, value):
    try:
        widths = [int(w) for w in value.split(",") if w.strip()]
    except ValueError:
        raise click.BadParameter("give positive integers separated by commas, e.g. "
                                 "64,256,1024") from None
    if not widths or min(widths) < 1 or len(set(widths)) != len(widths):
        raise click.BadParameter("give distinct positive integers, e.g. 64,256,1024")
    return sorted(widths)


def _write_rows(rows, out):
    """The rows as CSV, written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    _files.write_bytes(out, buf.getvalue().encode())


def _mean_report(montecarlo, network, rows, slopes, width, draws, seed, x, reference, out,
                 as_json):
    """The report of a network whose kernel does not converge per network (attention at
    1/sqrt(n) scaling): the mean over draws and heads against the infinite-width kernel."""
    node = next(n for n in network.layer.walk() if not n.self_averaging)
    heads = montecarlo.heads_of(network)
    kinds = [k for k in ("nngp", "ntk") if f"{k}_error" in rows[0]]
    lines = [f"{node!r} keeps each head's logits random at every width, so one network's "
             "kernel does not converge and a width slope would mean nothing: only the mean "
             "over draws and heads converges to the infinite-width kernel (its error ~ "
             f"1/sqrt(draws x heads)).  Mean of the first d of {draws} networks of width "
             f"{width} (the largest of --widths), {heads} heads, {x.shape[0]} inputs, seed "
             f"{seed}:"]
    head = f"{'draws':>6} {'x heads':>8}"
    for kind in kinds:
        name = kind.upper()
        head += f" {name + ' error':>11} {name + ' SE':>8} {'SEs':>5} {'max |z|':>7}"
    lines.append(head)
    for r in rows:
        line = f"{r['draws']:>6} {r['draws_heads']:>8}"
        for kind in kinds:
            line += (f" {r[kind + '_error']:>11.4f} {r[kind + '_se']:>8.4f} "
                     f"{r[kind + '_sigmas']:>5.2f} {r[kind + '_max_z']:>7.2f}")
        lines.append(line)
    if len(rows) > 1:
        lines.append("slope of log error (and of log SE) against log(draws x heads): " +
                     ", ".join(f"{k.upper()} {slopes[k + '_error']:.3f} "
                               f"({slopes[k + '_se']:.3f})" for k in kinds) +
                     "; about -0.5 expected")
    lines.append("error: relative Frobenius error of the mean; SE: its standard error from the "
                 "spread of the draws; SEs: error / SE (within 3: the kernel agrees)")
    echo_table(lines, out, as_json, {
        "mode": "mean over draws", "rows": rows, "slopes": slopes, "width": width,
        "heads": heads, "draws": draws, "seed": seed, "n_inputs": int(x.shape[0]),
        "reference": reference})


@click.command(short_help="Finite random networks against the infinite-width kernels.")
@network_options
@SHAPE_OPTION
@click.option("--widths", default="64,256,1024,4096", show_default=True, callback=_widths,
              help="Widths of the finite networks, separated by commas; every Dense layer "
              "without a declared width gets each in turn, the readout included.")
@click.option("--draws", type=click.IntRange(1), default=8, show_default=True,
              help="Independent random networks per width whose kernels are averaged.")
@click.option("--n-inputs", type=click.IntRange(2), default=8, show_default=True,
              help="Number of inputs (the first rows of the training set).")
@data_option(folders=False)
@standardize_option()
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the random networks; the same seed gives the same numbers.")
@click.option("--ntk-units", type=click.IntRange(1), default=1, show_default=True,
              help="Output units whose empirical NTK is averaged (each costs one gradient "
              "pass per input and draw).")
@click.option("--reference", type=click.Choice(["kernel", "layerwise"]), default="kernel",
              show_default=True,
              help="Infinite-width kernel to compare with: the fused one that every command "
              "uses, or its layer-by-layer reference.")
@output_options("Write the rows (width, draws, errors) to this CSV file, for nngp-lut plot "
                "convergence.")
@json_option("the rows and the slopes")
def mc(arch, tol, phi, table_path, depth, weight_var, bias_var, widths, draws, n_inputs, data_path,
       seed, ntk_units, reference, standardize, out, force, as_json, quiet, shape):
    """Sample random finite networks of an architecture (--arch, or the fully connected
    network of --phi or --table, --depth, --weight-var and --bias-var) at each width and
    print the relative Frobenius error of their empirical NNGP and NTK against the
    infinite-width kernels, and the fitted log-log slope of error against width (about
    -1/2: error ~ 1/sqrt(width)).  For a network whose kernel does not converge per network
    (SelfAttention at scaling '1/sqrt(n)', whose logits stay random), it says so and
    prints instead the mean over the draws (and heads) at the largest width against the
    infinite-width kernel: its error, its standard error, their ratio, and how the error
    falls with draws x heads.
    Needs JAX: pip install "nngp-lut[finite]"."""
    phi = network_flags(arch, phi, table_path, depth, weight_var, bias_var)
    shape = parse_shape(shape)
    check_output(out, force)  # before the work
    standardize = standardizing(standardize, data_path)
    with user_errors():
        montecarlo = finite_module("montecarlo")
        data = load_dataset(data_path)
        x = data.x_train[:n_inputs]
        refuse_padding("mc", inputs=x)
        x = standardize_rows(x, "inputs") if standardize else validate_inputs(x, "inputs")
        if x.shape[0] < 2:
            raise DataError("the data set has fewer than 2 training inputs")
        with stage_bars(quiet) as progress:
            network = network_of(arch, phi, table_path, depth, weight_var, bias_var,
                                 progress, tol)
            # A convolutional network takes images (NHWC): the rows reshaped (the Monte
            # Carlo side, montecarlo.empirical_kernels, samples the same shapes).
            x, = shaped(network, shape, data.image_shape, x)
            kinds = network.kinds  # a GRU or LSTM gives the NNGP only
            step = progress and (lambda done, total: progress("draws", done, total))
            if network.self_averaging:
                rows, slopes = montecarlo.convergence(
                    network, x, widths, draws, seed, get=kinds, ntk_units=ntk_units,
                    reference=reference, progress=step)
            else:  # only the mean over networks converges: no width slope
                rows, slopes = montecarlo.mean_convergence(
                    network, x, widths[-1], draws, seed, get=kinds, reference=reference,
                    progress=step)
        if out is not None:
            _write_rows(rows, out)
    if not network.self_averaging:
        return _mean_report(montecarlo, network, rows, slopes, widths[-1], draws, seed, x,
                            reference, out, as_json)
    names = [f"{kind}_{what}" for what in ("error", "rms") for kind in kinds]
    heads = [f"{kind.upper()} {what}" for what in ("error", "rms") for kind in kinds]
    lines = [f"{'width':>7} " + " ".join(f"{h:>11}" for h in heads)
             + f"   ({draws} draws of {x.shape[0]} inputs, seed {seed})"]
    lines += [f"{r['width']:>7} " + " ".join(f"{r[n]:>11.4f}" for n in names) for r in rows]
    if len(rows) > 1:
        lines.append(f"{'slope':>7} " + " ".join(f"{slopes[n]:>11.3f}" for n in names)
                     + "   (log error against log width; about -0.5 expected)")
    echo_table(lines, out, as_json, {"rows": rows, "slopes": slopes, "draws": draws,
                                     "seed": seed, "n_inputs": int(x.shape[0]),
                                     "reference": reference})
