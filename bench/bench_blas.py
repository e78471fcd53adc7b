"""DGEMM speed of the installed OpenBLAS under each kernel family, one subprocess each.

OpenBLAS chooses its kernels once, when numpy loads it, from the CPU or from
OPENBLAS_CORETYPE; this prints what each choice gives on this machine:

    python bench/bench_blas.py [--cores Haswell SkylakeX] [--repeat 5]

Figures: GFLOP/s of a 4096^3 product and of X Y^T with X, Y of 10000 x 784 (the shape of
the deep-kernel benchmark's Gram; X X^T itself numpy hands to dsyrk), medians of --repeat.
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from bench_blas import openblas_core
core = openblas_core()
rng = np.random.default_rng(0)
a = rng.standard_normal((4096, 4096))
x = rng.standard_normal((10000, 784))
y = rng.standard_normal((10000, 784))
def rate(f, flops, repeat):
    f()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return flops / statistics.median(ts) / 1e9
repeat = int(sys.argv[1])
print(json.dumps({"core": core, "gemm": rate(lambda: a @ a, 2 * 4096.0 ** 3, repeat),
                  "gram": rate(lambda: x @ y.T, 2 * 1e8 * 784, repeat)}))
"""


HERE = os.path.dirname(os.path.abspath(__file__))


def openblas_core():
    """OpenBLAS's kernel family ('Haswell', 'SkylakeX', ...; threadpoolctl, a scikit-learn
    dependency, tells), or '?'."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "?"
    cores = {lib.get("architecture") for lib in threadpool_info()
             if lib.get("internal_api") == "openblas"}
    return ", ".join(sorted(map(str, cores))) or "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", nargs="+", default=["auto", "Haswell", "SkylakeX"],
                    help="OPENBLAS_CORETYPE values; auto = unset (OpenBLAS's own choice)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"OPENBLAS_CORETYPE in this shell: {os.environ.get('OPENBLAS_CORETYPE')}")
    print(f"{'OPENBLAS_CORETYPE':<20}{'kernels':<12}{'DGEMM 4096^3':>14}{'X Y^T 10000x784':>17}")
    for core in args.cores:
        env = dict(os.environ)
        env.pop("OPENBLAS_CORETYPE", None)
        if core != "auto":
            env["OPENBLAS_CORETYPE"] = core
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.repeat), HERE], env=env,
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{core:<20}{r['core']:<12}{r['gemm']:>9.1f} GF/s{r['gram']:>12.1f} GF/s")


if __name__ == "__main__":
    main()
