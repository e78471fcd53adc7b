"""Where the fused engine's time goes on the convolutional kernels (issue 22): ns per
position-layer of conv + relu + NTK, split between the box sums, the activations and the
rest, beside the machine's bound for the same work.

The two cases of bench_conv.py's speed part: a depth-8 3x3 relu CNN (NTK parameterisation,
weight_var 2, bias_var 0.1), NNGP + NTK, standardised MNIST,

* Flatten on 28x28 images: the spatially diagonal map (P = 784 entries per pair);
* GlobalAvgPool on the 16x16 centre crop: the full map (P^2 = 65536 entries per pair).

A position-layer is one entry of a pair's map through one Conv + Activation layer (both
kernels): time / (pairs x entries x 8).  The engine runs one tile of the lower triangle
(n (n + 1) / 2 pairs) on ONE thread; time is CPU time (time.process_time, this machine is
shared), the minimum of --repeat calls after a warm-up.  The split comes from the same
program with ops replaced by their affine step alone: without the activations (box sums
and the rest), without the convolutions' box sums (activations and the rest), without both
(input, affine steps, readout).  The compilation (compile_network: the per-input vectors
by the diagonal recursion, the program) is timed apart, on the same thread.

The bound: per position-layer the work that no implementation of this recursion avoids,
on this core, measured here on the same buffers:
* memory: a 3x3 box sum of K and Theta reads each map once and writes it once per pass of
  the separable sum, and the activation reads K, Theta and writes both: the time of a
  streaming pass over the block's maps (measured: a Numba triad on a buffer of the
  register's size), times the passes;
* arithmetic: one square root (the slice coordinate w = sqrt(1 - |rho|)) per entry,
  measured as a vectorised loop, plus the adds and multiplies at 2 FMA pipes of 4
  doubles and the look-up's 8 loads at 3 a cycle (2.6 GHz).
The larger of the two is the bound (they overlap).

    NUMBA_NUM_THREADS=1 python bench/bench_engine_profile.py [--n-flat 100] [--n-gap 16]
        [--repeat 3] [--skip-split]
"""

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from nngp_lut._core import engine as eng  # noqa: E402
from nngp_lut.kernel import Network  # noqa: E402
from nngp_lut.kernel.arch import parse_arch  # noqa: E402
from nngp_lut.kernel.compiler import compile_network, engine_inputs, run  # noqa: E402
from bench.bench_conv import mnist_images, speed_cnn  # noqa: E402

DEPTH = 8  # the depth of bench_conv's speed CNNs (speed_cnn's default)


def program(readout, x):
    net = Network(parse_arch(speed_cnn(readout)))
    slot = {net.depth: (0, 1)}
    return compile_network(net.exact_layer, x, None, slot, True, net.full_spatial, False)


def without(prog, codes):
    """A copy of the program whose ops of ``codes`` keep only their affine step."""
    ops = prog.ops.copy()
    for o in range(ops.shape[0]):
        if ops[o, eng.OPF_CODE] in codes:
            ops[o, eng.OPF_CODE] = eng.OP_AFFINE
            ops[o, eng.OPF_H], ops[o, eng.OPF_W] = ops[o, eng.OPF_HO], ops[o, eng.OPF_WO]
    return type(prog)(**{**prog.__dict__, "ops": ops})


def cpu_time(prog, x, repeat):
    """Least CPU seconds of ``repeat`` calls (after one warm-up) of the whole lower
    triangle on one tile."""
    n = x.shape[0]
    inputs = engine_inputs(prog, x, x)
    out = np.zeros((2, n, n))
    run(prog, out, 0, 0, n, inputs, 0)
    best = math.inf
    for _ in range(repeat):
        t0 = time.process_time()
        run(prog, out, 0, 0, n, inputs, 0)
        best = min(best, time.process_time() - t0)
    return best, out


@njit(cache=True)
def _triad(a, b, c, reps):
    for _ in range(reps):
        for i in range(a.size):
            a[i] = b[i] + 0.5 * c[i]


@njit(cache=True)
def _sqrts(a, b, reps):
    for _ in range(reps):
        for i in range(a.size):
            b[i] = math.sqrt(1.0 - abs(a[i]))


