"""``nngp-lut mc``: finite random networks against the infinite-width kernels."""

import csv
import io

import click

from nngp_lut import _files
from nngp_lut.data import load_dataset, standardize_rows, validate_inputs
from nngp_lut.errors import DataError

from .common import (SHAPE_OPTION, check_output, data_option, finite_module, json_option,
                     network_flags, network_of, network_options, output_options, parse_shape,
                     shaped, stage_bars, standardize_option, standardizing, to_json, user_errors)


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
    -1/2: error ~ 1/sqrt(width)).
    Needs JAX: pip install "nngp-lut[finite]"."""
    phi = network_flags(arch, phi, table_path, depth, weight_var, bias_var)
    shape = parse_shape(shape)
    check_output(out, force)  # before the work
    standardize = standardizing(standardize, data_path)
    with user_errors():
        montecarlo = finite_module("montecarlo")
        data = load_dataset(data_path)
        x = data.x_train[:n_inputs]
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
            rows, slopes = montecarlo.convergence(
                network, x, widths, draws, seed, get=kinds, ntk_units=ntk_units,
                reference=reference,
                progress=progress and (lambda done, total: progress("draws", done, total)))
        if out is not None:
            _write_rows(rows, out)
    names = [f"{kind}_{what}" for what in ("error", "rms") for kind in kinds]
    heads = [f"{kind.upper()} {what}" for what in ("error", "rms") for kind in kinds]
    lines = [f"{'width':>7} " + " ".join(f"{h:>11}" for h in heads)
             + f"   ({draws} draws of {x.shape[0]} inputs, seed {seed})"]
    lines += [f"{r['width']:>7} " + " ".join(f"{r[n]:>11.4f}" for n in names) for r in rows]
    if len(rows) > 1:
        lines.append(f"{'slope':>7} " + " ".join(f"{slopes[n]:>11.3f}" for n in names)
                     + "   (log error against log width; about -0.5 expected)")
    if out is not None:
        lines.append(f"wrote {out}")
    click.echo("\n".join(lines), err=as_json)
    if as_json:
        click.echo(to_json({"rows": rows, "slopes": slopes, "draws": draws, "seed": seed,
                            "n_inputs": int(x.shape[0]), "reference": reference}))
