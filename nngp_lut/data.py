"""Reading and checking users' data: arrays from .npy / .npz / .h5 / .csv, sizes."""

import re
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Input data that cannot be used (missing, empty, non-numeric, NaN, wrong shape)."""


def validate_inputs(x, name="x"):
    """A C-contiguous float64 (n, d) array with n, d >= 1 and finite entries."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} is not numeric") from None
    if a.ndim == 1:
        raise DataError(f"{name} must be 2-D (inputs x features); got shape {a.shape} "
                        "(reshape a single input to (1, d))")
    if a.ndim != 2:
        raise DataError(f"{name} must be 2-D (inputs x features); got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {a.shape})")
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise DataError(f"{name} has a NaN or inf value (row {bad[0]}, column {bad[1]})")
    return np.ascontiguousarray(a)


def standardize_rows(x, name="x"):
    """Each input minus its mean, divided by its standard deviation (the paper's code)."""
    a = validate_inputs(x, name)
    sd = a.std(axis=1, keepdims=True)
    if np.any(sd == 0.0):
        raise DataError(f"{name} row {int(np.argmin(sd))} is constant: it cannot be "
                        "standardised")
    return (a - a.mean(axis=1, keepdims=True)) / sd


_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(size):
    """Bytes from 4000000, "4MB", "2.5GB", "1GiB"."""
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        if size <= 0:
            raise ValueError("a memory size must be positive")
        return int(size)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(size))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read the size {size!r}; write e.g. 500MB, 4GB or 1GiB")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError("a memory size must be positive")
    return value


def load_array(path, key=None):
    """A 2-D float64 array from .npy, .npz (``key`` or the only array), .h5 (``key`` or the
    only dataset) or .csv (comma separated numbers, no header)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                a = z[_pick(list(z.keys()), key, p)]
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(p, "r") as h5:
                names = [k for k in h5.keys() if isinstance(h5[k], h5py.Dataset)]
                a = h5[_pick(names, key, p)][()]
        elif suffix == ".csv":
            a = np.loadtxt(p, delimiter=",", ndmin=2)
        else:
            raise DataError(f"{p}: unknown format (use .npy, .npz, .h5 or .csv)")
    except DataError:
        raise
    except (ValueError, OSError) as exc:
        raise DataError(f"{p}: cannot read it ({str(exc).splitlines()[0]})") from None
    if a.dtype.kind not in "biuf":
        raise DataError(f"{p}: the data are not numeric (dtype {a.dtype})")
    return a


def _pick(names, key, path):
    if key is not None:
        if key not in names:
            raise DataError(f"{path}: no array {key!r} (it has {', '.join(names) or 'none'})")
        return key
    if len(names) != 1:
        raise DataError(f"{path}: holds {len(names)} arrays ({', '.join(names)}); say which")
    return names[0]
