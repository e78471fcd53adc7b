"""Blocked Cholesky speed (issue #4), with its peers measured in the same run.

  * n = 12000, in RAM: nngp_lut.linalg.cholesky against scipy.linalg.cholesky (one LAPACK
    dpotrf on the whole matrix) and dask.array.linalg.cholesky (if dask is installed; bench
    only, not a dependency) on the same SPD matrix; GFLOP/s = n^3/3 / time.
  * n = 30000: in RAM against out of core with a memory budget of 1/8 of the matrix
    (n^2 * 8 bytes / 8), tiles in a scratch directory.
  * The DGEMM rate of this machine in the same run (4096^3, two threads).

Every timing includes making the tiles from the matrix (a copy, as for a kernel).  Medians of
--repeat runs (n = 30000: --repeat-large).

    python bench/bench_cholesky.py [--n 12000] [--n-large 30000] [--repeat 3]
                                   [--repeat-large 1] [--scratch DIR]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.linalg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nngp_lut import linalg  # noqa: E402


def spd_factors(n, rank=512, seed=0):
    """A = G G^T / rank + I: G is (n, rank); tiles are made from G on demand."""
    return np.random.default_rng(seed).standard_normal((n, rank)) / np.sqrt(rank)


def tile_maker(g):
    def make_tile(rows, cols):
        t = g[rows[0]:rows[1]] @ g[cols[0]:cols[1]].T
        if rows == cols:
            t[np.diag_indices_from(t)] += 1.0
        return t
    return make_tile


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def dgemm_rate(repeat=3, n=4096):
    a = np.random.default_rng(1).standard_normal((n, n))
    b = np.random.default_rng(2).standard_normal((n, n))
    med, _ = timed(lambda: a @ b, repeat)
    return 2 * n**3 / med / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12000)
    ap.add_argument("--n-large", type=int, default=30000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--repeat-large", type=int, default=1)
    ap.add_argument("--scratch", default=None)
    args = ap.parse_args()

    gemm = dgemm_rate()
    print(f"DGEMM 4096^3: {gemm:.1f} GFLOP/s")

    n = args.n
    flops = n**3 / 3
    g = spd_factors(n)
    a = g @ g.T
    a[np.diag_indices_from(a)] += 1.0
    rows = []

    def ours():
        f = linalg.cholesky(tile_maker(g), n, memory="auto")
        f.remove()

    def ours_from_matrix():
        f = linalg.cholesky(lambda r, c: a[r[0]:r[1], c[0]:c[1]], n, memory="auto")
        f.remove()

    def scipy_chol():
        scipy.linalg.cholesky(a, lower=True, check_finite=False)

    t_ours, _ = timed(ours_from_matrix, args.repeat)
    t_scipy, _ = timed(scipy_chol, args.repeat)
    rows.append(("nngp-lut (tiles from the matrix)", t_ours))
    rows.append(("scipy.linalg.cholesky", t_scipy))
    # Check the factor against scipy's once.
    f = linalg.cholesky(lambda r, c: a[r[0]:r[1], c[0]:c[1]], n)
    rhs = np.random.default_rng(3).standard_normal((n, 4))
    ref = scipy.linalg.cho_solve((scipy.linalg.cholesky(a, lower=True), True), rhs)
    err = np.abs(f.solve(rhs) - ref).max() / np.abs(ref).max()
    f.remove()
    try:
        import dask
        import dask.array as da

        def dask_chol(chunk):
            x = da.from_array(a, chunks=chunk)
            da.linalg.cholesky(x, lower=True).compute()

        # dask needs square chunks that divide n: try those near our tile, keep its best.
        chunks = [c for c in range(1000, 6001, 500) if n % c == 0] or [n]
        trial = {c: timed(lambda: dask_chol(c), 1)[0] for c in chunks}
        best = min(trial, key=trial.get)
        t_dask, _ = timed(lambda: dask_chol(best), args.repeat)
        rows.append((f"dask.array.linalg.cholesky {dask.__version__} (chunks {best})",
                     t_dask))
    except ImportError:
        t_dask = None
    print(f"\nn = {n}, in RAM (median of {args.repeat}; flops n^3/3 = {flops:.3g}); "
          f"solve vs scipy cho_solve: rel. error {err:.1e}")
    print(f"{'method':<48} {'time s':>8} {'GFLOP/s':>8}")
    for name, t in rows:
        print(f"{name:<48} {t:8.2f} {flops / t / 1e9:8.1f}")
    print(f"ratio GFLOP/s nngp-lut / scipy: {t_scipy / t_ours:.2f}  (target >= 0.9)")
    if t_dask is not None:
        print(f"speed-up nngp-lut over dask:    {t_dask / t_ours:.2f}  (target >= 1.5)")
    del a

    if args.n_large:
        n = args.n_large
        flops = n**3 / 3
        g = spd_factors(n)
        budget = n * n * 8 // 8

        def in_ram():
            f = linalg.cholesky(tile_maker(g), n, memory="auto")
            f.remove()

        with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
            def out_of_core():
                f = linalg.cholesky(tile_maker(g), n, memory=budget, scratch=scratch,
                                    fingerprint="bench")
                f.remove()

            in_ram_ok, _ = linalg.plan(n, "auto")
            ooc, tile = linalg.plan(n, budget)
            t_ram, _ = timed(in_ram, args.repeat_large)
            t_ooc, _ = timed(out_of_core, args.repeat_large)
        print(f"\nn = {n} (tiles made from G (n x 512): A = G G^T + I; median of "
              f"{args.repeat_large})")
        print(f"{'method':<48} {'time s':>8} {'GFLOP/s':>8}")
        print(f"{'in RAM (packed lower triangle)':<48} {t_ram:8.1f} {flops / t_ram / 1e9:8.1f}")
        label = f"out of core, budget {budget / 1e9:.2f} GB, tile {tile}"
        print(f"{label:<48} {t_ooc:8.1f} {flops / t_ooc / 1e9:8.1f}")
        print(f"ratio out-of-core / in-RAM time: {t_ooc / t_ram:.2f}  (target <= 1.3)")


if __name__ == "__main__":
    main()
