"""Reading and checking users' data: arrays from .npy / .npz / .h5 / .csv, sizes."""

from __future__ import annotations

import math
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import paper
from ._files import atomic_write, os_failure
from .errors import DataError, MemoryBudgetError, NNGPError, NNGPWarning, ParameterError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ._typing import PathLike

__all__ = ["DataError", "Dataset", "STANDARDIZE_MIN_FEATURES", "StandardizeWarning",
           "balanced_subset", "is_labels", "load_array", "load_dataset", "make_sample",
           "mnist_paper_split", "parse_size", "standardize_rows", "validate_inputs"]


def validate_inputs(x: ArrayLike, name: str = "x", padded: bool = False) -> np.ndarray:
    """A C-contiguous float64 (n, d) array with n, d >= 1 and finite entries.

    ``padded``: NaN is allowed too, as the padding of sequences of unequal length (a
    recurrent network checks where it is: whole steps, before or after a sequence's own)."""
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
    bad = np.isinf(a) if padded else ~np.isfinite(a)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        what = "an inf" if padded else "a NaN or inf"
        hint = " (NaN marks the padding of sequences, for a network with a recurrent layer)" \
            if not padded and np.isnan(a[i, j]) else ""
        raise DataError(f"{name} has {what} value (row {i}, column {j}){hint}")
    return np.ascontiguousarray(a)


#: Below this many features, standardising each input across its features (the paper's
#: convention for images) throws away most of what an input says, and warns.
STANDARDIZE_MIN_FEATURES = 50


class StandardizeWarning(NNGPWarning):
    """Per-example standardisation of inputs with few features."""


def standardize_rows(x: ArrayLike, name: str = "x", padded: bool = False) -> np.ndarray:
    """Each input minus its mean, divided by its standard deviation (the paper's code).

    Images (n, H, W[, C]) are standardised over all their values and keep their shape.
    ``padded`` (sequences of unequal length, padded with NaN): over each input's own values,
    the padding left NaN.

    Warns (:class:`StandardizeWarning`) when the inputs have fewer than
    :data:`STANDARDIZE_MIN_FEATURES` features: a d-feature input keeps only d - 2 degrees of
    freedom, and for tabular features on different scales the result is rarely meaningful.
    """
    if np.ndim(x) > 2:
        a = np.asarray(x)
        return standardize_rows(a.reshape(a.shape[0], -1), name, padded).reshape(a.shape)
    a = validate_inputs(x, name, padded)
    if a.shape[1] < STANDARDIZE_MIN_FEATURES:
        warnings.warn(f"standardising each input across its {a.shape[1]} features "
                      "(the paper's convention for images) loses information on "
                      "low-dimensional data; consider leaving it off (--no-standardize)",
                      StandardizeWarning, stacklevel=2)
    mean, std = (np.nanmean, np.nanstd) if padded else (np.mean, np.std)
    with warnings.catch_warnings():  # an all-NaN row: the recurrent network names it
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = std(a, axis=1, keepdims=True)
        centre = mean(a, axis=1, keepdims=True)
    if np.any(sd == 0.0):
        raise DataError(f"{name} row {int(np.argmin(sd))} is constant: it cannot be "
                        "standardised")
    return (a - centre) / sd


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


def load_array(path: PathLike, key: str | None = None, memory: int | str | None = None
               ) -> np.ndarray:
    """A 2-D float64 array from .npy, .npz (``key`` or the only array), .h5 (``key`` or the
    only dataset) or .csv (comma separated numbers; a header row is detected and skipped,
    :func:`nngp_lut.formats.read_csv`).

    The array's size is read from the file's header first: an array that would not fit the
    memory budget ``memory`` ("auto": 75% of the available memory) is refused before it is
    read (:class:`~nngp_lut.errors.MemoryBudgetError`).
    """
    from .formats import read_csv_array
    from .linalg import resolve_memory

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    limit = resolve_memory(memory)
    suffix = p.suffix.lower()
    if suffix in (".npz", ".npy", ".h5", ".hdf5"):
        (a,) = _read_container(p, lambda names: [_pick(names, key, p)], limit).values()
    elif suffix == ".csv":
        a = read_csv_array(p, limit)
    else:
        raise DataError(f"{p}: unknown format (use .npy, .npz, .h5 or .csv)")
    if a.dtype.kind not in "biuf":
        raise DataError(f"{p}: the data are not numeric (dtype {a.dtype})")
    return a


