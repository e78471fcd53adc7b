"""Nothing lost, nothing cryptic (issue 21): every reader's failure is one line naming the
file, CSV rows are never dropped, reads are bounded, and bad flag values say what to do.

Every input is written here byte for byte.  Each case asserts the exit status (1 for an
expected failure, 2 for a usage error), the single ``Error:`` line and that no file of the
user changed.
"""

import gzip
import hashlib
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner

from nngp_lut.cli.main import cli

from .conftest import SMALL_GRID

NET = ["--depth", "1", "--weight-var", "1.5", "--bias-var", "0.1"]
CONV1 = "serial(Conv(1, 0.1, filter_shape=(3,)), Flatten(), Dense(1, 0))"
CONV2 = "serial(Conv(1, 0.1, filter_shape=(3, 3)), Flatten(), Dense(1, 0))"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fails(folder, args, status=1):
    """Run; assert the status, one Error line, no traceback, no user file changed; the line."""
    before = snapshot(folder)
    res = run(*args)
    assert res.exit_code == status, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert snapshot(folder) == before
    return lines[0]


@pytest.fixture(scope="module")
def table(tmp_path_factory, table_of):
    path = tmp_path_factory.mktemp("readers") / "tanh.h5"
    table_of("tanh", **SMALL_GRID).save(path)
    return path


