"""Readers of the dataset formats fields ship, each returning the arrays of a dataset
(x_train, y_train, x_test, y_test and optionally x_val, y_val) for :func:`load_dataset`.

* **IDX** (MNIST, Fashion-MNIST, KMNIST): a folder holding ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``,
  each optionally gzipped (``.gz``) and with ``.idx`` for ``-idx`` as some mirrors name them;
  or any one of those files (its siblings are found beside it).  Format: big-endian magic
  0x0000 TT DD (TT = 0x08 for unsigned bytes, DD dimensions), DD big-endian int32 sizes, the
  data.  Pixels are read as floats in [0, 1] (divided by 255).
* **CIFAR-10 python** (``cifar-10-python.tar.gz`` or its folder ``cifar-10-batches-py/``):
  ``data_batch_1`` .. ``data_batch_5`` are the training set, ``test_batch`` the test set;
  each is a pickled dict with ``data`` (n x 3072 unsigned bytes, channel-major 3 x 32 x 32)
  and ``labels``.  The pickles are read by an unpickler that builds nothing but numpy arrays,
  lists and dicts (a pickle can otherwise run code).  Pixels are read as floats in [0, 1].
* **CSV with a header row**: a folder holding ``train.csv`` and ``test.csv`` (and optionally
  ``val.csv``); or a file ``NAME.csv`` whose name contains ``train``, with the test file
  named the same with ``test`` (and optionally ``val``) in its place; or one file with a
  column ``split`` whose values are ``train``, ``test`` (and optionally ``val``).  The
  target is the column named ``label``, ``labels``, ``y``, ``target`` or ``class`` (any
  case), else the last column; every other column is a feature.  Targets written as
  integers (no decimal point) are class labels; other numbers are regression targets;
  words are class names (numbered in sorted order).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import importlib
import io
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np

from .data import DataError

__all__ = ["CSV_TARGET_NAMES", "IDX_FILES", "read_cifar10", "read_csv_dataset", "read_idx",
           "read_idx_dataset", "sniff"]

#: IDX files of a dataset: (split, kind) -> canonical file name (without .gz).
IDX_FILES = {("train", "x"): "train-images-idx3-ubyte", ("train", "y"): "train-labels-idx1-ubyte",
             ("test", "x"): "t10k-images-idx3-ubyte", ("test", "y"): "t10k-labels-idx1-ubyte"}
_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx[13]-ubyte(\.gz)?$")
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: CIFAR-10 python batches: training, then test.
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
#: Header names (any case) of the target column of a CSV dataset.
CSV_TARGET_NAMES = ("label", "labels", "y", "target", "class")


def sniff(path: Path) -> str | None:
    """Which reader a path needs: "idx", "cifar10", "csv" or None (not recognised)."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        if _idx_files(path, required=False):
            return "idx"
        if _cifar_dir(path) is not None:
            return "cifar10"
        if (path / "train.csv").is_file():
            return "csv"
        return None
    if _IDX_NAME.match(path.name):
        return "idx"
    if name.endswith((".tar.gz", ".tgz")):
        return "cifar10"
    if name.endswith(".csv"):
        return "csv"
    return None


# --- IDX -------------------------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """The array of one IDX file (gzipped or not)."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{path}: IDX header cut short")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">i4", ndim, 4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - head != count * dtype.itemsize:
        raise DataError(f"{path}: IDX data hold {len(raw) - head} bytes, the header says "
                        f"{count * dtype.itemsize} (shape {shape})")
    return np.frombuffer(raw, dtype, count, head).reshape(shape)


def _idx_files(folder, required=True):
    found = {}
    for f in folder.iterdir():
        m = _IDX_NAME.match(f.name)
        if m:
            found[("train" if m.group(1) == "train" else "test",
                   "x" if m.group(2) == "images" else "y")] = f
    if not found and not required:
        return None
    missing = [IDX_FILES[k] for k in IDX_FILES if k not in found]
    if missing:
        raise DataError(f"{folder}: an IDX dataset needs {', '.join(missing)} (.gz or not) "
                        "beside the others")
    return found


