"""The NTK's prediction of gradient descent (Lee et al. 2019), issue #15.

relu, depth 2 (Dense(2, 0.1), NTK parameterisation), trained by full-batch gradient descent
(optax.sgd) on the squared loss with the GP's centred one-hot targets, on the first --n
images of the paper's balanced MNIST 1k subset (inputs standardised per example), tested on
the first --n-test test images, at widths 64, 128, ..., 4096.

What is compared (nngp_lut.finite.linearization): the centred network f(x; theta_k) -
f(x; theta_0) after k steps (its initial output is subtracted, so it starts at exactly 0;
the initial function's own contribution to one network, f_0(x*) - Theta_{*D} Theta^{-1}
f_0(D), does not shrink with width), against the NTK-GP mean after the same k steps,
Lee et al. 2019 eq. 16 in discrete time, mu_k = Theta_{*D} Theta_{DD}^{-1} (I - (I - c
Theta_{DD})^k) Y with the infinite-width NTK of Network.kernel and c = 2 lr / (n m).  The
distance is ||f_k(X*) - mu_k(X*)||_F / ||mu_k(X*)||_F, mean over seeds; it is also given
against the converged mean mu_inf = Theta_{*D} Theta_{DD}^{-1} Y, and how far mu_k itself
is from mu_inf (gradient descent's own distance from convergence after k steps).

Target: the distance decreases with width, fitted log-log slope <= -0.4 (theory: -1/2).
The learning rate is c = --rate / lambda_max(Theta_DD) (the stability limit is 2).

    python bench/bench_linearization.py [--n 256] [--n-test 256] [--steps 500] [--rate 1.5]
        [--seeds 3] [--seeds-wide 1] [--wide 2048]
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nngp_lut import finite  # noqa: E402
from nngp_lut.data import load_dataset, standardize_rows  # noqa: E402
from nngp_lut.kernel import Network  # noqa: E402
from nngp_lut.kernel.arch import parse_arch  # noqa: E402
from nngp_lut.montecarlo import loglog_slope  # noqa: E402

ARCH = "serial(Dense(2, 0.1), repeat(serial(Activation('relu'), Dense(2, 0.1)), 2))"
SLOPE_TARGET = -0.4


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--n-test", type=int, default=256)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--rate", type=float, default=1.5,
                    help="c * lambda_max(Theta_DD) (below 2 for stability)")
    ap.add_argument("--widths", default="64,128,256,512,1024,2048,4096")
    ap.add_argument("--seeds", type=int, default=3, help="seeds below --wide")
    ap.add_argument("--seeds-wide", type=int, default=1, help="seeds at --wide and above")
    ap.add_argument("--wide", type=int, default=2048)
    args = ap.parse_args()
    d = load_dataset()
    x, y = standardize_rows(d.x_train[:args.n]), d.y_train[:args.n]
    x_test = standardize_rows(d.x_test[:args.n_test])
    layer = parse_arch(ARCH)
    theta = Network(layer).kernel(x, get="ntk")
    lam = np.linalg.eigvalsh(theta)
    rate = args.rate / lam[-1]
    print(f"{ARCH}\n{args.n} train, {args.n_test} test MNIST images (standardised); full-batch "
          f"GD, {args.steps} steps, c = {args.rate} / lambda_max(Theta_DD) = {rate:.4g} "
          f"(Theta_DD eigenvalues {lam[0]:.4g} .. {lam[-1]:.4g}, condition "
          f"{lam[-1] / lam[0]:.0f}); float64; {os.cpu_count()} cores shared with other jobs "
          f"(load average at start {os.getloadavg()[0]:.1f})", flush=True)
    widths = [int(w) for w in args.widths.split(",")]
    start = time.perf_counter()
    rows, summary = [], None
    for width in widths:
        t0 = time.perf_counter()
        seeds = args.seeds if width < args.wide else args.seeds_wide
        r, summary = finite.linearization(layer, x, y, x_test, widths=[width], seeds=seeds,
                                          steps=args.steps, rate=rate)
        r[0]["seconds"] = time.perf_counter() - t0
        rows.extend(r)
        print(f"  width {width:>5}: distance {r[0]['distance']:.4f} +- "
              f"{r[0]['distance_std']:.4f} ({seeds} seeds), to mu_inf "
              f"{r[0]['distance_inf']:.4f}, train MSE {r[0]['train_mse']:.3g}, "
              f"{r[0]['seconds']:.0f} s", flush=True)
    slope = loglog_slope(widths, [r["distance"] for r in rows])
    slope_inf = loglog_slope(widths, [r["distance_inf"] for r in rows])
    print(f"\nlearning rate {summary['learning_rate']:.4g} (c = {summary['rate']:.4g}); "
          f"||mu_k - mu_inf|| / ||mu_inf|| = {summary['mean_gap']:.4f} after {args.steps} "
          "steps")
    print(f"{'width':>6} {'seeds':>5} {'distance to mu_k':>17} {'sd':>7} "
          f"{'to mu_inf':>10} {'train MSE':>10} {'seconds':>8}")
    for r in rows:
        print(f"{r['width']:>6} {r['seeds']:>5} {r['distance']:>17.4f} "
              f"{r['distance_std']:>7.4f} {r['distance_inf']:>10.4f} {r['train_mse']:>10.3g} "
              f"{r['seconds']:>8.0f}")
    print(f"fitted slope (log distance vs log width): to mu_k {slope:.3f}, to mu_inf "
          f"{slope_inf:.3f}; wall time {time.perf_counter() - start:.0f} s")
    print(f"target: slope <= {SLOPE_TARGET} and decreasing: "
          f"{'PASS' if slope <= SLOPE_TARGET else 'FAIL'} (distance to mu_k, the NTK-GP mean "
          "at the same training time)")


if __name__ == "__main__":
    main()
