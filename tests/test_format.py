"""HDF5 format (new files: version 2): round trip, atomic writes, and every damaged-file case."""

import json

import h5py
import numpy as np
import pytest

from nngp_lut import tables
from nngp_lut.tables import TableError, open_table

from .conftest import SMALL_GRID


@pytest.fixture(scope="module")
def small(table_of):
    return table_of("tanh", **SMALL_GRID)


@pytest.fixture
def saved(small, tmp_path):
    return small.save(tmp_path / "t.h5")


def test_round_trip(small, saved):
    back = open_table(saved)
    for name in tables._FIELDS:
        np.testing.assert_array_equal(getattr(back, name), getattr(small, name))
    assert back.activation_name == "tanh"
    assert back.metadata == json.loads(json.dumps(small.metadata))
    q = np.array([0.01, 3.0])
    np.testing.assert_array_equal(back.F(q, q, 0.3), small.F(q, q, 0.3))
    np.testing.assert_array_equal(back.F(q, q[::-1], 0.3), small.F(q, q[::-1], 0.3))


def test_file_describes_itself(saved):
    info = tables.read_info(saved)
    assert info["format"] == "nngp-lut table" and info["format_version"] == 2
    assert info["activation_source"] == "tanh(x)"
    assert info["metadata"]["measured_error"]["F"] < 1e-6
    with h5py.File(saved) as h5:
        assert all(h5[name].fletcher32 for name in tables._DATASETS)


def test_overwrite_needs_force(small, saved):
    with pytest.raises(FileExistsError):
        small.save(saved)
    small.save(saved, force=True)


def test_interrupted_write_leaves_nothing(small, tmp_path, monkeypatch):
    def boom(h5, t):
        h5.create_dataset("partial", data=np.zeros(3))
        raise KeyboardInterrupt

    monkeypatch.setattr(tables, "_write", boom)
    with pytest.raises(KeyboardInterrupt):
        small.save(tmp_path / "x.h5")
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path):
    with pytest.raises(TableError, match="no such table"):
        open_table(tmp_path / "none.h5")


def test_not_hdf5(tmp_path):
    p = tmp_path / "t.h5"
    p.write_text("not a table\n")
    with pytest.raises(TableError, match="not an HDF5 file"):
        open_table(p)


def test_hdf5_but_not_a_table(tmp_path):
    p = tmp_path / "t.h5"
    with h5py.File(p, "w") as h5:
        h5["x"] = np.arange(3)
    with pytest.raises(TableError, match="not an nngp-lut table"):
        open_table(p)


def test_unknown_version(saved):
    with h5py.File(saved, "a") as h5:
        h5.attrs["format_version"] = 99
    with pytest.raises(TableError, match="version 99"):
        open_table(saved)


def test_missing_dataset(saved):
    with h5py.File(saved, "a") as h5:
        del h5["equal/f_normalized"]
    with pytest.raises(TableError, match="missing"):
        open_table(saved)


def test_checksum_failure(saved):
    with h5py.File(saved, "r") as h5:
        offset = h5["equal/f_normalized"].id.get_chunk_info(0).byte_offset
    with open(saved, "r+b") as fh:
        fh.seek(offset + 100)
        byte = fh.read(1)
        fh.seek(offset + 100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(TableError, match="checksum"):
        open_table(saved)
