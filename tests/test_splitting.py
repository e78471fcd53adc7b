"""Hypothesis tests of how work is cut (issue 11, item 7): the Cholesky's tiles and memory
plan (nngp_lut.linalg) and the kernel's row panels (through the public Network.kernel:
tile_rows, in RAM or streamed to HDF5), against identities that need no stored numbers."""

import math
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nngp_lut import linalg
from nngp_lut.kernel import deep_network

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(n=st.integers(1, 10**6), tile=st.integers(1, 10**5))
def test_tile_bounds_cover_range_exactly(n, tile):
    b = linalg.tile_bounds(n, tile)
    assert b[0][0] == 0 and b[-1][1] == n and len(b) == math.ceil(n / tile)
    assert all(hi == lo2 for (_, hi), (lo2, _) in zip(b, b[1:]))  # contiguous, no overlap
    assert all(0 < hi - lo <= tile for lo, hi in b)
    assert all(hi - lo == tile for lo, hi in b[:-1])  # only the last is shorter
    assert linalg.packed_bytes(n, tile) == 8 * sum((hi - lo) * (n - lo) for lo, hi in b)


@pytest.mark.parametrize("n, tile", [(0, 3), (3, 0)])
def test_tile_bounds_rejects_empty(n, tile):
    with pytest.raises(ValueError):
        linalg.tile_bounds(n, tile)


@FAST
@given(n=st.integers(1, 200_000), budget=st.integers(10**3, 10**12),
       reserve=st.integers(0, 10**9), tile=st.one_of(st.none(), st.integers(1, 20_000)))
def test_plan_fits_the_budget(n, budget, reserve, tile):
    try:
        in_ram, b = linalg.plan(n, budget, reserve=reserve, tile=tile)
    except MemoryError as exc:
        assert "--memory" in str(exc)
        # not even a panel of the smallest allowed tile fits
        smallest = min(linalg.MIN_TILE, tile or linalg.DEFAULT_TILE, n)
        assert 8 * (n * smallest + 3 * smallest**2) > budget - reserve - 8 * n
        return
    cap = min(n, linalg.MAX_TILE, tile if tile is not None else linalg.DEFAULT_TILE)
    assert 1 <= b <= max(cap, 1)
    if in_ram:
        assert linalg.packed_bytes(n, b) <= budget - reserve
    else:
        assert linalg.packed_bytes(n, cap) > budget - reserve
        assert 8 * (n * b + 3 * b * b) <= budget - reserve  # a panel and three tiles


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n1=st.integers(1, 37), n2=st.one_of(st.none(), st.integers(1, 23)),
       rows=st.integers(1, 40), depth=st.integers(0, 3), stream=st.booleans(),
       seed=st.integers(0, 2**16))
def test_kernel_panels_give_the_layerwise_kernel(n1, n2, rows, depth, stream, seed):
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((n1, 4))
    x2 = None if n2 is None else rng.standard_normal((n2, 4))
    net = deep_network("relu", depth, 1.3, 0.2)
    ref = net.layerwise(x1, x2, all_depths=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "k.h5"
        got = net.kernel(x1, x2, all_depths=True, tile_rows=rows,
                         memory=1 if stream else "1GB", out=out)
        if stream:
            assert got == str(out)
            with h5py.File(out) as h5:
                got = h5["kernel"][()]
        got = got.reshape(ref.shape)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    if n2 is None:
        np.testing.assert_array_equal(got, np.swapaxes(got, -1, -2))  # symmetric, mirrored
