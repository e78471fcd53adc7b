"""The paper's Table 1, MNIST rows (issue #4): exact NNGP test accuracy at the paper's
settings, with the paper's split, class-balanced subsets and per-input standardisation.

For each training size (1k, 10k, 50k) and activation (relu, tanh): accuracy against the
paper's, the jitter used, and the time split.  For the largest size it also measures the
DGEMM rate in the same run and compares the wall time with the model
n^3/3 / DGEMM rate + kernel time (train tiles and test kernel).

    python bench/bench_table1.py [--sizes 1000,10000,50000] [--phis relu,tanh]
                                 [--memory auto] [--scratch DIR] [--json OUT.json]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nngp_lut import paper  # noqa: E402
from nngp_lut.data import balanced_subset, mnist_paper_split  # noqa: E402
from nngp_lut.gp import evaluate  # noqa: E402

MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"
#: Targets of issue #4: |accuracy - paper| (absolute) per training size.
TARGET = {1000: 0.003, 10000: 0.003, 50000: 0.001}


def dgemm_rate(n=4096, repeat=3):
    a = np.random.default_rng(1).standard_normal((n, n))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / np.median(times)


def progress_printer():
    state = {"stage": None, "t": 0.0}

    def progress(stage, done, total):
        now = time.perf_counter()
        if stage != state["stage"] or now - state["t"] > 30 or done == total:
            print(f"    {stage}: {100 * done / total:5.1f}%", file=sys.stderr, flush=True)
            state.update(stage=stage, t=now)
    return progress


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--phis", default="relu,tanh")
    ap.add_argument("--memory", default="auto")
    ap.add_argument("--scratch", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    print("inputs standardised per example (the paper's convention; the library's default "
          "is off)", file=sys.stderr, flush=True)
    split = mnist_paper_split(MNIST)
    x_test = split.x_test.astype(np.float64)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        # The paper's code takes a balanced subset below 50k and the whole train set at 50k.
        idx = (np.arange(n) if n == len(split.y_train)
               else balanced_subset(split.y_train, n))
        x_train, y_train = split.x_train[idx].astype(np.float64), split.y_train[idx]
        for phi in args.phis.split(","):
            depth, w, b, reference = paper.TABLE1_MNIST[n, phi]
            print(f"{n} {phi} depth {depth} weight_var {w} bias_var {b} ...", file=sys.stderr,
                  flush=True)
            t0 = time.perf_counter()
            res = evaluate(x_train, y_train, x_test, split.y_test, phi=phi, depth=depth,
                           weight_var=w, bias_var=b, standardize=paper.STANDARDIZE,
                           memory=args.memory, scratch=args.scratch,
                           progress=progress_printer())
            wall = time.perf_counter() - t0
            row = dict(n_train=n, phi=phi, setting=f"{depth}-{w}-{b}", paper=reference,
                       accuracy=res.accuracy, diff=res.accuracy - reference, mse=res.mse,
                       jitter=res.jitter, wall=wall, **res.timings)
            if n == max(int(s) for s in args.sizes.split(",")) and n >= 20000:
                rate = dgemm_rate()
                model = n**3 / 3 / rate + res.timings["kernel"] + res.timings["predict"]
                row.update(dgemm_gflops=rate / 1e9, model_s=model, wall_over_model=wall / model)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)

    print(f"{'train':>6} {'phi':<5} {'setting':<14} {'paper':>7} {'ours':>7} {'diff':>8} "
          f"{'target':>7} {'jitter':>7} {'kernel s':>9} {'chol s':>8} {'pred s':>7} "
          f"{'total s':>8}")
    for r in rows:
        ok = abs(r["diff"]) <= TARGET.get(r["n_train"], 0.003)
        print(f"{r['n_train']:>6} {r['phi']:<5} {r['setting']:<14} {r['paper']:7.4f} "
              f"{r['accuracy']:7.4f} {r['diff']:+8.4f} {'ok' if ok else 'MISS':>7} "
              f"{r['jitter']:7.0e} {r['kernel']:9.1f} {r['cholesky']:8.1f} "
              f"{r['predict']:7.1f} {r['wall']:8.1f}")
    for r in rows:
        if "model_s" in r:
            print(f"{r['n_train']} {r['phi']}: wall {r['wall']:.0f} s vs model "
                  f"n^3/3 at DGEMM {r['dgemm_gflops']:.1f} GFLOP/s + kernel "
                  f"{r['kernel'] + r['predict']:.0f} s = {r['model_s']:.0f} s: ratio "
                  f"{r['wall_over_model']:.2f} (target <= 1.3); Cholesky alone "
                  f"{r['n_train']**3 / 3 / r['cholesky'] / 1e9:.1f} GFLOP/s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
