"""Dataset formats (issue 11, item 3): IDX, CIFAR-10 python batches and CSV with a header,
each written here byte for byte in the published format (nothing is downloaded)."""

import gzip
import pickle
import struct
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner

from nngp_lut import data, formats
from nngp_lut.cli.main import cli


# --- writers of the exact formats ------------------------------------------------------------
def write_idx(path, array, gz):
    """IDX: magic 0x00 0x00, type 0x08 (unsigned byte), ndim; big-endian int32 sizes; data."""
    a = np.asarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}i", *a.shape) + a.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


@pytest.fixture
def mnist_like(rng):
    """Images 28 x 28 (uint8) and labels, as MNIST ships them."""
    def split(n):
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10
    return {"train": split(30), "t10k": split(20)}


def write_mnist(folder, sets, gz):
    folder.mkdir(exist_ok=True)
    for prefix, (x, y) in sets.items():
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y, gz)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_and_file(tmp_path, mnist_like, gz):
    folder = write_mnist(tmp_path / "fashion", mnist_like, gz)
    for path in (folder, sorted(folder.iterdir())[0]):
        d = data.load_dataset(path)
        assert d.classification and d.x_train.shape == (30, 784) and d.x_test.shape == (20, 784)
        np.testing.assert_array_equal(d.x_train, mnist_like["train"][0].reshape(30, -1) / 255.0)
        np.testing.assert_array_equal(d.y_test, mnist_like["t10k"][1])


def test_idx_damage_is_reported(tmp_path, mnist_like):
    folder = write_mnist(tmp_path / "m", mnist_like, gz=False)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte"):
        data.load_dataset(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(19) % 10, gz=False)
    (folder / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 5)
    with pytest.raises(data.DataError, match="header"):
        data.load_dataset(folder)


def cifar_batch(rng, n, label):
    """A CIFAR-10 python batch: a pickled dict of bytes keys, as the distribution has."""
    return {b"batch_label": label.encode(), b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


@pytest.fixture
def cifar(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {f"data_batch_{i}": cifar_batch(rng, 6, f"training batch {i} of 5")
               for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(rng, 8, "testing batch 1 of 1")
    for name, batch in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"]}))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return folder, archive, batches


def test_cifar10_folder_parent_and_archive(cifar):
    folder, archive, batches = cifar
    x = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)]) / 255.0
    # stored channel first; read as NHWC images, flattened pixel by pixel (issue 13)
    x = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).reshape(-1, 3072)
    for path in (folder, folder.parent, archive):
        d = data.load_dataset(path)
        assert d.x_train.shape == (30, 3072) and d.x_test.shape == (8, 3072)
        assert d.image_shape == (32, 32, 3)
        np.testing.assert_array_equal(d.x_train, x)
        assert list(d.y_test) == batches["test_batch"][b"labels"]


def test_cifar10_unpickler_builds_arrays_only(cifar):
    folder, _, _ = cifar

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(data.DataError, match="refusing to load .*print"):
        data.load_dataset(folder)


@pytest.mark.parametrize("layout", ["folder", "pair", "split"])
def test_csv_with_a_header(tmp_path, rng, layout):
    x = rng.standard_normal((15, 3)).round(6)
    y = np.arange(15) % 3
    header = "a,b,label,c"
    lines = [f"{r[0]},{r[1]},{t},{r[2]}" for r, t in zip(x, y)]
    if layout == "folder":
        (tmp_path / "train.csv").write_text("\n".join([header, *lines[:10]]) + "\n")
        (tmp_path / "test.csv").write_text("\n".join([header, *lines[10:]]) + "\n")
        path = tmp_path
    elif layout == "pair":
        (tmp_path / "wine_train.csv").write_text("\n".join([header, *lines[:10]]) + "\n")
        (tmp_path / "wine_test.csv").write_text("\n".join([header, *lines[10:]]) + "\n")
        path = tmp_path / "wine_train.csv"
    else:
        rows = [f"{'train' if i < 10 else 'test'},{line}" for i, line in enumerate(lines)]
        (tmp_path / "all.csv").write_text("\n".join(["split," + header, *rows]) + "\n")
        path = tmp_path / "all.csv"
    d = data.load_dataset(path)
    assert d.classification
    np.testing.assert_array_equal(d.x_train, x[:10])
    np.testing.assert_array_equal(d.y_test, y[10:])


def test_csv_target_rule_and_regression(tmp_path):
    # no target-like name: the last column; decimals: regression; words: class names
    (tmp_path / "train.csv").write_text("u,v,price\n1,2,3.5\n2,1,0.25\n0,0,1.0\n")
    (tmp_path / "test.csv").write_text("u,v,price\n1,1,2.0\n")
    d = data.load_dataset(tmp_path)
    assert not d.classification and d.y_train.shape == (3, 1) and d.x_train.shape == (3, 2)
    (tmp_path / "train.csv").write_text("Class,u\ncat,1\ndog,2\ncat,3\n")
    (tmp_path / "test.csv").write_text("Class,u\ndog,1\n")
    d = data.load_dataset(tmp_path)
    assert list(d.y_train) == [0, 1, 0] and list(d.y_test) == [1]


@pytest.mark.parametrize("train,test,message", [
    ("a,b,c\n4,5,6\n", "1,2,3\n", "has no header row and the training file has"),
    ("a,label\nx,1\n", "a,label\n1,1\n", "not a number"),
    ("a,label\n1,1\n", None, "no test set"),
    ("a,b,label\n1,2\n", "a,b,label\n1,2,0\n", "fields"),
])
def test_bad_csv(tmp_path, train, test, message):
    (tmp_path / "train.csv").write_text(train)
    if test:
        (tmp_path / "test.csv").write_text(test)
    with pytest.raises(data.DataError, match=message):
        data.load_dataset(tmp_path / "train.csv")


def test_unknown_format(tmp_path):
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(data.DataError, match="unknown dataset format"):
        data.load_dataset(tmp_path / "x.txt")
    with pytest.raises(data.DataError, match="unknown dataset format"):
        data.load_dataset(tmp_path)
    assert formats.sniff(tmp_path / "train-images-idx3-ubyte.gz") == "idx"


def test_predict_reads_an_idx_folder(tmp_path, mnist_like):
    folder = write_mnist(tmp_path / "mnist", mnist_like, gz=True)
    res = CliRunner().invoke(cli, ["predict", "--data", str(folder), "--phi", "relu", "--depth",
                                   "1", "--weight-var", "1.5", "--bias-var", "0.1", "-q"])
    assert res.exit_code == 0, res.output
    assert "30 train, 20 test" in res.output and "raw inputs" in res.output
