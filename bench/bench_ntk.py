"""The layer algebra and the NTK (issue #12): accuracy and speed, peers in the same run.

Accuracy, errors as max |Theta - Theta_exact| / sqrt(Theta(x,x) Theta(x',x')):
  * relu and erf NTK (and NNGP) against their closed forms, depths 1..20, on standardised
    MNIST images and on raw ones (unequal variances);
  * tanh and gelu NTK against the recursion with direct quadrature of F and Fdot (the
    table builder's integrator, itself tested against a slow scipy integrator in tests/);
  * against neural-tangents 0.6.5 (bench environment) on the same inputs: relu, a relu
    residual network with LayerNorm, and erf, NNGP and NTK (all entries, and off the
    diagonal, where neural-tangents' arccos of a rounded correlation 1 - 1e-16 costs it
    ~1e-8 on the relu NTK).
Speed (depth 3, d = 784, standardised MNIST, float64, medians of --repeat calls after a
warm-up, each result freed before the next call):
  * the plain NNGP through the executor against the fused path of --baseline (a checkout
    of the commit before the layer algebra, run in a subprocess);
  * the relu NNGP against the lower-triangle input Gram alone (its BLAS part, into a
    fresh result as the kernel makes it), and NNGP + NTK against NNGP alone; a 3-block
    residual network with LayerNorm against the plain network with the same 3
    activations;
  * the relu NTK (n = --n-relu) against neural-tangents' closed-form NTK, and the tanh NTK
    (n = --n-tanh) against its ElementwiseNumerical (Gauss-Hermite, degree 25).

    python bench/bench_ntk.py [--n-relu 10000] [--n-tanh 2000] [--repeat 5]
        [--baseline DIR] [--skip-accuracy] [--skip-speed] [--no-peer]

Run the speed part under OpenBLAS's own kernel choice too:
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_ntk.py``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import nngp_lut  # noqa: E402

nngp_lut.set_openblas_idle_timeout()  # as the nngp-lut command does, before numpy loads
import numpy as np  # noqa: E402
from nngp_lut.kernel import (Activation, Dense, FanInSum, FanOut, Identity,  # noqa: E402
                             LayerNorm, Network, deep_network, parallel, repeat, serial)
from nngp_lut._core.config import KERNEL_TILE_ROWS  # noqa: E402
from nngp_lut.kernel.network import _gram_into  # noqa: E402
from nngp_lut.tables import Integrator  # noqa: E402
from bench.bench_blas import openblas_core  # noqa: E402
from tests.naive import exact_kernels  # noqa: E402

MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"
PEER_DEFAULT = Path.home() / ".cache/nngp-lut-bench/nt-venv/bin/python"
W, B = 1.6, 0.2


def standardize(x):
    return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)


def residual(phi="relu", blocks=3, w=W, b=B):
    """Dense, then ``blocks`` x (x + Dense(phi(x)), LayerNorm), then the readout Dense."""
    block = serial(FanOut(2), parallel(serial(Activation(phi), Dense(w, b)), Identity()),
                   FanInSum(), LayerNorm())
    return Network(serial(Dense(w, b), repeat(block, blocks), Dense(w, b)))


def rel_error(k, exact, diag=True):
    d = np.diag(exact)
    err = np.abs(k - exact) / np.sqrt(np.outer(d, d))
    if not diag:
        np.fill_diagonal(err, 0.0)
    return float(err.max())


def quadrature_kernels(phi, x, depth, w, b):
    """NNGP and NTK by the recursion with F and Fdot from direct quadrature per pair."""
    integ = Integrator(phi, 1e4)
    d = x.shape[1]
    k = b + w * x @ x.T / d
    q = b + w * np.sum(x * x, 1) / d
    t = k.copy()
    iu = np.triu_indices(len(x))
    for _ in range(depth):
        rho = np.clip(k / np.sqrt(np.outer(q, q)), -1, 1)
        np.fill_diagonal(rho, 1.0)
        f, fd = integ.bivariate(q[iu[0]], q[iu[1]], np.arccos(rho[iu]))
        F, Fd = np.empty_like(k), np.empty_like(k)
        F[iu], Fd[iu] = f, fd
        F[(iu[1], iu[0])], Fd[(iu[1], iu[0])] = f, fd
        k, t = b + w * F, b + w * F + w * Fd * t
        q = np.diag(k).copy()
    return k, t


def accuracy(images, peer_py):
    std, raw = standardize(images[:60]), images[:60] / 255.0
    print("accuracy: max |Theta - Theta_exact| / sqrt(Theta(x,x) Theta(x',x')), 60 MNIST "
          f"images, weight_var {W}, bias_var {B}")
    print(f"  {'case':<34}{'depth 1':>10}{'depth 3':>10}{'depth 10':>10}{'depth 20':>10}")
    for phi in ("relu", "erf", "tanh", "gelu"):
        for name, x in (("standardised", std), ("raw", raw)):
            errs = {"ntk": [], "nngp": []}
            for depth in (1, 3, 10, 20):
                k, t = deep_network(phi, depth, W, B).kernel(x, get=("nngp", "ntk"))
                if phi in ("relu", "erf"):
                    ek, et = exact_kernels(phi, x, None, depth, W, B)
                else:
                    ek, et = quadrature_kernels(phi, x, depth, W, B)
                errs["ntk"].append(rel_error(t, et))
                errs["nngp"].append(rel_error(k, ek))
            ref = "closed form" if phi in ("relu", "erf") else "quadrature"
            for kind in ("ntk", "nngp"):
                print(f"  {f'{phi} {kind} {name} ({ref})':<34}"
                      + "".join(f"{e:>10.1e}" for e in errs[kind]), flush=True)
    if peer_py is None:
        return
    print("against neural-tangents 0.6.5 (60 standardised / raw MNIST images, depth 3): "
          "max relative error, all entries / off-diagonal")
    for arch, net in (("relu", deep_network("relu", 3, W, B)),
                      ("residual", residual()), ("erf", deep_network("erf", 3, W, B))):
        for name, x in (("standardised", std), ("raw", raw)):
            k, t = net.kernel(x, get=("nngp", "ntk"))
            _, peer = run_peer(peer_py, arch, x, "nngp,ntk", 0)
            line = (f"  {arch + ' ' + name:<24} nngp {rel_error(k, peer['nngp']):.1e} / "
                    f"{rel_error(k, peer['nngp'], False):.1e}   ntk "
                    f"{rel_error(t, peer['ntk']):.1e} / {rel_error(t, peer['ntk'], False):.1e}")
            if arch == "relu":  # whose diagonal is right: both against the closed form
                _, et = exact_kernels("relu", x, None, 3, W, B)
                line += (f"   (ntk vs closed form: neural-tangents {rel_error(peer['ntk'], et):.1e},"
                         f" nngp-lut {rel_error(t, et):.1e})")
            print(line, flush=True)


def run_peer(py, arch, x, get, repeat, batch_size=0):
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", x)
        cmd = [str(py), str(ROOT / "bench/nt_peer_arch.py"), "--arch", arch, "--x",
               f"{tmp}/x.npy", "--depth", "3", "--blocks", "3", "--weight-var", str(W),
               "--bias-var", str(B), "--get", get, "--repeat", str(repeat), "--out",
               f"{tmp}/k.npz", "--batch-size", str(batch_size)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out = json.loads(res.stdout.strip().splitlines()[-1])
        with np.load(f"{tmp}/k.npz") as z:
            return out["time_s"], {key: z[key] for key in z.files}


def timed(fn, repeat):
    """Median seconds of ``repeat`` calls after one warm-up; each result freed first."""
    out = fn()
    del out
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        del out
    return statistics.median(times)


BASELINE_SCRIPT = """
import sys, time, statistics, numpy as np
sys.path.insert(0, sys.argv[1])
import nngp_lut
from nngp_lut.kernel import deep_network
x = np.load(sys.argv[2]); net = deep_network(sys.argv[3], 3, {w}, {b})
out = net.kernel(x); del out
times = []
for _ in range(int(sys.argv[4])):
    t0 = time.perf_counter(); out = net.kernel(x); times.append(time.perf_counter() - t0)
    del out
