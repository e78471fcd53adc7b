"""Softmax attention at the standard 1/sqrt(n) scaling (issue 23, item 4): Monte Carlo and time.

At 1/sqrt(n) scaling each head's logits stay random at every width, so one finite
network's kernel does not converge with width: only the mean over draws and heads does
(Hron et al. 2020).  On 8 random sequences of length 8 (8 channels):

1. --mc: for a single attention layer (Dense, SelfAttention, mean over positions, Dense) and
   a transformer block (the registry's "transformer" with the attention at 1/sqrt(n), without
   the learned positional embedding, whose T x C entries over the C input channels are
   another per-draw randomness that no width averages), the mean kernel of --draws finite
   networks of width --width with H heads (--heads, each a separate run) against the
   infinite-width kernel: relative Frobenius error, its standard error from the spread of the
   draws, their ratio (target <= 3 standard errors), and the fitted slopes of log error and
   log standard error against log(draws x heads) (target -1/2).  One network's variance is
   a / heads (the heads' logits) + b (the finite width, ~ 1/width): the slope against the
   heads is -1/2 only where a / heads dominates b, which the fit of a and b shows.
2. --speed: the time of the kernel (NNGP, symmetric, layer by layer: no engine op) of the 8
   sequences, for the attention layer alone and for the transformer block, at the default
   tolerance and at a looser one; median of --repeats calls after a warm-up.

    python bench/bench_attention.py [--mc] [--speed] [--width 1024] [--draws 64]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nngp_lut.kernel import (Activation, Dense, FanInSum, FanOut, GlobalAvgPool,  # noqa: E402
                             Identity, LayerNorm, Network, SelfAttention, parallel, serial)
from nngp_lut.montecarlo import loglog_slope  # noqa: E402

N, T, C = 8, 8, 8


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, T, C))


def attention(heads, tol, logit_var):
    return SelfAttention(1.0, 0.1, logit_var=logit_var, tied=False, scaling="1/sqrt(n)",
                         heads=heads, tol=tol)


def networks(heads, tol, logit_var=1.0):
    return {
        "attention": serial(Dense(1.0, 0.1), attention(heads, tol, logit_var),
                            GlobalAvgPool(), Dense(1.0, 0.0)),
        "transformer": serial(Dense(1.0, 0.1), FanOut(2),
                              parallel(Identity(), attention(heads, tol, logit_var)),
                              FanInSum(),
                              LayerNorm(), FanOut(2),
                              parallel(Identity(), serial(Dense(2.0, 0.1), Activation("relu"),
                                                          Dense(1.0, 0.1))),
                              FanInSum(), LayerNorm(), GlobalAvgPool(), Dense(1.0, 0.0)),
    }


def monte_carlo(width, draws, heads_list, tol, logit_var, names=("attention", "transformer")):
    from nngp_lut import montecarlo as mc

    x = inputs()
    print(f"Monte Carlo: {N} sequences of length {T}, {C} channels; width {width}, "
          f"{draws} draws per number of heads; logit_var {logit_var:g}; kernel tol {tol:g}")
    for name in names:
        print(f"\n{name}")
        print(f"{'heads':>5} {'draws':>6} {'x heads':>8} {'error':>8} {'SE':>8} {'SEs':>6} "
              f"{'max|z|':>7} {'time':>7}")
        points = []
        for heads in heads_list:
            start = time.perf_counter()
            rows, _ = mc.mean_convergence(networks(heads, tol, logit_var)[name], x, width,
                                          draws, 0)
            elapsed = time.perf_counter() - start
            for r in rows:
                print(f"{heads:>5} {r['draws']:>6} {r['draws_heads']:>8} "
                      f"{r['nngp_error']:>8.4f} {r['nngp_se']:>8.4f} "
                      f"{r['nngp_sigmas']:>6.2f} {r['nngp_max_z']:>7.2f}"
                      + (f" {elapsed:>6.1f}s" if r is rows[-1] else ""))
                points.append((heads, r["draws"], r["nngp_error"], r["nngp_se"],
                               r["nngp_sigmas"]))
        h, d, err, se, sig = (np.array(v, dtype=float) for v in zip(*points))
        last = d == draws
        print(f"slope against log(draws x heads), all rows: error "
              f"{loglog_slope(h * d, err):.3f}, SE {loglog_slope(h * d, se):.3f}; over the "
              f"heads at {draws} draws: error {loglog_slope(h[last], err[last]):.3f}, SE "
              f"{loglog_slope(h[last], se[last]):.3f}; over the draws: SE " +
              ", ".join(f"{loglog_slope(d[h == k], se[h == k]):.3f}" for k in heads_list) +
              f" ({' '.join(f'H={k}' for k in heads_list)}) (target -0.5)")
        if last.sum() > 1:
            # the variance of one network's kernel: a / heads (the logits) + b (finite width)
            var = draws * se[last] ** 2
            (a, b), *_ = np.linalg.lstsq(np.stack([1 / h[last], np.ones(last.sum())], 1),
                                         var, rcond=None)
            top = a / heads_list[-1]
            print(f"one network's variance (relative, squared) = a / heads + b: a = {a:.4g} "
                  f"(the heads' logits), b = {b:.4g} (the finite width); the heads' part "
                  f"is {a / (a + b):.0%} at 1 head, {top / (top + b):.0%} at {heads_list[-1]}")
        print(f"largest error / SE at {draws} draws: {sig[last].max():.2f} (target <= 3)")


def speed(repeats, tols, logit_var):
    x = inputs()
    print(f"\nkernel time: {N} sequences of length {T} ({C} channels), NNGP, symmetric, "
          f"median of {repeats} after a warm-up")
    print(f"{'network':<12} {'tol':>7} {'time':>8}")
    for tol in tols:
        for name, layer in networks(1, tol, logit_var).items():
            net = Network(layer)
            net.kernel(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                net.kernel(x)
                times.append(time.perf_counter() - start)
            print(f"{name:<12} {tol:>7g} {np.median(times):>7.2f}s")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mc", action="store_true")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--draws", type=int, default=64)
    p.add_argument("--heads", default="1,4,16")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--logit-var", type=float, default=1.0)
    p.add_argument("--networks", default="attention,transformer",
                   help="the networks of --mc, separated by commas")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    everything = not (args.mc or args.speed)
    if args.mc or everything:
        monte_carlo(args.width, args.draws, [int(h) for h in args.heads.split(",")], args.tol,
                    args.logit_var, args.networks.split(","))
    if args.speed or everything:
        speed(args.repeats, (args.tol, 1e-2), args.logit_var)


if __name__ == "__main__":
    main()
