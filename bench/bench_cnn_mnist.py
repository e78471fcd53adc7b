"""CNN-GP on MNIST (issue 13): a convolutional NNGP without pooling (Flatten readout)
against the fully connected NNGP of the paper's Table 1, on the paper's split and
class-balanced subsets, with the paper's per-input standardisation.

1. A small search on the validation set picks the depth: each candidate CNN (3x3 relu
   convolutions, the first ones of stride 2, SAME padding, Flatten, Dense) is fitted on the
   balanced 1k subset and scored on the first --n-val validation images.
2. The chosen CNN is fitted on the balanced 1k and 10k subsets and scored on the 10,000
   test images; test accuracy against Table 1's relu NNGP (1k: 0.9279, 10k: 0.9765), wall
   time of the kernels (train tiles + the test kernel) and of the solve (Cholesky +
   triangular solves).
Before each fit the cost of its kernels is estimated from a timed 200 x 200 block.

    python bench/bench_cnn_mnist.py [--sizes 1000,10000] [--depths 1,2,3,4] [--n-val 2000]
                                    [--speed] [--json OUT.json]

--speed only measures the engine's kernel entries per second for the two architectures of
the issue's speed target (depth-8 3x3 relu CNN with Flatten on 28x28 MNIST; the same with
GlobalAvgPool on 16x16 crops), NNGP, median of --repeats runs (the neural-tangents side is
bench/bench_conv.py's).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nngp_lut import paper  # noqa: E402
from nngp_lut.data import balanced_subset, mnist_paper_split, standardize_rows  # noqa: E402
from nngp_lut.gp import evaluate  # noqa: E402
from nngp_lut.kernel import (Activation, Conv, Dense, Flatten, GlobalAvgPool,  # noqa: E402
                             Network, serial)

MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"
#: The fully connected relu NNGP of the paper's Table 1 (MNIST), to beat.
TARGET = {n: paper.TABLE1_MNIST[n, "relu"][3] for n in (1000, 10000)}
#: Weight and bias variances of every layer (relu: weight_var 2 keeps the variance).
WEIGHT_VAR, BIAS_VAR = 2.0, 0.01
#: The default stem: the first two 3x3 convolutions of stride 2 (28 -> 14 -> 7 positions).
STEM = "3x3/2,3x3/2"


def parse_stem(text):
    """"4x4/4" or "3x3/2,3x3/2": the first convolutions' (filter, stride)."""
    out = []
    for part in text.split(","):
        f, s = part.split("/")
        out.append((tuple(int(v) for v in f.split("x")), int(s)))
    return out


def cnn(depth, stem=STEM, w=WEIGHT_VAR, b=BIAS_VAR):
    """depth x (Conv, relu): the first ones as the stem says, then 3x3 of stride 1 (all
    SAME); Flatten; Dense."""
    first = parse_stem(stem)
    layers = []
    for layer in range(depth):
        f, s = first[layer] if layer < len(first) else ((3, 3), 1)
        layers += [Conv(w, b, filter_shape=f, strides=(s, s)), Activation("relu")]
    return Network(serial(*layers, Flatten(), Dense(w, b)))