def _read_container(path, choose, limit=None):
    """The arrays of an .npy, .npz or .h5 file named by ``choose(names of all its arrays)``
    (an .npy file holds one array, named ""), read only when they fit ``limit`` bytes."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            with open(path, "rb") as f:
                names = choose([""])
                check_budget(path, _npy_bytes(f), limit)
                f.seek(0)
                return {"": np.load(f, allow_pickle=False)}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = choose(list(z.keys()))
                need = 0
                for k in names:
                    with z.zip.open(f"{k}.npy") as f:
                        need += _npy_bytes(f)
                check_budget(path, need, limit)
                return {k: z[k] for k in names}
        import h5py

        with h5py.File(path, "r") as h5:
            names = choose([k for k in h5.keys() if isinstance(h5[k], h5py.Dataset)])
            check_budget(path, sum(_in_memory(h5[k].shape, h5[k].dtype) for k in names),
                         limit)
            return {k: h5[k][()] for k in names}
    except NNGPError:  # choose's and check_budget's own messages
        raise
    except _DAMAGE as exc:
        raise unreadable(path, exc) from None


def _in_memory(shape, dtype):
    """Bytes of an array and its float64 copy."""
    return math.prod(shape) * (np.dtype(dtype).itemsize + 8)


def _npy_bytes(f):
    """Bytes in memory of the array of the .npy stream ``f``, from its header alone."""
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(f)
    return _in_memory(shape, dtype)


def check_budget(path: PathLike, need: int, limit: int | None) -> None:
    """Refuse, before it is read, a data file whose arrays need ``need`` bytes of memory
    when that is more than ``limit`` (the memory budget in bytes; None: no limit)."""
    if limit is not None and need > limit:
        raise MemoryBudgetError(f"{path}: its data need {need / 1e9:.3g} GB of memory, more "
                                f"than the {limit / 1e9:.3g} GB they may use (75% of the "
                                "memory available, unless a budget is given): free memory "
                                "or use a smaller file")


#: What numpy, zipfile, gzip, zlib and h5py raise on a truncated, bit-flipped or
#: wrong-format file.
_DAMAGE = (ValueError, OSError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile,
           zlib.error)
#: What a reader expected, by suffix, for messages.
_KINDS = {".npy": "a NumPy .npy array", ".npz": "a NumPy .npz archive", ".h5": "an HDF5 file",
          ".hdf5": "an HDF5 file", ".gz": "a gzip file", ".csv": "CSV text"}


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unreadable(path: PathLike, exc: BaseException, what: str | None = None) -> Exception:
    """The NNGPError of one line for a data file that cannot be read: a FileFailure with
    advice for a missing file or a permission, else a DataError naming the file, what it
    should have been (``what``, default by suffix) and what is wrong."""
    path = Path(path)
    failure = os_failure(exc, path, "read")
    if isinstance(failure, NNGPError):  # missing, no permission, a folder: with advice
        return failure
    what = what or _KINDS.get(path.suffix.lower(), "a data file")
    text, advice = str(exc), "is it damaged, or another kind of file?"
    if isinstance(exc, EOFError) or "ended before the end-of-stream" in text:
        reason, advice = "it ends early", "it was cut short: download or write it again"
    elif isinstance(exc, zlib.error) or "CRC check failed" in text:
        reason = f"its compressed data are damaged ({one_line(exc)})"
    elif "pickle" in text or "magic string" in text or "magic number" in text:
        reason = "it does not start as one does"  # numpy offers to unpickle it: never
    elif isinstance(exc, UnicodeDecodeError):
        reason = "it is not UTF-8 text"
    else:
        reason = one_line(exc)
    return DataError(f"{path}: cannot read it as {what}: {reason}; {advice}")


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


def load_dataset(path: PathLike | None = None, memory: int | str | None = None) -> Dataset:
    """A :class:`Dataset` from a file or folder (``path=None``: the embedded MNIST sample).

    Formats, recognised by name (see :mod:`nngp_lut.formats`):

    * .npz or .h5 holding x_train, y_train, x_test, y_test and optionally x_val, y_val;
    * MNIST-style IDX files (a folder, or one of its files; gzipped or not): MNIST,
      Fashion-MNIST, KMNIST;
    * the CIFAR-10 python batches (``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``);
    * CSV with or without a header row (train.csv / test.csv in a folder, NAME_train.csv
      beside NAME_test.csv, or a ``split`` column).

    Images with more than two dimensions become one row per example; IDX and CIFAR-10
    pixels are read as floats in [0, 1].  Every file's size in memory is checked against
    the budget ``memory`` ("auto": 75% of the available memory) before it is read.
    """
    from . import formats
    from .linalg import resolve_memory

    p = SAMPLE_PATH if path is None else Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    kind = "container" if p.is_file() and p.suffix.lower() in (".npz", ".h5", ".hdf5") \
        else formats.sniff(p)
    if kind is None:
        raise DataError(f"{p}: unknown dataset format (use .npz or .h5, a folder or the files "
                        "of MNIST-style IDX files, the CIFAR-10 python batches or their "
                        ".tar.gz, or CSV files)")
    if kind == "container":
        arrays = _read_container(p, lambda names: [k for k in names if k in _PARTS],
                                 resolve_memory(memory))
    else:
        arrays = {"idx": formats.read_idx_dataset, "cifar10": formats.read_cifar10,
                  "csv": formats.read_csv_dataset}[kind](p, resolve_memory(memory))
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
        # NaN is padding (sequences of unequal length): the network decides whether it may be
        parts[f"x_{split}"] = validate_inputs(x, f"x_{split}", padded=True)
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
