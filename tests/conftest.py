"""Shared fixtures: tables are built once per session into a temporary cache folder.

Tests marked ``slow`` (the 1e-7 check of the default tables of the general activations that
no other test uses: each builds a full table, about 10-20 s of CPU on 2 cores) run with
``pytest --runslow``; ``python bench/bench_tables.py`` measures every built-in as well.
"""

import os

import numpy as np
import pytest

from nngp_lut.tables import cached_table


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true",
                     help="also run the tests marked slow (full table builds)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a full table build; runs with --runslow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="a full table build: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

#: Tolerances of issue #2, stated once: |F - F_exact| / sqrt(F(q1,q1,1) F(q2,q2,1)); the
#: unequal-variance one tightened from 1e-6 to 1e-7 by issue #22 (format version 2).
TOL_EQUAL = 1e-7
TOL_UNEQUAL = 1e-7
#: The same for the derivative tables (issue #12): |dF - dF_exact| / sqrt(E[phi'^2](q1)
#: E[phi'^2](q2)), dF = E[phi'(u) phi'(v)].
TOL_DF_EQUAL = 1e-7
TOL_DF_UNEQUAL = 1e-6
#: A smaller grid for tests of the file format and the command line.
SMALL_GRID = dict(variance_min=1e-4, variance_max=1e2, n_variance=40, n_angle=48,
                  n_unequal=24, n_unequal_angle=32)


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """A fresh table cache per session, or $NNGP_LUT_TEST_CACHE kept between sessions (a
    developer's repeated runs skip the table builds)."""
    mp = pytest.MonkeyPatch()
    keep = os.environ.get("NNGP_LUT_TEST_CACHE")
    mp.setenv("NNGP_LUT_CACHE", keep or str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


_TABLES = {}


@pytest.fixture(scope="session")
def table_of():
    """table_of(name, **grid) -> Table, memoised for the session; built through the
    session's table cache, so the library's own look-ups by name (``phi="tanh"``) reuse it."""

    def get(name, **grid):
        key = (name, tuple(sorted(grid.items())))
        if key not in _TABLES:
            _TABLES[key] = cached_table(name, **grid)
        return _TABLES[key]

    return get


@pytest.fixture
def rng():
    return np.random.default_rng(20181)
