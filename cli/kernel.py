"""``nngp-lut kernel``: the deep NNGP kernel of input files, to .npy or HDF5."""

import errno
import shutil

import click
import numpy as np

from nngp_lut import _files, cluster
from nngp_lut.data import DataError, standardize_rows
from nngp_lut.errors import DiskFull
from nngp_lut.kernel import DEFAULT_MEMORY, nngp_kernel

from .common import (BN_REFERENCE_OPTION, KERNEL_OPTION, SHAPE_OPTION, check_output,
                     cluster_client, cluster_options, load_array_spec, memory_option,
                     network_flags, network_of, network_options, output_options, parse_shape,
                     shaped, stage_bars, standardize_option, user_errors, with_bn_reference)


@click.command(short_help="The NNGP or NTK of input files.")
@network_options
@KERNEL_OPTION
@SHAPE_OPTION
@BN_REFERENCE_OPTION
@click.option("--x1", required=True, metavar="FILE[:KEY]",
              help="Inputs, one per row: .npy, .npz, .h5 or .csv (KEY picks an array; a "
              "CSV header row is skipped, every column is a feature).")
@click.option("--x2", default=None, metavar="FILE[:KEY]",
              help="Second inputs; omitted: the symmetric kernel of x1 with itself.")
@standardize_option(switch=False)
@click.option("--all-depths", is_flag=True,
              help="Write K^0..K^L (shape (L+1, n1, n2)) from one pass.")
@memory_option("the kernel in RAM", default=DEFAULT_MEMORY)
@output_options("Output: K.npy (in RAM) or K.h5 (dataset 'kernel'; streamed tile by tile "
                "when larger than --memory).", required=True, quiet="summary")
@cluster_options
def kernel(phi, table_path, depth, weight_var, bias_var, x1, x2, standardize, all_depths,
           out, memory, force, quiet, arch, tol, kernel_kind, shape, bn_reference, scheduler,
           workers):
    """Compute the NNGP kernel K^L(x1, x2) (or with --kernel ntk the NTK) of a deep fully
    connected network, or of any --arch (--all-depths: after each Dense of its main chain
    and at its end).  With --workers or --scheduler the tiles are Dask tasks on a cluster;
    an .h5 output is then written tile by tile as they arrive, by this process alone."""
    phi = network_flags(arch, phi, table_path, depth, weight_var, bias_var)
    if out.suffix.lower() not in (".npy", ".h5", ".hdf5"):
        raise click.UsageError("--out must end in .npy, .h5 or .hdf5")
    shape = parse_shape(shape)
    check_output(out, force)
    with user_errors(), _files.lock(out), cluster_client(scheduler, workers) as client:
        a = load_array_spec(x1)
        b = None if x2 is None else load_array_spec(x2)
        if b is not None and np.ndim(a) == np.ndim(b) == 2 and a.shape[1] != b.shape[1]:
            raise DataError(f"x1 has {a.shape[1]} features but x2 has {b.shape[1]}")
        h5 = out.suffix.lower() != ".npy"
        with stage_bars(quiet) as progress:
            network = network_of(arch, phi, table_path, depth, weight_var, bias_var,
                                 progress, tol)
            a, b = shaped(network, shape, None, a, b)
            network = with_bn_reference(network, bn_reference, shape, None, standardize)
            label = "kernel" if network.rank == 0 else \
                f"kernel [{network.storage(np.shape(a)[1:])}]"
            _check_room(out, np.shape(a), None if b is None else np.shape(b),
                        network.depth + 1 if all_depths else 1)
            tick = progress and (lambda done, total: progress(label, done, total))
            if client is None:
                result = nngp_kernel(a, b, network=network, get=kernel_kind,
                                     standardize=standardize, all_depths=all_depths,
                                     memory=memory, out=out if h5 else None, progress=tick)
            else:
                if standardize:
                    a = standardize_rows(a, "x1", network.recurrent)
                    b = None if b is None else standardize_rows(b, "x2", network.recurrent)
                result = cluster.kernel(client, network, a, b, get=kernel_kind,
                                        all_depths=all_depths, out=out if h5 else None,
                                        progress=tick)
        if not h5:
            _save_npy(result, out)
        elif not isinstance(result, str):  # fitted in RAM: write it atomically
            _save_h5(result, out)
    if not quiet:
        click.echo(f"wrote {out}", err=True)


def _check_room(out, shape1, shape2, layers):
    """Refuse before the work when the output's folder has too little free disk.  (A full
    disk met while h5py streams the kernel leaves HDF5 in a state that crashes Python.)"""
    if len(shape1) < 2:
        return  # not inputs: the library's validation says why
    n1 = shape1[0]
    n2 = n1 if shape2 is None else shape2[0]
    need = 8 * layers * n1 * n2
    free = shutil.disk_usage(out.parent).free
    if free < need * 1.01 + 2**20:
        raise DiskFull(errno.ENOSPC, f"{out.parent} has {free / 1e9:.3g} GB free; the kernel "
                       f"needs {need / 1e9:.3g} GB: free space or write elsewhere")


def _save_npy(arr, out):
    def write(tmp):
        with open(tmp, "wb") as fh:
            np.save(fh, arr)

    _files.atomic_write(out, write)


def _save_h5(arr, out):
    import h5py

    def write(tmp):
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("kernel", data=arr)

    _files.atomic_write(out, write)
