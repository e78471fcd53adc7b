"""Shared fixtures: tables are built once per session into a temporary cache folder."""

import numpy as np
import pytest

from nngp_lut import build_table

#: Tolerances of issue #2, stated once: |F - F_exact| / sqrt(F(q1,q1,1) F(q2,q2,1)).
TOL_EQUAL = 1e-7
TOL_UNEQUAL = 1e-6
#: The same for the derivative tables (issue #12): |dF - dF_exact| / sqrt(E[phi'^2](q1)
#: E[phi'^2](q2)), dF = E[phi'(u) phi'(v)].
TOL_DF_EQUAL = 1e-7
TOL_DF_UNEQUAL = 1e-6
#: A smaller grid for tests of the file format and the command line.
SMALL_GRID = dict(variance_min=1e-4, variance_max=1e2, n_variance=40, n_angle=48,
                  n_unequal=24, n_unequal_angle=32)


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("NNGP_LUT_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


_TABLES = {}


@pytest.fixture(scope="session")
def table_of():
    """table_of(name, **grid) -> Table, memoised for the session."""

    def get(name, **grid):
        key = (name, tuple(sorted(grid.items())))
        if key not in _TABLES:
            _TABLES[key] = build_table(name, **grid)
        return _TABLES[key]

    return get


@pytest.fixture
def rng():
    return np.random.default_rng(20181)