print(statistics.median(times))
"""


def baseline_seconds(src, phi, x, repeat):
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", x)
        script = BASELINE_SCRIPT.format(w=W, b=B)
        env = dict(os.environ, OPENBLAS_THREAD_TIMEOUT=os.environ.get(
            "OPENBLAS_THREAD_TIMEOUT", "20"))  # as this process (its numpy loads first)
        res = subprocess.run([sys.executable, "-c", script, str(src), f"{tmp}/x.npy", phi,
                              str(repeat)], capture_output=True, text=True, check=True,
                             env=env)
        return float(res.stdout.strip().splitlines()[-1])


def lower_gram(x):
    """The input Gram X X^T's lower triangle, panel by panel into a fresh (n, n) array: the
    BLAS part of a symmetric kernel of vectors (Network.kernel's first phase)."""
    n = x.shape[0]
    out = np.empty((n, n))
    for r0 in range(0, n, KERNEL_TILE_ROWS):
        r1 = min(n, r0 + KERNEL_TILE_ROWS)
        _gram_into(out[r0:r1, :r1], x, x, r0, r1, r1, True)
    return out


def speed(images, args, peer_py):
    print(f"speed: d = 784, depth 3, weight_var {W}, bias_var {B}, standardised MNIST, median "
          f"of {args.repeat}; OpenBLAS kernels {openblas_core()} (OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE')})")
    for phi, n in (("relu", args.n_relu), ("tanh", args.n_tanh)):
        x = standardize(images[:n])
        plain = deep_network(phi, 3, W, B)
        t_nngp = timed(lambda: plain.kernel(x), args.repeat)
        t_both = timed(lambda: plain.kernel(x, get=("nngp", "ntk")), args.repeat)
        t_ntk = timed(lambda: plain.kernel(x, get="ntk"), args.repeat)
        line = (f"  {phi} n={n}: NNGP {t_nngp:.2f} s, NTK {t_ntk:.2f} s, NNGP+NTK "
                f"{t_both:.2f} s ({t_both / t_nngp:.2f}x NNGP)")
        if args.baseline:
            t_old = baseline_seconds(args.baseline, phi, x, args.repeat)
            line += f"; baseline fused NNGP {t_old:.2f} s (executor {t_nngp / t_old:.2f}x)"
        print(line, flush=True)
        if phi == "relu":
            t_gram = timed(lambda: lower_gram(x), args.repeat)
            print(f"  relu n={n}: the lower-triangle input Gram alone (as the kernel makes it, "
                  f"into a fresh result) {t_gram:.2f} s; NNGP / Gram {t_nngp / t_gram:.2f} "
                  f"(target <= 1.3), NNGP+NTK / NNGP {t_both / t_nngp:.2f} (target <= 1.3)",
                  flush=True)
            t_res = timed(lambda: residual().kernel(x), args.repeat)
            t_res2 = timed(lambda: residual().kernel(x, get=("nngp", "ntk")), args.repeat)
            print(f"  relu residual x3 + LayerNorm n={n}: NNGP {t_res:.2f} s "
                  f"({t_res / t_nngp:.2f}x plain), NNGP+NTK {t_res2:.2f} s "
                  f"({t_res2 / t_both:.2f}x plain)", flush=True)
        if peer_py is not None:
            # Gauss-Hermite of degree 25 holds 625 nodes per entry: batched (nt.batch) for tanh
            t_peer, k = run_peer(peer_py, phi, x, "ntk", max(1, args.repeat // 2),
                                 batch_size=500 if phi == "tanh" else 0)
            ours = plain.kernel(x, get="ntk")
            d = np.sqrt(np.diag(k["ntk"]))
            diff = float(np.max(np.abs(ours - k["ntk"]) / np.outer(d, d)))
            del ours
            print(f"  {phi} n={n} NTK: neural-tangents {t_peer:.2f} s, nngp-lut {t_ntk:.2f} s,"
                  f" speed-up {t_peer / t_ntk:.1f}x; NTK entries x layers per second "
                  f"{n * n * 3 / t_ntk:.3g} (ours) {n * n * 3 / t_peer:.3g} (peer); max "
                  f"relative difference {diff:.1e}", flush=True)
            if phi == "relu":
                print(f"  relu n={n}: at the Gram's cost alone the speed-up would be "
                      f"{t_peer / t_gram:.1f}x", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-relu", type=int, default=10000)
    ap.add_argument("--n-tanh", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline", help="a checkout of the fused path before the layer "
                    "algebra (git worktree add DIR 6d25297)")
    ap.add_argument("--peer-python", default=str(PEER_DEFAULT))
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    images = np.load(MNIST)["x_train"][10000:].astype(np.float64)
    peer_py = None if args.no_peer or not Path(args.peer_python).exists() else args.peer_python
    if not args.skip_accuracy:
        accuracy(images, peer_py)
    if not args.skip_speed:
        speed(images, args, peer_py)


if __name__ == "__main__":
    main()
