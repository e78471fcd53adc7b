"""Datasets (issue #4): the paper's balanced subsets, the embedded sample, bad files."""

from pathlib import Path

import numpy as np
import pytest

from nngp_lut import data

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"


def test_balanced_subset_is_first_of_each_class_shuffled():
    labels = np.array([0, 1, 1, 0, 2, 2, 0, 1, 2, 2])
    idx = data.balanced_subset(labels, 6)
    assert sorted(idx) == [0, 1, 2, 3, 4, 5]
    expected = np.array([0, 3, 1, 2, 4, 5])
    np.random.RandomState(9999).shuffle(expected)
    assert np.array_equal(idx, expected)
    with pytest.raises(data.DataError, match="divisible"):
        data.balanced_subset(labels, 7)
    with pytest.raises(data.DataError, match="only 3"):
        data.balanced_subset(labels, 12)


def test_embedded_sample():
    d = data.load_dataset()
    assert d.classification
    assert d.x_train.shape == (1000, 784) and d.x_test.shape == (10000, 784)
    assert np.array_equal(np.bincount(d.y_train), np.full(10, 100))
    assert d.x_val.shape == (1000, 784)


@pytest.mark.skipif(not MNIST.is_file(), reason="the full MNIST file is not here")
def test_embedded_sample_is_made_from_mnist_by_the_papers_rule(tmp_path):
    data.make_sample(MNIST, tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as made, np.load(data.SAMPLE_PATH) as shipped:
        for key in shipped:
            assert np.array_equal(made[key], shipped[key]), key


def write(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("change, message", [
    (dict(y_train=np.zeros(9, int)), "9 rows but x_train has 10"),
    (dict(x_test=np.ones((4, 2))), "3 features but x_test has 2"),
    (dict(x_train=np.full((10, 3), np.inf)), "inf"),
    (dict(x_val=np.ones((2, 3))), "x_val and y_val go together"),
    (dict(y_test=np.zeros(4)), "mix integer labels and float"),
    (dict(x_train=np.array([["a"] * 3] * 10)), "not numeric"),
])
def test_bad_datasets(tmp_path, change, message):
    arrays = dict(x_train=np.ones((10, 3)), y_train=np.zeros(10, int), x_test=np.ones((4, 3)),
                  y_test=np.zeros(4, int))
    arrays.update(change)
    with pytest.raises(data.DataError, match=message):
        data.load_dataset(write(tmp_path, **arrays))


def test_missing_parts(tmp_path):
    with pytest.raises(data.DataError, match="missing y_test"):
        data.load_dataset(write(tmp_path, x_train=np.ones((2, 2)), y_train=[0, 1],
                                x_test=np.ones((2, 2))))
    with pytest.raises(data.DataError, match="no such file"):
        data.load_dataset(tmp_path / "none.npz")


def test_nan_is_padding_that_only_a_recurrent_network_takes(tmp_path):
    """NaN loads (the padding of sequences of unequal length); a network of vectors refuses
    it in one line that says what NaN means, and padded standardisation uses each row's own
    values."""
    x = np.ones((10, 3))
    x[:, 1] = 2.0
    x[0, 2] = np.nan
    d = data.load_dataset(write(tmp_path, x_train=x, y_train=np.zeros(10, int),
                                x_test=np.ones((4, 3)), y_test=np.zeros(4, int)))
    assert np.isnan(d.x_train[0, 2])
    with pytest.raises(data.DataError, match="row 0, column 2.*padding of sequences"):
        data.validate_inputs(d.x_train)
    with pytest.warns(data.StandardizeWarning):  # 3 features
        s = data.standardize_rows(d.x_train[:1], padded=True)
    np.testing.assert_allclose(s[0, :2], [-1.0, 1.0], rtol=0, atol=1e-15)
    assert np.isnan(s[0, 2])
