"""Entry point: ``nngp-lut COMMAND``."""

import click

from nngp_lut import __version__

from .build import build
from .common import Boundary
from .compare import compare
from .info import info
from .kernel import kernel
from .mc import mc
from .plot import plot
from .predict import predict
from .search import search


@click.group(cls=Boundary, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="nngp-lut")
def cli():
    """Exact Bayesian inference with infinitely wide deep networks (NNGP) on CPU, from
    look-up tables of the activation's bivariate Gaussian expectation F_phi."""


cli.add_command(build)
cli.add_command(info)
cli.add_command(kernel)
cli.add_command(predict)
cli.add_command(search)
cli.add_command(plot)
cli.add_command(mc)
cli.add_command(compare)


def main():
    cli()
