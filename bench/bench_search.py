"""Model selection on MNIST (issue #5): the paper's full grid at 1k, validated on 1000
validation images, and the calibration of the paper's Figure 2.

  * search: the paper's class-balanced 1k training subset, the first 1000 validation images
    (x_train[:1000] of the 60k), weight_var in linspace(0.1, 5, 30) x bias_var in
    linspace(0, 2, 30) x depths (default 1, 2, 3, 5, 7, 10, 20, 50, 100); the best
    validation setting is fitted and scored on the 10k test images, against the paper's
    Table 1 accuracy (target: at least paper - 0.003).  Prints wall time and cost per setting.
  * calibration at depth 3, weight_var 2.0, bias_var 0.2: the correlation between binned
    (groups of 100 test points) predicted variance and realised squared error, per training
    size.

    python bench/bench_search.py [--phis relu,tanh] [--depths ...] [--grid 30]
                                 [--calibration-sizes 1000,10000] [--out-dir bench/out]
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nngp_lut import paper, plots, search  # noqa: E402
from nngp_lut.data import balanced_subset, mnist_paper_split  # noqa: E402

MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phis", default="relu,tanh")
    ap.add_argument("--depths", default="1,2,3,5,7,10,20,50,100")
    ap.add_argument("--grid", type=int, default=30)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--calibration-sizes", default="1000,10000")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "out"))
    args = ap.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split = mnist_paper_split(MNIST)
    idx = balanced_subset(split.y_train, 1000)
    x, y = split.x_train[idx], split.y_train[idx]
    xv, yv = split.x_val[:args.n_val], split.y_val[:args.n_val]
    lines = []
    for phi in [p for p in args.phis.split(",") if p]:
        csv_path = out_dir / f"search_{phi}_1k.csv"
        csv_path.unlink(missing_ok=True)
        settings = args.grid * args.grid
        t0 = time.perf_counter()
        rows = search.grid_search(
            x, y, xv, yv, phi=phi, depths=args.depths,
            weight_vars=f"0.1:5:{args.grid}", bias_vars=f"0:2:{args.grid}", out=csv_path,
            standardize=paper.STANDARDIZE,
            progress=lambda d, t: print(f"  {phi} {d}/{t}", file=sys.stderr, flush=True)
            if d % 30 == 0 else None)
        wall = time.perf_counter() - t0
        best, test = search.test_best(rows, x, y, split.x_test, split.y_test, phi=phi,
                                      standardize=paper.STANDARDIZE)
        reference = paper.TABLE1_MNIST[1000, phi]
        ok = test.accuracy >= reference[3] - 0.003
        lines.append(
            f"{phi}: {len(rows)} rows ({settings} settings x {len(search.parse_depths(args.depths))}"
            f" depths) in {wall:.0f} s = {wall / settings:.2f} s per (weight_var, bias_var), "
            f"{1e3 * wall / len(rows):.0f} ms per row\n"
            f"  best on validation: depth {best['depth']}, weight_var {best['weight_var']:.3f}, "
            f"bias_var {best['bias_var']:.3f} (val accuracy {best['val_accuracy']:.4f})\n"
            f"  test accuracy {test.accuracy:.4f}, MSE {test.mse:.5f}; paper "
            f"{reference[3]:.4f} at {reference[0]}-{reference[1]}-{reference[2]}: "
            f"{'ok' if ok else 'MISS'} (target >= {reference[3] - 0.003:.4f})")
        print(lines[-1], flush=True)
    for n in [int(s) for s in args.calibration_sizes.split(",") if s]:
        sub = balanced_subset(split.y_train, n)
        t0 = time.perf_counter()
        res = plots.calibration(split.x_train[sub], split.y_train[sub], split.x_test,
                                split.y_test, out_dir / f"calibration_{n}.png", phi="relu",
                                standardize=paper.STANDARDIZE)
        lines.append(f"calibration relu 3-2.0-0.2, {n} train, 10000 test: correlation "
                     f"{res['correlation']:.4f} over {res['bins']} bins of 100 (accuracy "
                     f"{res['accuracy']:.4f}; {time.perf_counter() - t0:.0f} s)")
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