def rate(fn, entries, *args):
    """ns per entry of fn(*args, reps), the least of 5."""
    fn(*args, 1)
    reps = max(1, int(2e7 // entries))
    best = math.inf
    for _ in range(5):
        t0 = time.process_time()
        fn(*args, reps)
        best = min(best, time.process_time() - t0)
    return best / (reps * entries) * 1e9


#: Clock (GHz, nominal: BogoMIPS / 2) and issue rates of this core (AMD Zen 4): 2 FMA
#: pipes of 4 doubles (AVX-512 runs as two halves), 3 scalar loads a cycle.
GHZ, FLOPS_PER_CYCLE, LOADS_PER_CYCLE = 2.6, 8.0, 3.0
#: Per position-layer (one entry of K and Theta through Conv + Activation): adds and
#: multiplies (box sums 2 x 2 x 2, conv affine 5, correlation 2, coordinate 4, two Horner
#: cubics 12, scaling and affine 8), and the look-up's scalar loads (the 8 coefficients of
#: a cell).
FLOPS, LOADS = 8 + 5 + 2 + 4 + 12 + 8, 8


def bound(entries_per_register):
    """ns per position-layer that the machine needs at least (see the module doc)."""
    m = entries_per_register
    a, b, c = np.ones(m), np.ones(m), np.ones(m)
    triad = rate(_triad, m, a, b, c)  # 24 bytes per entry (2 reads, 1 write)
    sq = rate(_sqrts, m, np.linspace(-0.9, 0.9, m), b)
    # Passes of 2 maps (K, Theta), each read and written: the separable box sum's 2 passes
    # and the activation's one.
    passes = 3 * 2
    memory = passes * triad * 16 / 24
    arith = sq + (FLOPS / FLOPS_PER_CYCLE + LOADS / LOADS_PER_CYCLE) / GHZ
    return memory, arith, triad, sq


def profile(name, readout, x, repeat, split):
    prog = program(readout, x)
    n = x.shape[0]
    pairs = n * (n + 1) // 2
    p = math.prod(x.shape[1:3])
    entries = p * p if prog.full else p
    per = pairs * entries * DEPTH
    total, _ = cpu_time(prog, x, repeat)
    compile_s = math.inf
    for _ in range(repeat):
        t0 = time.process_time()
        program(readout, x)
        compile_s = min(compile_s, time.process_time() - t0)
    print(f"\n{name}: n = {n}, {pairs} pairs x {entries} entries x {DEPTH} layers, J = "
          f"{prog.block} pairs a block, one thread, CPU time, least of {repeat}")
    print(f"  total          {total:8.3f} s  {total / per * 1e9:6.2f} ns per position-layer")
    print(f"  (compile_network: {compile_s:.3f} s, the per-input vectors and the program, "
          "outside the engine)")
    if split:
        t_noact, _ = cpu_time(without(prog, (eng.OP_ACTIVATION,)), x, repeat)
        t_noconv, _ = cpu_time(without(prog, (eng.OP_CONV,)), x, repeat)
        t_rest, _ = cpu_time(without(prog, (eng.OP_ACTIVATION, eng.OP_CONV)), x, repeat)
        for label, t in (("box sums", total - t_noconv), ("activation", total - t_noact),
                         ("rest", t_rest)):
            print(f"  {label:<14} {t:8.3f} s  {t / per * 1e9:6.2f} ns per position-layer")
    reg = entries * prog.block  # one register of the block (K or Theta)
    memory, arith, triad, sq = bound(reg)
    print(f"  bound: memory {memory:.2f} ns (3 passes reading and writing K and Theta; a "
          f"triad {triad:.2f} ns/entry on {reg * 8 / 1e3:.0f} KB), arithmetic {arith:.2f} ns "
          f"(one sqrt {sq:.2f} ns + {FLOPS} flops + {LOADS} look-up loads at {GHZ} GHz): "
          f"{max(memory, arith):.2f} ns per position-layer")
    return total / per * 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-flat", type=int, default=100)
    ap.add_argument("--n-gap", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-split", action="store_true")
    args = ap.parse_args()
    print(f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS')}")
    profile("Flatten, 28x28 (diagonal maps)", "Flatten()", mnist_images(args.n_flat, 28),
            args.repeat, not args.skip_split)
    profile("GlobalAvgPool, 16x16 (full maps)", "GlobalAvgPool()",
            mnist_images(args.n_gap, 16), args.repeat, not args.skip_split)


if __name__ == "__main__":
    main()
