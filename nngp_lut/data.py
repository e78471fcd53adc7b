"""Reading and checking users' data: arrays from .npy / .npz / .h5 / .csv, sizes."""

from __future__ import annotations

import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import paper
from ._files import atomic_write, os_failure
from .errors import DataError, NNGPWarning, ParameterError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ._typing import PathLike

__all__ = ["DataError", "Dataset", "STANDARDIZE_MIN_FEATURES", "StandardizeWarning",
           "balanced_subset", "is_labels", "load_array", "load_dataset", "make_sample",
           "mnist_paper_split", "parse_size", "standardize_rows", "validate_inputs"]


def validate_inputs(x: ArrayLike, name: str = "x") -> np.ndarray:
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


#: Below this many features, standardising each input across its features (the paper's
#: convention for images) throws away most of what an input says, and warns.
STANDARDIZE_MIN_FEATURES = 50


class StandardizeWarning(NNGPWarning):
    """Per-example standardisation of inputs with few features."""


def standardize_rows(x: ArrayLike, name: str = "x") -> np.ndarray:
    """Each input minus its mean, divided by its standard deviation (the paper's code).

    Images (n, H, W[, C]) are standardised over all their values and keep their shape.

    Warns (:class:`StandardizeWarning`) when the inputs have fewer than
    :data:`STANDARDIZE_MIN_FEATURES` features: a d-feature input keeps only d - 2 degrees of
    freedom, and for tabular features on different scales the result is rarely meaningful.
    """
    if np.ndim(x) > 2:
        a = np.asarray(x)
        return standardize_rows(a.reshape(a.shape[0], -1), name).reshape(a.shape)
    a = validate_inputs(x, name)
    if a.shape[1] < STANDARDIZE_MIN_FEATURES:
        warnings.warn(f"standardising each input across its {a.shape[1]} features "
                      "(the paper's convention for images) loses information on "
                      "low-dimensional data; consider leaving it off (--no-standardize)",
                      StandardizeWarning, stacklevel=2)
    sd = a.std(axis=1, keepdims=True)
    if np.any(sd == 0.0):
        raise DataError(f"{name} row {int(np.argmin(sd))} is constant: it cannot be "
                        "standardised")
    return (a - a.mean(axis=1, keepdims=True)) / sd


_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(size: int | float | str) -> int:
    """Bytes from 4000000, "4MB", "2.5GB", "1GiB"."""
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        if size <= 0:
            raise ParameterError("a memory size must be positive")
        return int(size)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(size))
    if not m or m.group(2).lower() not in _UNITS:
        raise ParameterError(f"cannot read the size {size!r}; write e.g. 500MB, 4GB or 1GiB")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ParameterError("a memory size must be positive")
    return value