def images(x):
    return standardize_rows(x.astype(np.float64)).reshape(-1, 28, 28, 1)


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return [(i.get("internal_api"), i.get("architecture"), i.get("num_threads"))
                for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        return "threadpoolctl missing"


def pair_seconds(net, x, n=200):
    """Wall seconds per kernel entry, from a timed n x n block (after a warm-up)."""
    net.kernel(x[:4], x[4:8])
    t0 = time.perf_counter()
    net.kernel(x[:n], x[n:2 * n])
    return (time.perf_counter() - t0) / n**2


def fit(net, x_train, y_train, x_test, y_test):
    t0 = time.perf_counter()
    res = evaluate(x_train, y_train, x_test, y_test, network=net, memory="auto")
    wall = time.perf_counter() - t0
    t = res.timings
    # predict is the test kernel (row blocks against the training set) plus a GEMM.
    return dict(accuracy=res.accuracy, mse=res.mse, jitter=res.jitter, wall=wall,
                kernel_s=t["kernel"] + t["predict"], solve_s=t["cholesky"] + t["solve"],
                train_kernel_s=t["kernel"], test_kernel_s=t["predict"],
                cholesky_s=t["cholesky"], triangular_s=t["solve"])


def speed(repeats):
    """Entries per second of the engine on the issue's two speed architectures."""
    split = mnist_paper_split(MNIST)
    x = images(split.x_train[:400])
    nets = {
        "depth-8 3x3 relu CNN, Flatten, 28x28": (
            Network(serial(*[layer for _ in range(8) for layer in
                             (Conv(WEIGHT_VAR, BIAS_VAR), Activation("relu"))],
                           Flatten(), Dense(WEIGHT_VAR, BIAS_VAR))), x, 100),
        "depth-8 3x3 relu CNN, GlobalAvgPool, 16x16": (
            Network(serial(*[layer for _ in range(8) for layer in
                             (Conv(WEIGHT_VAR, BIAS_VAR), Activation("relu"))],
                           GlobalAvgPool(), Dense(WEIGHT_VAR, BIAS_VAR))),
            np.ascontiguousarray(x[:, 6:22, 6:22, :]), 8),
    }
    rows = []
    for name, (net, xs, n) in nets.items():
        net.kernel(xs[:2], xs[2:4])  # compile
        times, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            net.kernel(xs[:n], xs[n:2 * n])
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        med = float(np.median(times))
        # CPU seconds (both threads) say what the entries cost when other jobs share the
        # cores: entries per CPU-second x 2 is the rate of an idle 2-core machine.
        rows.append(dict(architecture=name, block=f"{n}x{n}", runs=repeats, median_s=med,
                         entries_per_s=n * n / med, median_cpu_s=float(np.median(cpu)),
                         entries_per_cpu_s=n * n / float(np.median(cpu)),
                         load_average=os.getloadavg()[0], storage=net.storage(xs.shape[1:])))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--depths", default="1,2,3,4")
    ap.add_argument("--n-val", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=10000,
                    help="Score the first M test images (10000: all, the paper's).")
    ap.add_argument("--depth", type=int, default=None,
                    help="Skip the search and use this depth.")
    ap.add_argument("--stem", default=STEM,
                    help="The first convolutions, filter/stride each (4x4/4: 28 -> 7 "
                    "positions at once, the cheap stem that fits the 10k kernel here).")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    print(f"BLAS: {blas_info()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    if args.speed:
        rows = speed(args.repeats)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
        return
    split = mnist_paper_split(MNIST)
    x_test, y_test = images(split.x_test[:args.n_test]), split.y_test[:args.n_test]
    x_val, y_val = images(split.x_val[:args.n_val]), split.y_val[:args.n_val]
    out = {"setting": f"CNN-GP: depth x (Conv SAME, weight_var {WEIGHT_VAR}, bias_var "
                      f"{BIAS_VAR}, relu), stem {args.stem} then 3x3/1; Flatten; Dense; "
                      "NNGP; inputs standardised per example"}
    idx1k = balanced_subset(split.y_train, 1000)
    x1k, y1k = images(split.x_train[idx1k]), split.y_train[idx1k]
    if args.depth is None:  # the search on validation (1k training images)
        search = []
        for depth in [int(d) for d in args.depths.split(",")]:
            net = cnn(depth, args.stem)
            t0 = time.perf_counter()
            res = evaluate(x1k, y1k, x_val, y_val, network=net, memory="auto")
            search.append(dict(depth=depth, val_accuracy=res.accuracy, val_mse=res.mse,
                               seconds=time.perf_counter() - t0))
            print(json.dumps(search[-1]), flush=True)
        best = max(search, key=lambda r: (r["val_accuracy"], -r["val_mse"]))
        out["search"] = search
        depth = best["depth"]
        print(f"chosen on validation ({args.n_val} images, 1k training): depth {depth}",
              flush=True)
    else:
        depth = args.depth
    net = cnn(depth, args.stem)
    out["depth"], out["arch"] = depth, repr(net.layer)
    out["storage"] = net.storage((28, 28, 1))
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        idx = balanced_subset(split.y_train, n)
        x_train, y_train = images(split.x_train[idx]), split.y_train[idx]
        per_entry = pair_seconds(net, x_train)
        entries = n * (n + 1) / 2 + n * len(y_test)
        print(f"{n}: estimated kernel time {per_entry * entries / 60:.1f} min "
              f"({per_entry * 1e6:.1f} us per entry, {entries:.3g} entries)", flush=True)
        row = dict(n_train=n, depth=depth, target=TARGET.get(n),
                   estimated_kernel_s=per_entry * entries, **fit(net, x_train, y_train,
                                                                 x_test, y_test))
        row["beats_target"] = row["target"] is not None and row["accuracy"] > row["target"]
        results.append(row)
        print(json.dumps(row), flush=True)
    out["results"] = results
    print(f"{'train':>6} {'depth':>5} {'FC NNGP':>8} {'CNN-GP':>8} {'beats':>6} "
          f"{'kernel s':>9} {'solve s':>8} {'wall s':>8}")
    for r in results:
        print(f"{r['n_train']:>6} {r['depth']:>5} {r['target'] or float('nan'):8.4f} "
              f"{r['accuracy']:8.4f} {'yes' if r['beats_target'] else 'NO':>6} "
              f"{r['kernel_s']:9.1f} {r['solve_s']:8.1f} {r['wall']:8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
