"""Finite random networks against the infinite-width NNGP and NTK (issue #12, Monte Carlo).

For relu and tanh networks of depth 3 and a residual block with LayerNorm (then a readout
Dense), samples ``--draws`` random networks of every width 64, 128, ..., 4096 (JAX, float64)
on standardised inputs of the embedded MNIST sample, and prints per width the relative
Frobenius error ||K_emp - K||_F / ||K||_F of the empirical NNGP and NTK (mean over the
draws), the rms-over-draws error (nngp_lut.montecarlo.convergence), and the fitted log-log
slopes.  Targets: slope in [-0.6, -0.4] and error at width 4096 below 3 %; the verdict is
printed for both slopes (the rms one averages over the draws and is the steady estimate;
the slope of the mean-of-draws error scatters by ~0.1 from seed to seed).

The residual block ends in its LayerNorm (no readout Dense), as in the issue.

    python bench/bench_montecarlo.py [--draws 8] [--n-inputs 8] [--max-width 4096] [--seed 0]
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nngp_lut import montecarlo  # noqa: E402
from nngp_lut.data import load_dataset, standardize_rows  # noqa: E402
from nngp_lut.kernel.arch import parse_arch  # noqa: E402

ARCHITECTURES = {
    "relu depth 3": "serial(Dense(2, 0.1), repeat(serial(Activation('relu'), "
                    "Dense(2, 0.1)), 3))",
    "tanh depth 3": "serial(Dense(1.5, 0.1), repeat(serial(Activation('tanh'), "
                    "Dense(1.5, 0.1)), 3))",
    "residual + LayerNorm": "serial(Dense(1, 0), FanOut(2), parallel(serial("
                            "Activation('relu'), Dense(1, 0)), Identity()), FanInSum(), "
                            "LayerNorm())",
}
SLOPE_TARGET = (-0.6, -0.4)
ERROR_TARGET = 0.03


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--n-inputs", type=int, default=8)
    ap.add_argument("--max-width", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    x = standardize_rows(load_dataset().x_train[:args.n_inputs])
    widths = [2 ** k for k in range(6, 13) if 2 ** k <= args.max_width]
    print(f"{args.n_inputs} standardised MNIST inputs (d = {x.shape[1]}), {args.draws} draws "
          f"per width, seed {args.seed}; errors relative, Frobenius")
    verdicts = []
    for name, text in ARCHITECTURES.items():
        start = time.perf_counter()
        rows, slopes = montecarlo.convergence(parse_arch(text), x, widths, args.draws,
                                              args.seed)
        took = time.perf_counter() - start
        print(f"\n{name}: {text}\n  (against the fused Network.kernel; {took:.0f} s)")
        print(f"  {'width':>6} {'NNGP error':>11} {'NTK error':>10} {'NNGP rms':>9} "
              f"{'NTK rms':>8}")
        for r in rows:
            print(f"  {r['width']:>6} {r['nngp_error']:>11.4f} {r['ntk_error']:>10.4f} "
                  f"{r['nngp_rms']:>9.4f} {r['ntk_rms']:>8.4f}")
        print(f"  {'slope':>6} {slopes['nngp_error']:>11.3f} {slopes['ntk_error']:>10.3f} "
              f"{slopes['nngp_rms']:>9.3f} {slopes['ntk_rms']:>8.3f}")
        for kind in ("nngp", "ntk"):
            last = rows[-1][f"{kind}_error"]
            for stat in ("rms", "error"):
                s = slopes[f"{kind}_{stat}"]
                ok = SLOPE_TARGET[0] <= s <= SLOPE_TARGET[1] and last < ERROR_TARGET
                verdicts.append((name, kind.upper(), stat, s, last, ok))
    print(f"\ntargets: slope in [{SLOPE_TARGET[0]}, {SLOPE_TARGET[1]}], error at width "
          f"{widths[-1]} below {ERROR_TARGET:.0%}")
    print(f"  {'network':<22} {'kernel':<5} {'slope of':<9} {'slope':>7} "
          f"{'error at ' + str(widths[-1]):>14}  verdict")
    for name, kind, stat, s, last, ok in verdicts:
        print(f"  {name:<22} {kind:<5} {stat:<9} {s:>7.3f} {last:>14.4f}  "
              f"{'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