def load_array(path: PathLike, key: str | None = None) -> np.ndarray:
    """A 2-D float64 array from .npy, .npz (``key`` or the only array), .h5 (``key`` or the
    only dataset) or .csv (comma separated numbers, no header)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix in (".npz", ".h5", ".hdf5"):
        (a,) = _read_container(p, lambda names: [_pick(names, key, p)]).values()
    elif suffix in (".npy", ".csv"):
        try:
            a = (np.load(p, allow_pickle=False) if suffix == ".npy"
                 else np.loadtxt(p, delimiter=",", ndmin=2))
        except _DAMAGE as exc:
            raise _unreadable(p, exc) from None
    else:
        raise DataError(f"{p}: unknown format (use .npy, .npz, .h5 or .csv)")
    if a.dtype.kind not in "biuf":
        raise DataError(f"{p}: the data are not numeric (dtype {a.dtype})")
    return a


def _read_container(path, choose):
    """The arrays of an .npz or .h5 file named by ``choose(names of all its arrays)``."""
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in choose(list(z.keys()))}
        import h5py

        with h5py.File(path, "r") as h5:
            names = [k for k in h5.keys() if isinstance(h5[k], h5py.Dataset)]
            return {k: h5[k][()] for k in choose(names)}
    except DataError:
        raise
    except _DAMAGE as exc:
        raise _unreadable(path, exc) from None


#: What numpy, zipfile and h5py raise on a truncated, bit-flipped or wrong-format file.
_DAMAGE = (ValueError, OSError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile)


def _unreadable(path, exc):
    if isinstance(exc, (PermissionError, IsADirectoryError)):
        return os_failure(exc, path, "read")
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"{path}: cannot read it ({first}); is it damaged or truncated?")


def _pick(names, key, path):
    if key is not None:
        if key not in names:
            raise DataError(f"{path}: no array {key!r} (it has {', '.join(names) or 'none'})")
        return key
    if len(names) != 1:
        raise DataError(f"{path}: holds {len(names)} arrays ({', '.join(names)}); say which")
    return names[0]


# --- datasets: train / test (/ validation) splits, class-balanced subsets, the sample --------
#: The embedded MNIST sample (see nngp_lut/_data/README.md).
SAMPLE_PATH = Path(__file__).parent / "_data" / "mnist_sample.npz"
#: Shape of the embedded sample's images (stored one row of 784 pixels per image).
SAMPLE_IMAGE_SHAPE = (28, 28)
#: The paper's seed for class-balanced subsets (brain-research/nngp).
SUBSET_SEED = paper.SUBSET_SEED
_PARTS = ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val")


def is_labels(y: ArrayLike) -> bool:
    """Integer targets are class labels (classification); float targets are regression."""
    return np.asarray(y).dtype.kind in "biu"


@dataclass
class Dataset:
    """Inputs (n, d) float64 and targets: integer labels (n,) or float targets (n, m)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray = None
    y_val: np.ndarray = None
    #: Shape of one input when the file stores images ((H, W) or (H, W, C)): convolutional
    #: networks reshape the rows to it (None: vectors, or flattened images).
    image_shape: tuple = None

    @property
    def classification(self):
        """Integer labels mean classification; float targets mean regression."""
        return is_labels(self.y_train)


def load_dataset(path: PathLike | None = None) -> Dataset:
    """A :class:`Dataset` from a file or folder (``path=None``: the embedded MNIST sample).

    Formats, recognised by name (see :mod:`nngp_lut.formats`):

    * .npz or .h5 holding x_train, y_train, x_test, y_test and optionally x_val, y_val;
    * MNIST-style IDX files (a folder, or one of its files; gzipped or not): MNIST,
      Fashion-MNIST, KMNIST;
    * the CIFAR-10 python batches (``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``);
    * CSV with a header row (train.csv / test.csv in a folder, NAME_train.csv beside
      NAME_test.csv, or a ``split`` column).

    Images with more than two dimensions become one row per example; IDX and CIFAR-10
    pixels are read as floats in [0, 1].
    """
    from . import formats

    p = SAMPLE_PATH if path is None else Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    kind = "container" if p.is_file() and p.suffix.lower() in (".npz", ".h5", ".hdf5") \
        else formats.sniff(p)
    if kind is None:
        raise DataError(f"{p}: unknown dataset format (use .npz or .h5, a folder or the files "
                        "of MNIST-style IDX files, the CIFAR-10 python batches or their "
                        ".tar.gz, or CSV with a header row)")
    if kind == "container":
        arrays = _read_container(p, lambda names: [k for k in names if k in _PARTS])
    else:
        arrays = {"idx": formats.read_idx_dataset, "cifar10": formats.read_cifar10,
                  "csv": formats.read_csv_dataset}[kind](p)
    missing = [k for k in _PARTS[:4] if k not in arrays]
    if missing:
        raise DataError(f"{p}: missing {', '.join(missing)} (a dataset holds x_train, "
                        "y_train, x_test, y_test and optionally x_val, y_val)")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"{p}: x_val and y_val go together")
    parts, image_shape = {}, None
    for split in ("train", "test", "val"):
        if f"x_{split}" not in arrays:
            continue
        x = np.asarray(arrays[f"x_{split}"])
        if x.dtype.kind not in "biuf":
            raise DataError(f"{p}: x_{split} is not numeric (dtype {x.dtype})")
        if x.ndim > 2:  # images: one row per example (pixel by pixel), the shape kept
            image_shape = image_shape or tuple(int(s) for s in x.shape[1:])
            x = x.reshape(x.shape[0], -1)
        parts[f"x_{split}"] = validate_inputs(x, f"x_{split}")
        parts[f"y_{split}"] = _targets(arrays[f"y_{split}"], x.shape[0], f"y_{split}", p)
    if path is None:  # the embedded sample is MNIST, stored flattened
        image_shape = SAMPLE_IMAGE_SHAPE
    data = Dataset(**parts, image_shape=image_shape)
    kinds = {is_labels(parts[k]) for k in parts if k.startswith("y_")}
    if len(kinds) > 1:
        raise DataError(f"{p}: the targets mix integer labels and float values")
    for split in ("test", "val"):
        x = getattr(data, f"x_{split}")
        if x is not None and x.shape[1] != data.x_train.shape[1]:
            raise DataError(f"{p}: x_train has {data.x_train.shape[1]} features but x_{split} "
                            f"has {x.shape[1]}")
    return data


