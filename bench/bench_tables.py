"""Build the default table of several activations; print build time and measured error.

The error is max |F_table - F_exact| / sqrt(E[phi^2](q1) E[phi^2](q2)) over a dense set of
random off-grid points (log-uniform variances over the domain, theta half uniform, half
within 1e-6..1 of rho = +-1), for q1 = q2 and for independent q1, q2 (capped at the unequal
domain, 25 for sin and cos): against the closed form where one exists, else against direct
quadrature (itself tested against a slow scipy integrator in tests/).  dF = E[phi'(u) phi'(v)]
is measured the same way, normalised by sqrt(E[phi'^2](q1) E[phi'^2](q2)), against its
closed form (relu, identity, erf, sin, cos) or quadrature.  Build time: median of --repeat
builds, wall clock and CPU (all threads; the build runs on every core), the first of them
including Numba compilation (the builder's kernels take phi as an argument, which Numba
compiles again in every process); MB: size of the saved file.

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
from tests.naive import closed_form, closed_form_dot  # noqa: E402

CLOSED = {"relu", "abs", "step", "identity", "erf", "sin", "cos"}
CLOSED_DOT = {"relu", "identity", "erf", "sin", "cos"}
DEFAULT = ["relu", "tanh", "erf", "sigmoid", "gelu", "softplus", "silu", "elu", "selu", "sin",
           "cos", "x*tanh(x)"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=DEFAULT)
    ap.add_argument("--points", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp())
    print(f"{'activation':<14}{'build s':>9}{'cpu s':>7}{'MB':>7}{'err F':>10}{'err dF':>10}"
          f"{'err F q1!=q2':>14}{'err dF q1!=q2':>15}{'ref F':>8}{'ref dF':>8}{'points':>8}")
    for name in args.names:
        times, cpu = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            table = build_table(name)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        with tempfile.TemporaryDirectory() as tmp:
            mb = os.path.getsize(table.save(Path(tmp) / "t.h5")) / 1e6
        q, theta = random_points(table, args.points, seed=2024)
        q2, _ = random_points(table, args.points, seed=2025)
        top = table.unequal_variance_max
        qa, qb = np.minimum(q, top), np.minimum(q2, top)
        rho = np.cos(theta)
        integ = Integrator(name, table.variance_max)
        f, fd = integ.bivariate(q, q, theta)
        fu, fdu = integ.bivariate(qa, qb, theta)
        ref = refd = "quad"
        if name in CLOSED:  # the closed form, independent of the quadrature, for F
            f, fu, ref = closed_form(name, q, q, rho), closed_form(name, qa, qb, rho), "closed"
        if name in CLOSED_DOT:
            fd, fdu = closed_form_dot(name, q, q, rho), closed_form_dot(name, qa, qb, rho)
            refd = "closed"
        d1, d2 = table.second_moment(qa), table.second_moment(qb)
        err = np.max(np.abs(table.F(q, q, rho) - f) / table.second_moment(q))
        erru = np.max(np.abs(table.F(qa, qb, rho) - fu) / np.sqrt(d1 * d2))
        errd = errdu = np.nan
        if table.has_derivative:
            errd = np.max(np.abs(table.dF(q, q, rho) - fd) / table.derivative_second_moment(q))
            dd = np.sqrt(table.derivative_second_moment(qa) * table.derivative_second_moment(qb))
            errdu = np.max(np.abs(table.dF(qa, qb, rho) - fdu) / dd)
        print(f"{name:<14}{statistics.median(times):>9.2f}{statistics.median(cpu):>7.1f}"
              f"{mb:>7.1f}{err:>10.2e}{errd:>10.2e}"
              f"{erru:>14.2e}{errdu:>15.2e}{ref:>8}{refd:>8}{args.points:>8}", flush=True)


if __name__ == "__main__":
    main()
