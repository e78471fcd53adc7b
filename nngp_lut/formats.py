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
* **CSV**, with a header row or without (:func:`read_csv`: a first row with a word where
  the row below has a number is a header; the columns of a file without one are numbered):
  a folder holding ``train.csv`` and ``test.csv`` (and optionally ``val.csv``); or a file
  ``NAME.csv`` whose name contains ``train``, with the test file named the same with
  ``test`` (and optionally ``val``) in its place; or one file with a column ``split`` (a
  header is needed) whose values are ``train``, ``test`` (and optionally ``val``).  The
  target is the column named ``label``, ``labels``, ``y``, ``target`` or ``class`` (any
  case), else the last column; every other column is a feature.  Every row is kept: a
  row that cannot be used is an error naming its line.  Targets written as
  integers (no decimal point) are class labels; other numbers are regression targets;
  words are class names (numbered in sorted order).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import importlib
import io
import math
import pickle
import re
import tarfile
import zlib
from pathlib import Path

import numpy as np

from .data import DataError, check_budget, one_line, unreadable

__all__ = ["CSV_TARGET_NAMES", "IDX_FILES", "read_cifar10", "read_csv", "read_csv_array",
           "read_csv_dataset", "read_idx", "read_idx_dataset", "sniff"]

#: IDX files of a dataset: (split, kind) -> canonical file name (without .gz).
IDX_FILES = {("train", "x"): "train-images-idx3-ubyte", ("train", "y"): "train-labels-idx1-ubyte",
             ("test", "x"): "t10k-images-idx3-ubyte", ("test", "y"): "t10k-labels-idx1-ubyte"}