def _targets(y, n, name, path):
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{path}: {name} is not numeric (dtype {y.dtype})")
    if y.shape[0] != n:
        raise DataError(f"{path}: {name} has {y.shape[0]} rows but x_{name[2:]} has {n}")
    if is_labels(y):
        if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise DataError(f"{path}: integer labels {name} must have shape (n,)")
        y = y.reshape(-1).astype(np.int64)
        if y.min() < 0:
            raise DataError(f"{path}: {name} has a negative class label")
        return y
    if y.ndim > 2:
        raise DataError(f"{path}: {name} must have shape (n,) or (n, outputs)")
    y = y.astype(np.float64).reshape(n, -1)
    if not np.all(np.isfinite(y)):
        raise DataError(f"{path}: {name} has a NaN or inf value")
    return y


def balanced_subset(labels: ArrayLike, n: int, seed: int = SUBSET_SEED) -> np.ndarray:
    """Indices of the paper's class-balanced subset of size n: the first n / c examples of
    each of the c classes, in class order, then shuffled with RandomState(seed)."""
    classes = np.unique(labels)
    if n % classes.size:
        raise DataError(f"a class-balanced subset needs a size divisible by the number of "
                        f"classes ({classes.size}); got {n}")
    per = n // classes.size
    idx = []
    for c in classes:
        where = np.flatnonzero(labels == c)
        if where.size < per:
            raise DataError(f"class {c} has only {where.size} examples; a balanced subset of "
                            f"{n} needs {per} of each")
        idx.append(where[:per])
    idx = np.concatenate(idx)
    np.random.RandomState(seed).shuffle(idx)
    return idx


def mnist_paper_split(mnist_path: PathLike) -> Dataset:
    """Lee et al.'s MNIST split of the 60k training images: validation = the first 10k,
    train = the other 50k; test = the 10k test images (DESIGN.md section 2)."""
    with np.load(mnist_path, allow_pickle=False) as z:
        x, y = z["x_train"], z["y_train"]
        v = paper.MNIST_N_VAL
        return Dataset(x[v:], y[v:], z["x_test"], z["y_test"], x[:v], y[:v])


def make_sample(mnist_path: PathLike, out: PathLike = SAMPLE_PATH, n_train: int = 1000,
                n_val: int = 1000) -> None:
    """Write the embedded sample: the paper's balanced 1k subset of the 50k train set, the
    first 1000 validation images and all 10k test images, as uint8 pixels."""
    split = mnist_paper_split(mnist_path)
    idx = balanced_subset(split.y_train, n_train)
    arrays = dict(x_train=split.x_train[idx], y_train=split.y_train[idx],
                  x_val=split.x_val[:n_val], y_val=split.y_val[:n_val], x_test=split.x_test,
                  y_test=split.y_test)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(out, write)
