"""Sequence kernels and BatchNorm (issue 23): SimpleRNN, SelfAttention, GRU, LSTM and
BatchNorm: closed forms, speed, row-sequential MNIST, Monte Carlo.

1. --closed-form: the SimpleRNN kernel (NNGP and NTK, LastStep and mean-over-time
   readouts, sequences of unequal length) against a direct scalar implementation of the
   recursion with the closed-form V-transforms of relu (arc-cosine) and erf (arcsine),
   which shares nothing with the library but the formulas of the layer's docstring.
   Prints the largest error relative to the largest entry.  Target: 1e-9.
2. --speed: NNGP + NTK of N row-sequential MNIST sequences (28 steps of 28 pixels, depth
   1, LastStep readout), symmetric, median of --repeats calls after a warm-up, for relu
   (homogeneous: 1-D table slices) and erf (its 3-D unequal-variance table).  Target:
   N = 1000 relu in <= 15 s.  Then the same for a transformer block at 1/n scaling
   (SelfAttention in a residual branch, LayerNorm, a relu MLP branch, LayerNorm, mean over
   the positions), reported.
3. --accuracy: row-sequential MNIST on the paper's split: a SimpleRNN GP fitted on the
   balanced 1k subset, scored on --n-test test images, beside the fully connected relu
   NNGP of Table 1 (0.9279 at 1k).  A small search on --n-val validation images picks
   (weight_var, input_var) and the readout.
4. --mc: the Monte Carlo convergence of finite networks (the finite twins in
   nngp_lut.finite_network) to the kernel on 8 random sequences of length 8, widths 64 ..
   --mc-max-width: relative Frobenius error and its fitted log-log slope, for a simple RNN,
   two stacked RNNs and the transformer block.  Target: slope in [-0.6, -0.4].
5. --gated: the same convergence for a GRU and an LSTM (NNGP only; their kernels to 2e-4),
   then the time of the GRU kernel of --gated-n row-sequential MNIST sequences at
   --gated-tol (reported, with any ToleranceWarning); --gated-speed runs that time alone.
6. --batchnorm: the relu BatchNorm kernel's 1-D integral against randomised QMC (target
   1e-6), and the Monte Carlo convergence of a BatchNorm MLP on a batch of 8 (target slope
   in [-0.6, -0.4]).
7. --gated-accuracy: row-sequential MNIST at --gated-train / --gated-test images: GRU and
   LSTM GPs beside the SimpleRNN and the fully connected NNGP on the same split.
8. --transformer-accuracy: the 1/n transformer block (with a learned positional
   embedding) on the split of 3., at 1k training images and --n-test test images.

    python bench/bench_sequences.py [--closed-form] [--speed] [--accuracy] [--mc] [--gated]
                                    [--n 1000] [--gated-n 200] [--gated-tol 1e-2]
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
from nngp_lut.kernel import (Activation, Dense, FanInSum, FanOut, GlobalAvgPool,  # noqa: E402
                             Identity, LastStep, LayerNorm, Network, PositionalEmbedding,
                             SelfAttention, SimpleRNN, parallel, serial)
from bench.bench_cnn_mnist import blas_info  # noqa: E402
from bench.bench_conv import print_convergence  # noqa: E402
from tests.naive import rnn_direct  # noqa: E402

MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"
FC_1K = paper.TABLE1_MNIST[1000, "relu"][3]


# --- 1. closed forms ----------------------------------------------------------------------------
def closed_form():
    rng = np.random.default_rng(0)
    lengths = [6, 3, 8, 5, 7]
    seqs = [rng.standard_normal((n, 3)) * rng.uniform(0.5, 1.5) for n in lengths]
    padded = np.full((len(seqs), max(lengths), 3), np.nan)
    for i, s in enumerate(seqs):
        padded[i, :len(s)] = s
    print(f"{'phi':<6}{'readout':<15}{'NNGP err':>12}{'NTK err':>12}")
    worst = 0.0
    for phi in ("relu", "erf"):
        for readout in (LastStep(), GlobalAvgPool()):
            w, u, bias = 1.4, 1.1, 0.2
            net = Network(serial(SimpleRNN(phi, w, u, bias), readout))
            k, t = net.kernel(padded, get=("nngp", "ntk"))
            ref_k, ref_t = np.zeros_like(k), np.zeros_like(t)
            for i, a in enumerate(seqs):
                for j, b in enumerate(seqs):
                    kh, th = rnn_direct(phi, a, b, w, u, bias)
                    pick = (kh[-1, -1], th[-1, -1]) if isinstance(readout, LastStep) else \
                        (kh.mean(), th.mean())
                    ref_k[i, j], ref_t[i, j] = pick
            ek = np.abs(k - ref_k).max() / np.abs(ref_k).max()
            et = np.abs(t - ref_t).max() / np.abs(ref_t).max()
            worst = max(worst, ek, et)
            print(f"{phi:<6}{type(readout).__name__:<15}{ek:>12.2e}{et:>12.2e}")
    print(f"largest relative error {worst:.2e} (target 1e-9)")


# --- 2. speed -----------------------------------------------------------------------------------
def sequences(x):
    """MNIST rows (n, 784) as 28 steps of 28 pixels, standardised per image."""
    return standardize_rows(x.astype(np.float64)).reshape(-1, 28, 28)


def transformer_block():
    """A transformer block at 1/n scaling, read out by the mean over positions."""
    return serial(Dense(1.0, 0.1), FanOut(2),
                  parallel(Identity(), SelfAttention(1.0, 0.1, logit_var=1.0)), FanInSum(),
                  LayerNorm(), FanOut(2),
                  parallel(Identity(), serial(Dense(2.0, 0.1), Activation("relu"),
                                              Dense(1.0, 0.1))),
                  FanInSum(), LayerNorm(), GlobalAvgPool(), Dense(1.0, 0.0))


def speed(n, repeats):
    split = mnist_paper_split(MNIST)
    x = sequences(split.x_train[:n])
    for phi in ("relu", "erf", "transformer"):
        net = Network(transformer_block() if phi == "transformer" else
                      serial(SimpleRNN(phi, 1.5, 1.0, 0.1), LastStep(), Dense(1.0, 0.0)))
        net.kernel(x[:16], get=("nngp", "ntk"))  # compile and build the table
        times, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            res = net.kernel(x, get=("nngp", "ntk"))
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            del res
        print(json.dumps(dict(network=phi, n=n, steps=28, runs=repeats,
                              median_s=round(float(np.median(times)), 3),
                              times_s=[round(t, 3) for t in times],
                              median_cpu_s=round(float(np.median(cpu)), 3),
                              load_average=round(os.getloadavg()[0], 2))), flush=True)


# --- 3. row-sequential MNIST ------------------------------------------------------------------
def rnn(weight_var, input_var, readout, phi="relu", bias_var=0.01):
    tail = LastStep() if readout == "last" else GlobalAvgPool()
    return Network(serial(SimpleRNN(phi, weight_var, input_var, bias_var), tail,
                          Dense(1.0, 0.0)))


def accuracy(n_val, n_test, grid):
    split = mnist_paper_split(MNIST)
    idx = balanced_subset(split.y_train, 1000)
    x1k, y1k = sequences(split.x_train[idx]), split.y_train[idx]
    x_val, y_val = sequences(split.x_val[:n_val]), split.y_val[:n_val]
    search = []
    for w, u, readout in grid:
        t0 = time.perf_counter()
        res = evaluate(x1k, y1k, x_val, y_val, network=rnn(w, u, readout), memory="auto")
        search.append(dict(weight_var=w, input_var=u, readout=readout,
                           val_accuracy=res.accuracy, seconds=time.perf_counter() - t0))
        print(json.dumps(search[-1]), flush=True)
    best = max(search, key=lambda r: r["val_accuracy"])
    net = rnn(best["weight_var"], best["input_var"], best["readout"])
    x_test, y_test = sequences(split.x_test[:n_test]), split.y_test[:n_test]
    t0 = time.perf_counter()
    res = evaluate(x1k, y1k, x_test, y_test, network=net, memory="auto")
    print(json.dumps(dict(arch=repr(net.layer), n_train=1000, n_test=n_test,
                          test_accuracy=res.accuracy, fc_nngp_1k=FC_1K,
                          seconds=round(time.perf_counter() - t0, 1))), flush=True)


def transformer_accuracy(n_test):
    """The 1/n transformer block on row-sequential MNIST at 1k (the split of accuracy()),
    with a learned positional embedding (without one the block is blind to the rows'
    order), tied attention; one setting, no search."""
    split = mnist_paper_split(MNIST)
    idx = balanced_subset(split.y_train, 1000)
    x1k, y1k = sequences(split.x_train[idx]), split.y_train[idx]
    x_test, y_test = sequences(split.x_test[:n_test]), split.y_test[:n_test]
    net = Network(serial(PositionalEmbedding(1.0), transformer_block()))
    t0 = time.perf_counter()
    res = evaluate(x1k, y1k, x_test, y_test, network=net, memory="auto")
    print(json.dumps(dict(arch=repr(net.layer), n_train=1000, n_test=n_test,
                          test_accuracy=res.accuracy, fc_nngp_1k=FC_1K,
                          seconds=round(time.perf_counter() - t0, 1))), flush=True)


# --- 4. Monte Carlo ----------------------------------------------------------------------------
def monte_carlo(max_width, draws):
    from nngp_lut import montecarlo

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 4))
    widths = [64 * 4**i for i in range(10) if 64 * 4**i <= max_width]
    for text, layer in (
            ("SimpleRNN relu, LastStep",
             serial(SimpleRNN("relu", 1.5, 1.0, 0.1), LastStep(), Dense(1.0, 0.0))),
            ("SimpleRNN erf x2, mean over time",
             serial(SimpleRNN("erf", 1.5, 1.0, 0.1), SimpleRNN("erf", 1.2, 1.0, 0.1),
                    GlobalAvgPool(), Dense(1.0, 0.0))),
            ("transformer block, 1/n attention", transformer_block())):
        print(text)
        rows, slopes = montecarlo.convergence(layer, x, widths, draws, seed=0)
        print_convergence(rows, slopes, f"{draws} draws per width")


# --- 5. gated cells -----------------------------------------------------------------------------
def gated_mc(max_width, draws):
    """GRU and LSTM: the Monte Carlo convergence of finite networks to the kernel (computed
    to 2e-4)."""
    from nngp_lut import montecarlo
    from nngp_lut.kernel import GRU, LSTM

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 4))
    widths = [64 * 4**i for i in range(10) if 64 * 4**i <= max_width]
    fine = dict(tol=2e-4, max_points=2 ** 16)
    for text, layer in (
            ("GRU tanh, LastStep", serial(GRU("tanh", 1.5, 1.0, 0.1, **fine), LastStep(),
                                          Dense(1.0, 0.0))),
            ("LSTM tanh, mean over time", serial(LSTM("tanh", 1.5, 1.0, 0.1, **fine),
                                                 GlobalAvgPool(), Dense(1.0, 0.0)))):
        print(text)
        t0 = time.perf_counter()
        rows, slopes = montecarlo.convergence(layer, x, widths, draws, seed=0, get="nngp")
        print_convergence(rows, slopes, f"{draws} draws per width, "
                          f"{time.perf_counter() - t0:.0f} s")


def gated_speed(n, tol):
    """The GRU kernel of n row-sequential MNIST sequences at ``tol``: one run after a
    warm-up (it takes minutes), with any ToleranceWarning."""
    import warnings

    from nngp_lut.kernel import GRU

    split = mnist_paper_split(MNIST)
    xs = sequences(split.x_train[:n])
    net = Network(serial(GRU("tanh", 2.0, 1.0, 0.1, tol=tol), LastStep(), Dense(1.0, 0.0)))
    net.kernel(xs[:2])  # compile
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0, c0 = time.perf_counter(), time.process_time()
        net.kernel(xs)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps(dict(network="GRU tanh, LastStep", n=n, steps=28, tol=tol,
                          max_points=net.layer.children[0].max_points, runs=1,
                          seconds=round(seconds, 1), cpu_s=round(cpu, 1),
                          warnings=[str(w.message) for w in caught],
                          load_average=round(os.getloadavg()[0], 2))), flush=True)


def batchnorm(max_width, draws):
    """BatchNorm: the relu kernel's 1-D integral against randomised QMC to 1e-6 (two
    independent methods), and the Monte Carlo convergence of a BatchNorm MLP on a batch of 8
    random inputs."""
    from nngp_lut import montecarlo
    from nngp_lut.activations import get_activation
    from nngp_lut.kernel import BatchNorm
    from nngp_lut.kernel.batchnorm import homogeneous_kernel, sampled_kernel

    from tests.test_batchnorm import angular_relu_kernel

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 6))
    three = x[:3] @ x[:3].T / 6 + 0.3
    print(json.dumps(dict(check="BatchNorm relu, batch of 3: 1-D integral vs the exact "
                                "angular integral", target=1e-6, max_difference=float(np.abs(
                                    homogeneous_kernel(three, "relu")
                                    - angular_relu_kernel(three)).max()))), flush=True)
    cov = x @ x.T / 6 + 0.3
    t0 = time.perf_counter()
    formula = homogeneous_kernel(cov, "relu")
    t_formula = time.perf_counter() - t0
    t0 = time.perf_counter()
    est = sampled_kernel(cov, get_activation("relu"), tol=1e-6)
    print(json.dumps(dict(check="BatchNorm relu, batch of 8: 1-D integral vs RQMC",
                          max_difference=float(np.abs(formula - est.value).max()),
                          rqmc_error=float(est.error.max()), target=1e-6,
                          formula_s=round(t_formula, 3),
                          rqmc_s=round(time.perf_counter() - t0, 1))), flush=True)
    widths = [64 * 4**i for i in range(10) if 64 * 4**i <= max_width]
    layer = serial(Dense(1.0, 0.1), BatchNorm("relu"), Dense(1.5, 0.1),
                   BatchNorm("tanh", tol=2e-5), Dense(1.0, 0.0))
    print("BatchNorm MLP (relu, then tanh), batch of 8")
    t0 = time.perf_counter()
    rows, slopes = montecarlo.convergence(layer, x, widths, draws, seed=0, get="nngp")
    print_convergence(rows, slopes, f"{draws} draws per width, "
                      f"{time.perf_counter() - t0:.0f} s")


def gated_accuracy(n_train, n_test, tol, cells=("GRU", "LSTM")):
    """Row-sequential MNIST at a small size (the gated cells cost ~0.03 s per pair): a GRU
    and an LSTM GP beside the SimpleRNN and the fully connected relu NNGP on the same
    split (the first n_train balanced training images, the first n_test test images)."""
    from nngp_lut.kernel import GRU, LSTM

    split = mnist_paper_split(MNIST)
    idx = balanced_subset(split.y_train, n_train)
    x_train, y_train = sequences(split.x_train[idx]), split.y_train[idx]
    x_test, y_test = sequences(split.x_test[:n_test]), split.y_test[:n_test]
    fc = serial(Dense(1.45, 0.28), Activation("relu"), Dense(1.45, 0.28))
    for name, layer, inputs in (
            ("fully connected relu, depth 1", fc, (x_train.reshape(n_train, -1),
                                                    x_test.reshape(n_test, -1))),
            ("SimpleRNN relu, mean", serial(SimpleRNN("relu", 2.0, 1.0, 0.01),
                                            GlobalAvgPool(), Dense(1.0, 0.0)), None),
            ("GRU tanh, mean", serial(GRU("tanh", 2.0, 1.0, 0.01, tol=tol), GlobalAvgPool(),
                                      Dense(1.0, 0.0)), None),
            ("LSTM tanh, mean", serial(LSTM("tanh", 2.0, 1.0, 0.01, tol=tol),
                                       GlobalAvgPool(), Dense(1.0, 0.0)), None)):
        if name.split()[0] in ("GRU", "LSTM") and name.split()[0] not in cells:
            continue
        a, b = inputs or (x_train, x_test)
        t0 = time.perf_counter()
        res = evaluate(a, y_train, b, y_test, network=Network(layer), memory="auto")
        print(json.dumps(dict(network=name, n_train=n_train, n_test=n_test, tol=tol,
                              test_accuracy=res.accuracy,
                              seconds=round(time.perf_counter() - t0, 1))), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--closed-form", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--transformer-accuracy", action="store_true")
    ap.add_argument("--mc", action="store_true")
    ap.add_argument("--gated", action="store_true")
    ap.add_argument("--gated-speed", action="store_true", help="only the speed part of --gated")
    ap.add_argument("--gated-n", type=int, default=200, help="sequences of the GRU kernel")
    ap.add_argument("--gated-tol", type=float, default=1e-2)
    ap.add_argument("--gated-accuracy", action="store_true")
    ap.add_argument("--batchnorm", action="store_true")
    ap.add_argument("--gated-train", type=int, default=100)
    ap.add_argument("--gated-test", type=int, default=200)
    ap.add_argument("--gated-cells", default="GRU,LSTM", help="cells of --gated-accuracy")
    ap.add_argument("--n", type=int, default=1000, help="sequences of the speed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-val", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--mc-max-width", type=int, default=4096)
    ap.add_argument("--mc-draws", type=int, default=8)
    args = ap.parse_args()
    run_all = not (args.closed_form or args.speed or args.accuracy or args.mc or args.gated
                   or args.gated_speed or args.gated_accuracy or args.batchnorm
                   or args.transformer_accuracy)
    print(f"BLAS: {blas_info()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    if args.closed_form or run_all:
        closed_form()
    if args.speed or run_all:
        speed(args.n, args.repeats)
    if args.accuracy or run_all:
        grid = [(w, 1.0, r) for r in ("last", "mean") for w in (1.0, 1.5, 2.0)]
        accuracy(args.n_val, args.n_test, grid)
    if args.mc or run_all:
        monte_carlo(args.mc_max_width, args.mc_draws)
    if args.gated or run_all:
        gated_mc(args.mc_max_width, args.mc_draws)
    if args.gated or args.gated_speed or run_all:
        gated_speed(args.gated_n, args.gated_tol)
    if args.batchnorm or run_all:
        batchnorm(args.mc_max_width, args.mc_draws)
    if args.transformer_accuracy or run_all:
        transformer_accuracy(args.n_test)
    if args.gated_accuracy or run_all:
        gated_accuracy(args.gated_train, args.gated_test, args.gated_tol,
                       args.gated_cells.split(","))


if __name__ == "__main__":
    main()