def read_idx_dataset(path: Path) -> dict:
    """The arrays of an IDX dataset: a folder, or any one of its four files."""
    path = Path(path)
    files = _idx_files(path if path.is_dir() else path.parent)
    out = {}
    for (split, kind), f in files.items():
        a = read_idx(f)
        if kind == "x":
            if a.ndim < 2:
                raise DataError(f"{f}: images must have at least 2 dimensions")
            pixels = a.dtype == np.uint8
            a = a.astype(np.float64)  # load_dataset flattens it and keeps the image shape
            if pixels:
                a /= 255.0
        else:
            if a.ndim != 1:
                raise DataError(f"{f}: labels must be 1-dimensional; got shape {a.shape}")
            a = a.astype(np.int64)
        out[f"{kind}_{split}"] = a
    return out


# --- CIFAR-10 --------------------------------------------------------------------------------
class _ArraysOnly(pickle.Unpickler):
    """Builds numpy arrays and plain containers only; any other class is refused."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "_codecs":  # how Python 3 pickles bytes at protocol 2
            return codecs.encode
        if module.startswith("numpy.core") or module.startswith("numpy._core"):
            for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
                try:
                    return getattr(importlib.import_module(mod), name)
                except (ImportError, AttributeError):
                    continue
        return getattr(np, name)


def _unpickle_batch(raw, where):
    try:
        d = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any damage is the user's file: one message
        raise DataError(f"{where}: not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(d, dict):
        raise DataError(f"{where}: not a CIFAR-10 python batch (not a dict)")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise DataError(f"{where}: a CIFAR-10 batch holds 'data' and 'labels'")
    x = np.asarray(d["data"])
    y = np.asarray(d["labels"], dtype=np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise DataError(f"{where}: data of shape {x.shape} with {y.shape[0]} labels")
    return x, y


def _cifar_dir(folder):
    for d in (folder, folder / "cifar-10-batches-py"):
        if (d / CIFAR10_TEST).is_file() and (d / CIFAR10_TRAIN[0]).is_file():
            return d
    return None


def read_cifar10(path: Path) -> dict:
    """The arrays of the CIFAR-10 python distribution (its folder, or the .tar.gz)."""
    path = Path(path)
    batches = {}
    if path.is_dir():
        folder = _cifar_dir(path)
        if folder is None:
            raise DataError(f"{path}: no CIFAR-10 batches ({CIFAR10_TEST}, data_batch_1, ...)")
        for name in (*CIFAR10_TRAIN, CIFAR10_TEST):
            if (folder / name).is_file():
                batches[name] = (folder / name).read_bytes()
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar.getmembers():
                    base = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and base in (*CIFAR10_TRAIN, CIFAR10_TEST):
                        batches[base] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{path}: cannot read it as a tar.gz archive ({exc})") from None
    missing = [b for b in (*CIFAR10_TRAIN, CIFAR10_TEST) if b not in batches]
    if missing:
        raise DataError(f"{path}: the CIFAR-10 batches {', '.join(missing)} are missing")
    parts = {name: _unpickle_batch(batches[name], f"{path}:{name}") for name in batches}
    x_train = np.concatenate([parts[b][0] for b in CIFAR10_TRAIN]).astype(np.float64) / 255.0
    y_train = np.concatenate([parts[b][1] for b in CIFAR10_TRAIN])
    x_test = parts[CIFAR10_TEST][0].astype(np.float64) / 255.0
    # The batches store each image channel first (1024 R, G, B): as NHWC images (32, 32, 3),
    # which load_dataset flattens pixel by pixel and records as the image shape.
    x_train, x_test = (a.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) for a in (x_train, x_test))
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test,
            "y_test": parts[CIFAR10_TEST][1]}


# --- CSV -------------------------------------------------------------------------------------
def _read_csv(path):
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from None
    if len(rows) < 2:
        raise DataError(f"{path}: a CSV dataset needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    try:
        [float(h) for h in header]
        raise DataError(f"{path}: the first row is numbers; a CSV dataset starts with a "
                        "header row naming its columns")
    except ValueError:
        pass
    for i, r in enumerate(rows[1:], 2):
        if len(r) != len(header):
            raise DataError(f"{path}: line {i} has {len(r)} fields, the header {len(header)}")
    return header, [[c.strip() for c in r] for r in rows[1:]]


def _target_column(header, path):
    lower = [h.lower() for h in header]
    for name in CSV_TARGET_NAMES:
        if name in lower:
            return lower.index(name)
    candidates = [i for i, h in enumerate(lower) if h != "split"]
    if len(candidates) < 2:
        raise DataError(f"{path}: a CSV dataset needs at least one feature and a target column")
    return candidates[-1]


def _split_table(header, rows, path, target):
    """Features (float) and raw target strings of CSV rows."""
    skip = {target} | ({[h.lower() for h in header].index("split")}
                       if "split" in [h.lower() for h in header] else set())
    cols = [i for i in range(len(header)) if i not in skip]
    if not cols:
        raise DataError(f"{path}: no feature columns besides the target {header[target]!r}")
    x = np.empty((len(rows), len(cols)))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            try:
                x[i, j] = float(r[c])
            except ValueError:
                raise DataError(f"{path}: column {header[c]!r} of data row {i + 1} is not a "
                                f"number ({r[c]!r})") from None
    return x, [r[target] for r in rows]


def _targets(values, classes=None):
    """Class labels for integer or word targets, else float regression targets."""
    if all(re.fullmatch(r"[+-]?\d+", v) for v in values):
        return np.array([int(v) for v in values], dtype=np.int64), None
    try:
        return np.array([float(v) for v in values]), None
    except ValueError:
        pass
    names = classes if classes is not None else sorted(set(values))
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise DataError(f"class {unknown[0]!r} of the test or validation file is not in the "
                        "training file")
    return np.array([index[v] for v in values], dtype=np.int64), names


def read_csv_dataset(path: Path) -> dict:
    """The arrays of a CSV dataset (see the module docstring for the layouts)."""
    path = Path(path)
    if path.is_dir():
        files = {s: path / f"{s}.csv" for s in ("train", "test", "val")}
    else:
        files = {"train": path}
        if "train" in path.name:
            for s in ("test", "val"):
                files[s] = path.with_name(path.name.replace("train", s))
    tables = {s: _read_csv(f) for s, f in files.items() if f.is_file()}
    header = tables["train"][0]
    if "split" in [h.lower() for h in header] and len(tables) == 1:
        col = [h.lower() for h in header].index("split")
        rows = tables["train"][1]
        tables = {s: (header, [r for r in rows if r[col].lower() == s])
                  for s in ("train", "test", "val")}
        tables = {s: t for s, t in tables.items() if t[1]}
        if "train" not in tables or "test" not in tables:
            raise DataError(f"{path}: the split column must mark rows 'train' and 'test'")
    elif "test" not in tables:
        raise DataError(f"{path}: no test set; give a folder with train.csv and test.csv, a "
                        "NAME_train.csv with NAME_test.csv beside it, or a 'split' column")
    target = _target_column(header, files["train"])
    out, classes = {}, None
    for s in ("train", "test", "val"):
        if s not in tables:
            continue
        h, rows = tables[s]
        if [c.lower() for c in h] != [c.lower() for c in header]:
            raise DataError(f"{files.get(s, path)}: its header differs from the training "
                            "file's")
        x, values = _split_table(h, rows, files.get(s, path), target)
        y, names = _targets(values, classes)
        classes = classes or names
        out[f"x_{s}"], out[f"y_{s}"] = x, y
    return out
