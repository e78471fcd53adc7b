"""Build the default table of several activations; print build time and measured error.

The error is max |F_table - F_exact| / E[phi^2] over a dense set of random off-grid points
(log-uniform variance over the domain, theta half uniform, half within 1e-6..1 of rho = +-1):
against the closed form where one exists, else against direct quadrature (tested against a
slow scipy integrator in tests/).  Times include Numba compilation on a cold cache when
--cold is given (a fresh cache folder), else the median of --repeat builds.

    python bench/bench_tables.py [--points 20000] [--repeat 3] [NAME ...]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nngp_lut import build_table  # noqa: E402
from nngp_lut.tables import Integrator, random_points  # noqa: E402
from tests.naive import closed_form  # noqa: E402

CLOSED = {"relu", "abs", "step", "identity", "erf", "sin", "cos"}
DEFAULT = ["relu", "tanh", "erf", "gelu", "softplus", "elu", "selu", "sin", "x*tanh(x)"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=DEFAULT)
    ap.add_argument("--points", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp())
    print(f"{'activation':<14}{'build s (median)':>18}{'max err F':>12}{'max err dF':>12}"
          f"{'vs':>12}{'points':>8}")
    for name in args.names:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            table = build_table(name)
            times.append(time.perf_counter() - t0)
        q, theta = random_points(table, args.points, seed=2024)
        rho = np.cos(theta)
        if name in CLOSED:
            exact, exact_d, ref = closed_form(name, q, q, rho), None, "closed form"
        else:
            exact, exact_d = Integrator(name, table.variance_max).bivariate(q, q, theta)
            ref = "quadrature"
        err = np.max(np.abs(table.F(q, q, rho) - exact) / table.second_moment(q))
        errd = (np.max(np.abs(table.dF(q, q, rho) - exact_d)
                       / table.derivative_second_moment(q)) if exact_d is not None else np.nan)
        print(f"{name:<14}{statistics.median(times):>18.2f}{err:>12.2e}{errd:>12.2e}"
              f"{ref:>12}{args.points:>8}", flush=True)


if __name__ == "__main__":
    main()
