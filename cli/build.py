"""``nngp-lut build``: tabulate F_phi for an activation into a versioned HDF5 file."""

import time
from pathlib import Path

import click

from nngp_lut import tables
from nngp_lut.activations import builtin_names, get_activation

from .common import check_output, output_options, progress_bar, user_errors

G = tables.DEFAULT_GRID
E = dict(G, **tables.EXP_TYPE_GRID)


@click.command(short_help="Tabulate F_phi of an activation into an HDF5 file.")
@click.option("--phi", "phi", required=True, metavar="NAME_OR_EXPR",
              help="Activation: a built-in name (" + ", ".join(builtin_names()) + "), "
              "leaky_relu(slope=0.1), or an expression in x such as 'x*tanh(x)'.")
@output_options("Table file to write.  Default: NAME.h5 in the current folder.",
                quiet="summary")
@click.option("--variance-min", type=float, default=G["variance_min"], show_default=True,
              help="Smallest pre-activation variance the table covers.")
@click.option("--variance-max", type=float, default=G["variance_max"], show_default=True,
              help="Largest pre-activation variance the table covers.")
@click.option("--n-variance", type=click.IntRange(6), default=None,
              help=f"Nodes of the log-variance axis of the equal-variance table.  Default: "
              f"{G['n_variance']} ({E['n_variance']} for sin, cos).")
@click.option("--n-angle", type=click.IntRange(6), default=None,
              help=f"Nodes of the warped correlation-angle axis of the equal-variance table.  "
              f"Default: {G['n_angle']} ({E['n_angle']} for sin, cos).")
@click.option("--n-variance-derivative", type=click.IntRange(6), default=None,
              help=f"Nodes of the log-variance axis of the equal-variance table of "
              f"E[phi'(u)phi'(v)].  Default: {G['n_variance_derivative']} "
              f"({E['n_variance_derivative']} for sin, cos), or --n-variance scaled in that "
              "ratio.")
@click.option("--n-angle-derivative", type=click.IntRange(6), default=None,
              help=f"Nodes of the angle axis of the equal-variance table of "
              f"E[phi'(u)phi'(v)].  Default: {G['n_angle_derivative']} "
              f"({E['n_angle_derivative']} for sin, cos), or --n-angle scaled in that ratio.")
@click.option("--n-unequal", type=click.IntRange(6), default=None,
              help=f"Nodes of each log-variance axis of the unequal-variance (3-D) table.  "
              f"Default: {G['n_unequal']} ({E['n_unequal']} for sin, cos).")
@click.option("--n-unequal-angle", type=click.IntRange(6), default=None,
              help=f"Nodes of the angle axis of the unequal-variance table.  Default: "
              f"{G['n_unequal_angle']} ({E['n_unequal_angle']} for sin, cos).")
@click.option("--n-unequal-derivative", type=click.IntRange(6), default=None,
              help=f"Nodes of each log-variance axis of the unequal-variance table of "
              f"E[phi'(u)phi'(v)].  Default: {G['n_unequal_derivative']} "
              f"({E['n_unequal_derivative']} for sin, cos), or --n-unequal scaled in that "
              "ratio.")
@click.option("--n-unequal-angle-derivative", type=click.IntRange(6), default=None,
              help=f"Nodes of the angle axis of the unequal-variance table of "
              f"E[phi'(u)phi'(v)].  Default: {G['n_unequal_angle_derivative']} "
              f"({E['n_unequal_angle_derivative']} for sin, cos), or --n-unequal-angle scaled "
              "in that ratio.")
@click.option("--unequal-variance-max", type=float, default=None,
              help="Largest variance of the unequal-variance table.  Default: "
              "--variance-max (25 for sin, cos).")
def build(phi, out, force, quiet, variance_min, variance_max, n_variance, n_angle,
          n_variance_derivative, n_angle_derivative, n_unequal, n_unequal_angle,
          n_unequal_derivative, n_unequal_angle_derivative, unequal_variance_max):
    """Build the F_phi table of an activation (E[phi(u)phi(v)], its derivative table and the
    moments) and write it to an HDF5 file."""
    if variance_min <= 0 or variance_max <= variance_min:
        raise click.UsageError("need 0 < --variance-min < --variance-max")
    with user_errors():
        act = get_activation(phi)
        if out is None:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in act.name)
            out = Path(f"{safe}.h5")
        check_output(out, force)
        start = time.perf_counter()
        with progress_bar(f"building {act.name}", quiet) as progress:
            table = tables.build_table(act, variance_min=variance_min,
                                       variance_max=variance_max, n_variance=n_variance,
                                       n_angle=n_angle,
                                       n_variance_derivative=n_variance_derivative,
                                       n_angle_derivative=n_angle_derivative,
                                       n_unequal=n_unequal,
                                       n_unequal_angle=n_unequal_angle,
                                       n_unequal_derivative=n_unequal_derivative,
                                       n_unequal_angle_derivative=n_unequal_angle_derivative,
                                       unequal_variance_max=unequal_variance_max,
                                       progress=progress)
        table.save(out, force=force)
    if not quiet:
        err = table.metadata["measured_error"]
        unequal = f", {err['F_unequal']:.2e} (unequal variances)" if "F_unequal" in err else ""
        click.echo(f"wrote {out}: {act.name}, {time.perf_counter() - start:.1f} s, measured "
                   f"max error {err['F']:.2e} (F){unequal} at {err['points']} off-grid points",
                   err=True)