@pytest.fixture
def user(tmp_path, monkeypatch, table):
    (tmp_path / "tanh.h5").write_bytes(table.read_bytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def csv_rows(n, seed=0, label=True):
    rng = np.random.default_rng(seed)
    return "".join(",".join(f"{v:.4f}" for v in rng.standard_normal(3))
                   + (f",{i % 2}" if label else "") + "\n" for i in range(n))


# --- CSV: one rule everywhere, no row dropped --------------------------------------------------
def test_headerless_csv_keeps_every_row(user):
    (user / "d").mkdir()
    (user / "d" / "train.csv").write_text(csv_rows(20))
    (user / "d" / "test.csv").write_text(csv_rows(20))
    res = run("predict", "--data", "d", "--table", "tanh.h5", *NET, "-q")
    assert res.exit_code == 0, res.output
    assert "d: 20 train, 20 test" in res.output


def test_headerless_csv_pair_keeps_every_row(user):
    (user / "w_train.csv").write_text(csv_rows(20, 1))
    (user / "w_test.csv").write_text(csv_rows(12, 2))
    res = run("predict", "--data", "w_train.csv", "--table", "tanh.h5", *NET, "-q")
    assert res.exit_code == 0, res.output
    assert "w_train.csv: 20 train, 12 test" in res.output


def test_csv_with_a_header_keeps_every_row(user):
    (user / "d").mkdir()
    (user / "d" / "train.csv").write_text("a,b,c,label\n" + csv_rows(20))
    (user / "d" / "test.csv").write_text("a,b,c,label\n" + csv_rows(7, 3))
    res = run("predict", "--data", "d", "--table", "tanh.h5", *NET, "-q")
    assert res.exit_code == 0 and "20 train, 7 test" in res.output, res.output


@pytest.mark.parametrize("train,test,message", [
    ("a,b,c,label\n" + csv_rows(4), csv_rows(4), "has no header row and the training file"),
    (csv_rows(4), csv_rows(4, label=False), "it has 3 columns, the training file 4"),
    ("a,b,c,label\n" + csv_rows(4), "a,b,c,y\n" + csv_rows(4), "its columns (a, b, c, y) "
     "differ"),
    ("a,b,c,label\n", csv_rows(4), "has a header row but no data rows"),
    (csv_rows(3) + "1,2\n", csv_rows(4), "line 4 has 2 fields, the first row 4"),
    ("a,b,c,label\n" + csv_rows(2) + "1,x,3,0\n", csv_rows(4), "'b' of data row 3 is not a "
     "number ('x')"),
    (b"a,b,label\n1,2,\xff\n", csv_rows(4), "cannot read it as CSV text: it is not UTF-8 text"),
])
def test_bad_csv_is_one_line(user, train, test, message):
    (user / "d").mkdir()
    for name, text in (("train.csv", train), ("test.csv", test)):
        (user / "d" / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    assert message in fails(user, ["predict", "--data", "d", "--table", "tanh.h5", *NET, "-q"])


def test_an_unknown_split_is_named_not_dropped(user):
    (user / "all.csv").write_text("split,a,label\ntrain,1,0\ntrain,2,1\ntest,3,0\n"
                                  "validation,4,1\n")
    line = fails(user, ["predict", "--data", "all.csv", "--table", "tanh.h5", *NET, "-q"])
    assert "the split column holds 'validation'" in line


@pytest.mark.parametrize("text", ["a,b,c\n1,2,3\n4,5,6\n7,8,9\n", "1,2,3\n4,5,6\n7,8,9\n"])
def test_kernel_reads_csv_as_predict_does(user, text):
    (user / "x.csv").write_text(text)
    res = run("kernel", "--x1", "x.csv", "--table", "tanh.h5", *NET, "-q", "--out", "k.npy")
    assert res.exit_code == 0, res.output
    assert np.load(user / "k.npy").shape == (3, 3)


# --- architecture files: bounded, decoded, not empty -------------------------------------------
@pytest.mark.parametrize("content,message", [
    (b"\xff\xfe\x00serial(\x80)", "is not UTF-8 text (byte 0 is 0xff)"),
    (b"# only a comment\n\n", "holds no architecture (only comments or blank lines)"),
    (b"serial(" * 60000, "is longer than 100000 bytes"),
], ids=["binary", "comment-only", "too-long"])
def test_bad_architecture_file_is_one_line(user, content, message):
    (user / "x.csv").write_text("1,2\n3,4\n")
    (user / "net.arch").write_bytes(content)
    line = fails(user, ["kernel", "--arch", "@net.arch", "--x1", "x.csv", "--out", "k.npy"])
    assert message in line and "net.arch" in line


def test_an_endless_architecture_file_is_not_read_to_its_end(user):
    (user / "x.csv").write_text("1,2\n3,4\n")
    line = fails(user, ["kernel", "--arch", "@/dev/zero", "--x1", "x.csv", "--out", "k.npy"])
    assert "is longer than 100000 bytes" in line


# --- IDX, CIFAR-10, numpy files, adjacency -----------------------------------------------------
def idx(a):
    return bytes([0, 0, 8, a.ndim]) + b"".join(struct.pack(">i", s) for s in a.shape) + \
        a.astype(np.uint8).tobytes()


def write_idx(folder, gz, damage=None):
    folder.mkdir()
    x, y = np.arange(160).reshape(10, 4, 4) % 256, np.arange(10) % 2
    for name, a in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                    ("t10k-images-idx3-ubyte", x), ("t10k-labels-idx1-ubyte", y)):
        raw = gzip.compress(idx(a), mtime=0) if gz else idx(a)
        if damage and name.startswith("train-images"):
            raw = damage(raw)
        (folder / (name + (".gz" if gz else ""))).write_bytes(raw)
    return folder


def flip(raw):
    b = bytearray(raw)
    for i in range(12, 40):
        b[i] ^= 0x5A
    return bytes(b)


@pytest.mark.parametrize("gz,damage,message", [
    (True, flip, "its compressed data are damaged"),
    (True, lambda raw: raw[:30], "it ends early"),
    (False, lambda raw: raw[:100], "the IDX data hold only 84 bytes, the header says 160"),
    (False, lambda raw: b"\x01" + raw[1:], "not an IDX file (bad magic number)"),
])
def test_damaged_idx_is_one_line(user, gz, damage, message):
    write_idx(user / "mnist", gz, damage)
    line = fails(user, ["predict", "--data", "mnist", "--table", "tanh.h5", *NET, "-q"])
    assert message in line and "train-images-idx3-ubyte" in line


def batch(data, labels):
    return pickle.dumps({b"data": data, b"labels": labels}, protocol=2)


NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@pytest.mark.parametrize("data,labels,message", [
    (np.zeros((3, 100), np.uint8), [0, 1, 2], "'data' holds uint8 values of shape (3, 100)"),
    (np.array([["a"] * 3072] * 3), [0, 1, 2], "'data' holds <U1 values"),
    (np.zeros((3, 3072), np.uint8), ["cat", "dog", "x"], "'labels' holds <U3 values"),
])
def test_bad_cifar_batches_are_one_line(user, data, labels, message):
    (user / "c").mkdir()
    for name in NAMES:
        (user / "c" / name).write_bytes(batch(data, labels))
    line = fails(user, ["predict", "--data", "c", "--table", "tanh.h5", *NET, "-q"])
    assert message in line and "data_batch_1" in line


def test_a_truncated_tar_gz_is_a_whole_sentence(user):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in NAMES:
            b = batch(np.zeros((3, 3072), np.uint8), [0, 1, 2])
            info = tarfile.TarInfo("cifar-10-batches-py/" + name)
            info.size = len(b)
            tar.addfile(info, io.BytesIO(b))
    raw = buf.getvalue()
    for cut in (1, len(raw) // 2):
        (user / "cifar-10-python.tar.gz").write_bytes(raw[:cut])
        line = fails(user, ["predict", "--data", "cifar-10-python.tar.gz", "--table",
                            "tanh.h5", *NET, "-q"])
        assert line.startswith("Error: cifar-10-python.tar.gz: cannot read it as a tar.gz "
                               "archive: ") and "\n" not in line and line.endswith(("?", "again"))


RANDOM = bytes(range(256)) * 12


@pytest.mark.parametrize("name", ["r.npy", "r.npz"])
def test_random_bytes_as_numpy_files_are_not_offered_unpickling(user, name):
    (user / name).write_bytes(RANDOM)
    line = fails(user, ["kernel", "--x1", name, "--table", "tanh.h5", *NET, "--out", "k.npy"])
    assert f"{name}: cannot read it as a NumPy" in line and "pickle" not in line


@pytest.mark.parametrize("adjacency,message", [
    ("/etc/passwd", "an adjacency is a dense .npy or a scipy.sparse .npz file"),
    ("r.npy", "r.npy: cannot read it as a NumPy .npy array"),
    ("r.npz", "r.npz: cannot read it as a scipy.sparse .npz file"),
])
def test_bad_adjacency_files_are_one_line(user, adjacency, message):
    for name in ("r.npy", "r.npz"):
        (user / name).write_bytes(RANDOM)
    np.save(user / "x.npy", np.ones((2, 8)))
    line = fails(user, ["kernel", "--arch", f"serial(Aggregate({adjacency!r}), Dense(1, 0))",
                        "--x1", "x.npy", "--shape", "4,2", "--out", "k.npy"])
    assert message in line and "pickle" not in line


def test_data_larger_than_the_memory_are_refused_before_reading(user):
    # Headers that promise terabytes (no data follow): refused from the header alone, against
    # the memory available (--memory budgets the kernels, not the data).
    write_idx(user / "mnist", gz=False)
    (user / "mnist" / "train-images-idx3-ubyte").write_bytes(
        bytes([0, 0, 8, 3]) + struct.pack(">III", 2**31 - 1, 28, 28))
    line = fails(user, ["predict", "--data", "mnist", "--table", "tanh.h5", *NET, "-q"])
    assert "its data need" in line and "free memory or use a smaller file" in line
    with open(user / "x.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                                 "shape": (10**6, 10**6)})
    line = fails(user, ["kernel", "--x1", "x.npy", "--table", "tanh.h5", *NET, "--out",
                        "k.npy"])
    assert "x.npy: its data need" in line


# --- flag values ---------------------------------------------------------------------------------
def test_shape_of_one_axis_is_a_usage_error(user):
    np.save(user / "x16.npy", np.ones((5, 16)))
    line = fails(user, ["kernel", "--arch", CONV1, "--x1", "x16.npy", "--shape", "16", "--out",
                        "k.npy"], status=2)
    assert "--shape takes 2 or 3 positive integers" in line and "16,1" in line


def test_shape_other_than_the_stored_one_is_a_usage_error(user):
    write_idx(user / "mnist", gz=False)
    line = fails(user, ["predict", "--data", "mnist", "--arch", CONV2, "--shape", "2,8", "-q"],
                 status=2)
    assert "--shape 2,8 differs from the image shape 4,4 the data file stores" in line
    res = run("predict", "--data", "mnist", "--arch", CONV2, "--shape", "4,4,1", "-q")
    assert res.exit_code == 0, res.output


def test_learning_rate_must_be_finite(user):
    for value in ("inf", "nan"):
        line = fails(user, ["compare", "--arch", "serial(Dense(1, 0))", "--learning-rate",
                            value], status=2)
        assert "give a finite number > 0" in line


def test_a_huge_width_is_one_line(user):
    pytest.importorskip("jax")
    line = fails(user, ["mc", "--arch", "serial(Dense(1, 0), Activation('relu'), Dense(1, 0))",
                        "--widths", "10000000000", "--n-inputs", "2", "--draws", "1", "-q"])
    assert "a network of width 10000000000 needs about" in line and "smaller widths" in line
