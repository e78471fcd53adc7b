"""``nngp-lut info``: what a table file holds, after validating it."""

from pathlib import Path

import click

from nngp_lut import tables

from .common import json_option, to_json, user_errors


@click.command(short_help="Validate a table file and describe it.")
@click.argument("path", type=click.Path(path_type=Path))
@json_option("the description", report=False)
def info(path, as_json):
    """Validate a table file and describe it: format, activation, grid, measured error."""
    with user_errors():
        data = tables.read_info(path)
    if as_json:
        click.echo(to_json(dict(sorted(data.items()))))
        return
    meta = data["metadata"]
    grid = meta["grid"]
    err = meta.get("measured_error", {})
    lines = [
        f"file            {path}",
        f"format          {data['format']} v{data['format_version']} "
        f"(written by nngp-lut {data['package_version']} on {data['created']})",
        f"activation      {data['activation_name']}  [{data['activation_source']}]",
        f"variance domain [{grid['variance_min']:.3g}, {grid['variance_max']:.3g}]"
        + ("  (homogeneous: any variance by scaling)" if meta.get("homogeneity_degree")
           is not None else ""),
        f"grid            {grid['n_variance']} x {grid['n_angle']}  "
        f"({grid['variance_axis']}; {grid['angle_axis']})"
        + (f"; unequal variances {_unequal(grid, '')}" if grid.get("n_unequal") else ""),
        f"quadrature      {meta['quadrature']['rule']}",
        f"derivative      {'no' if not meta.get('has_derivative') else 'yes, grids '}"
        # Files of format version 1 have no derivative variance axes (theirs are F's), and
        # those written before issue #12 no derivative angle axes either.
        + (f"{grid.get('n_variance_derivative', grid['n_variance'])} x "
           f"{grid.get('n_angle_derivative', grid['n_angle'])} (equal), "
           f"{_unequal(grid, '_derivative')} (unequal)"
           if meta.get("has_derivative") else ""),
        f"measured error  F {err.get('F', float('nan')):.2e}, dF {err.get('dF', float('nan')):.2e} "
        f"(max over {err.get('points', 0)} off-grid points, relative to E[phi^2])",
    ]
    click.echo("\n".join(lines))


def _unequal(grid, suffix):
    """'n x n x m' of the 3-D table of F (suffix '') or of the derivative ('_derivative');
    a version-1 file's derivative table has F's variance axes (and, before issue #12, F's
    angle axis)."""
    n = grid.get(f"n_unequal{suffix}", grid.get("n_unequal"))
    m = grid.get(f"n_unequal_angle{suffix}", grid.get("n_unequal_angle"))
    return f"{n} x {n} x {m}"