_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx[13]-ubyte(\.gz)?$")
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: CIFAR-10 python batches: training, then test.
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
#: Values of one CIFAR-10 image (3 channels of 32 x 32).
CIFAR10_PIXELS = 3 * 32 * 32
#: Bytes in memory per byte of CIFAR-10 batch: the pickled bytes, then their float64 copy.
_CIFAR_EXPANSION = 9
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
def read_idx(path: Path, limit: int | None = None) -> np.ndarray:
    """The array of one IDX file (gzipped or not).

    The header is read first: the data are read only when they match it and, converted to
    float64, fit ``limit`` bytes (the memory budget; None: no limit).  A damaged file (bad
    magic, cut short, corrupt compressed data) is a :class:`DataError` naming it.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
                raise DataError(f"{path}: not an IDX file (bad magic number)")
            sizes = f.read(4 * head[3])
            if len(sizes) < 4 * head[3]:
                raise DataError(f"{path}: IDX header cut short; download the file again")
            shape = tuple(int(v) for v in np.frombuffer(sizes, ">i4"))
            dtype = np.dtype(_IDX_TYPES[head[2]])
            count = math.prod(shape)
            check_budget(path, 8 * count, limit)
            raw = f.read(count * dtype.itemsize + 1)  # one byte more: trailing data
    except (OSError, EOFError, zlib.error) as exc:
        raise unreadable(path, exc) from None
    want = count * dtype.itemsize
    if len(raw) != want:
        what = "more" if len(raw) > want else f"only {len(raw)}"
        raise DataError(f"{path}: the IDX data hold {what} bytes, the header says {want} "
                        f"(shape {shape}); download the file again")
    return np.frombuffer(raw, dtype, count).reshape(shape)


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


def read_idx_dataset(path: Path, limit: int | None = None) -> dict:
    """The arrays of an IDX dataset: a folder, or any one of its four files (each read
    under ``limit`` bytes, as :func:`read_idx`)."""
    path = Path(path)
    files = _idx_files(path if path.is_dir() else path.parent)
    out = {}
    for (split, kind), f in files.items():
        a = read_idx(f, limit)
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
        raise DataError(f"{where}: not a CIFAR-10 python batch ({one_line(exc)})") from None
    if not isinstance(d, dict):
        raise DataError(f"{where}: not a CIFAR-10 python batch (not a dict)")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise DataError(f"{where}: a CIFAR-10 batch holds 'data' and 'labels'")
    x, y = np.asarray(d["data"]), np.asarray(d["labels"])
    if x.dtype.kind not in "biu" or x.ndim != 2 or x.shape[1] != CIFAR10_PIXELS:
        raise DataError(f"{where}: 'data' holds {x.dtype} values of shape {x.shape}; a CIFAR-10 "
                        f"batch holds pixel bytes, {CIFAR10_PIXELS} (3 x 32 x 32) per image")
    if y.dtype.kind not in "biu" or y.shape != (x.shape[0],):
        raise DataError(f"{where}: 'labels' holds {y.dtype} values of shape {y.shape}; a "
                        f"CIFAR-10 batch holds one integer class label per image "
                        f"({x.shape[0]})")
    return x, y.astype(np.int64)


def _cifar_dir(folder):
    for d in (folder, folder / "cifar-10-batches-py"):
        if (d / CIFAR10_TEST).is_file() and (d / CIFAR10_TRAIN[0]).is_file():
            return d
    return None


def read_cifar10(path: Path, limit: int | None = None) -> dict:
    """The arrays of the CIFAR-10 python distribution (its folder, or the .tar.gz), read
    only when their float64 pixels fit ``limit`` bytes (the memory budget; None: no
    limit)."""
    path = Path(path)
    batches = {}
    names = (*CIFAR10_TRAIN, CIFAR10_TEST)
    if path.is_dir():
        folder = _cifar_dir(path)
        if folder is None:
            raise DataError(f"{path}: no CIFAR-10 batches ({CIFAR10_TEST}, data_batch_1, ...)")
        files = [folder / name for name in names if (folder / name).is_file()]
        check_budget(path, _CIFAR_EXPANSION * sum(f.stat().st_size for f in files), limit)
        for f in files:
            try:
                batches[f.name] = f.read_bytes()
            except OSError as exc:
                raise unreadable(f, exc) from None
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                members = [m for m in tar.getmembers()
                           if m.isfile() and m.name.rsplit("/", 1)[-1] in names]
                check_budget(path, _CIFAR_EXPANSION * sum(m.size for m in members), limit)
                for member in members:
                    batches[member.name.rsplit("/", 1)[-1]] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise unreadable(path, exc, "a tar.gz archive") from None
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
def _number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv(path: Path, limit: int | None = None) -> tuple[list[str], list[list[str]], bool]:
    """The columns and rows of a CSV file, its header row detected by content.

    The first row is a header when it has a word where the row below has a number (or,
    in a file of one row, any word); otherwise every row is data and the columns are
    numbered "column 1", "column 2", ...  Blank lines are skipped; any other row must have
    as many fields as the first.  The file is read only when it fits ``limit`` bytes in
    memory (about :data:`CSV_EXPANSION` times its size; None: no limit).

    Returns
    -------
    columns : list of str
        The header's names, or the numbered names of a file without a header.
    rows : list of list of str
        The data rows' fields, stripped, every row kept.
    header : bool
        Whether the first row was a header.
    """
    path = Path(path)
    try:
        check_budget(path, CSV_EXPANSION * path.stat().st_size, limit)
        rows = []  # (line number, fields) of the rows that are not blank
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            for r in reader:
                if any(c.strip() for c in r):
                    rows.append((reader.line_num, [c.strip() for c in r]))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise unreadable(path, exc, "CSV text") from None
    if not rows:
        raise DataError(f"{path}: the file holds no rows")
    first = rows[0][1]
    below = rows[1][1] if len(rows) > 1 else None
    header = any(not _number(c) and (below is None or (j < len(below) and _number(below[j])))
                 for j, c in enumerate(first))
    columns = first if header else [f"column {j + 1}" for j in range(len(first))]
    for line, r in rows[1:]:
        if len(r) != len(columns):
            raise DataError(f"{path}: line {line} has {len(r)} fields, the first row "
                            f"{len(columns)}")
    if header and len(rows) == 1:
        raise DataError(f"{path}: the file has a header row but no data rows")
    return columns, [r for _, r in rows[1 if header else 0:]], header


def read_csv_array(path: Path, limit: int | None = None) -> np.ndarray:
    """The numbers of a CSV file of inputs (every column a feature; a header row, detected
    as :func:`read_csv` does, is skipped)."""
    columns, rows, _ = read_csv(path, limit)
    return _floats(columns, rows, range(len(columns)), path)


#: Bytes in memory per byte of a CSV file while it is read (its fields as Python strings).
CSV_EXPANSION = 10


def _target_column(columns, path):
    lower = [h.lower() for h in columns]
    for name in CSV_TARGET_NAMES:
        if name in lower:
            return lower.index(name)
    candidates = [i for i, h in enumerate(lower) if h != "split"]
    if len(candidates) < 2:
        raise DataError(f"{path}: a CSV dataset needs at least one feature and a target column")
    return candidates[-1]


def _floats(columns, rows, cols, path):
    """The fields ``cols`` of every row as a float array; a word is one line naming it."""
    x = np.empty((len(rows), len(cols)))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            try:
                x[i, j] = float(r[c])
            except ValueError:
                raise DataError(f"{path}: {columns[c]!r} of data row {i + 1} is not a number "
                                f"({r[c]!r})") from None
    return x


def _split_table(columns, rows, path, target):
    """Features (float) and raw target strings of CSV rows."""
    lower = [h.lower() for h in columns]
    skip = {target} | ({lower.index("split")} if "split" in lower else set())
    cols = [i for i in range(len(columns)) if i not in skip]
    if not cols:
        raise DataError(f"{path}: no feature columns besides the target {columns[target]!r}")
    return _floats(columns, rows, cols, path), [r[target] for r in rows]


def _targets(values, classes=None):
    """Class labels for integer or word targets, else float regression targets."""
    if all(re.fullmatch(r"[+-]?\d+", v) for v in values):
        return np.array([int(v) for v in values], dtype=np.int64), None
    if all(_number(v) for v in values):
        return np.array([float(v) for v in values]), None
    names = classes if classes is not None else sorted(set(values))
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise DataError(f"class {unknown[0]!r} of the test or validation file is not in the "
                        "training file")
    return np.array([index[v] for v in values], dtype=np.int64), names


def read_csv_dataset(path: Path, limit: int | None = None) -> dict:
    """The arrays of a CSV dataset (see the module docstring for the layouts), every file
    read by :func:`read_csv` under ``limit`` bytes."""
    path = Path(path)
    if path.is_dir():
        files = {s: path / f"{s}.csv" for s in ("train", "test", "val")}
    else:
        files = {"train": path}
        if "train" in path.name:
            for s in ("test", "val"):
                files[s] = path.with_name(path.name.replace("train", s))
    tables = {s: read_csv(f, limit) for s, f in files.items() if f.is_file()}
    columns, rows, header = tables["train"]
    lower = [h.lower() for h in columns]
    if header and "split" in lower and len(tables) == 1:
        col = lower.index("split")
        marks = {r[col].lower() for r in rows}
        unknown = sorted(marks - {"train", "test", "val"})
        if unknown:
            raise DataError(f"{path}: the split column holds {unknown[0]!r}; mark every row "
                            "'train', 'test' or 'val'")
        if not {"train", "test"} <= marks:
            raise DataError(f"{path}: the split column must mark rows 'train' and 'test'")
        tables = {s: (columns, [r for r in rows if r[col].lower() == s], header)
                  for s in ("train", "test", "val") if s in marks}
    elif "test" not in tables:
        raise DataError(f"{path}: no test set; give a folder with train.csv and test.csv, a "
                        "NAME_train.csv with NAME_test.csv beside it, or a 'split' column")
    target = _target_column(columns, files["train"])
    out, classes = {}, None
    for s in ("train", "test", "val"):
        if s not in tables:
            continue
        h, rows, has_header = tables[s]
        where = files.get(s, path)
        if has_header != header:
            raise DataError(f"{where}: it {'has' if has_header else 'has no'} header row and "
                            f"the training file {'has' if header else 'has none'}; give every "
                            "file a header row, or none")
        if [c.lower() for c in h] != lower:
            raise DataError(f"{where}: its columns ({', '.join(h)}) differ from the training "
                            f"file's ({', '.join(columns)})" if header else
                            f"{where}: it has {len(h)} columns, the training file "
                            f"{len(columns)}")
        x, values = _split_table(h, rows, where, target)
        y, names = _targets(values, classes)
        classes = classes or names
        out[f"x_{s}"], out[f"y_{s}"] = x, y
    return out
