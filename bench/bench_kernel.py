"""Deep-kernel accuracy and speed (issue #3), with neural-tangents measured in the same run.

Accuracy, against independent truth:
  * closed forms (relu, erf) and the direct-quadrature recursion (tanh, softplus; the
    quadrature is tested against a slow scipy integrator in tests/) on standardised MNIST
    images: max |K - K_exact| / max diagonal, depths 1..20;
  * the six MNIST settings of Table 1: max off-diagonal error / spread of the off-diagonal
    entries (relu: closed form; tanh: quadrature);
  * random inputs whose norms span two decades, depths 1..10:
    max |K - K_exact| / sqrt(K(x,x) K(x',x')).
Speed, same inputs in one run (d = 784, depth 3, float64): nngp-lut against neural-tangents'
closed-form relu (n = 10000) and ElementwiseNumerical tanh, degree 25 (n = 2000); entries x
layers per second and the share of time in X1 X2^T.

    python bench/bench_kernel.py [--n-relu 10000] [--n-tanh 2000] [--repeat 5] [--no-peer]

The peer runs in its own environment: PY=$(bash bench/envs/neural_tangents.sh | tail -1),
passed as --peer-python (default: that environment if it exists).
"""

import argparse
import json
import math
import os
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
from nngp_lut._core.config import KERNEL_TILE_ROWS  # noqa: E402
from nngp_lut.kernel import deep_network  # noqa: E402
from nngp_lut.kernel.network import _gram_into  # noqa: E402
from nngp_lut.tables import Integrator  # noqa: E402
from bench.bench_blas import openblas_core  # noqa: E402
from tests.naive import closed_form  # noqa: E402

MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"
PEER_DEFAULT = Path.home() / ".cache/nngp-lut-bench/nt-venv/bin/python"
TABLE1 = {"relu": [(20, 1.45, 0.28), (7, 0.61, 0.07), (1, 0.10, 0.48)],
          "tanh": [(20, 1.96, 0.62), (2, 1.62, 0.28), (1, 1.28, 0.00)]}


def standardize(x):
    return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)


def reference_kernel(phi, x, depth, w, b, integ=None):
    """K^L by the recursion with exact F: closed form, or direct quadrature per pair."""
    d = x.shape[1]
    k = b + w * x @ x.T / d
    q = b + w * np.sum(x * x, 1) / d
    iu = np.triu_indices(len(x))
    for _ in range(depth):
        rho = np.clip(k / np.sqrt(np.outer(q, q)), -1, 1)
        if integ is None:
            f = closed_form(phi, q[:, None], q[None, :], rho)
            dq = closed_form(phi, q, q, 1.0)
        else:
            vals, _ = integ.bivariate(q[iu[0]], q[iu[1]], np.arccos(rho[iu]))
            f = np.empty_like(k)
            f[iu] = vals
            f[(iu[1], iu[0])] = vals
            dq = integ.moments(q)[0]
        k, q = b + w * f, b + w * dq
    return k


def accuracy(images):
    rows = []
    x = standardize(images[:60])
    integs = {p: Integrator(p, 1e4) for p in ("tanh", "softplus")}
    for phi in ("relu", "erf", "tanh", "softplus"):
        for depth in (1, 3, 10, 20):
            w, b = 1.6, 0.2
            k = deep_network(phi, depth, w, b).kernel(x)
            e = reference_kernel(phi, x, depth, w, b, integs.get(phi))
            rows.append(("standardised MNIST", phi, depth, np.abs(k - e).max() / np.diag(e).max()))
    t1 = []
    for phi, settings in TABLE1.items():
        for depth, w, b in settings:
            k = deep_network(phi, depth, w, b).kernel(x)
            e = reference_kernel(phi, x, depth, w, b, integs.get(phi))
            off = ~np.eye(len(x), dtype=bool)
            spread = e[off].max() - e[off].min()
            t1.append((phi, f"{depth}-{w}-{b}", np.abs(k - e)[off].max() / spread))
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((40, 784)) * np.exp(rng.uniform(np.log(0.1), np.log(10), (40, 1)))
    un = []
    for phi in ("relu", "erf", "tanh"):
        for depth in (1, 5, 10):
            w, b = 1.5, 0.1
            k = deep_network(phi, depth, w, b).kernel(raw)
            e = reference_kernel(phi, raw, depth, w, b, integs.get(phi))
            dg = np.sqrt(np.outer(np.diag(e), np.diag(e)))
            un.append((phi, depth, np.max(np.abs(k - e) / dg)))
    return rows, t1, un


def gram_seconds(x, tile=KERNEL_TILE_ROWS):
    """Time of the input Gram as the evaluator makes it: the lower triangle, in place."""
    n = len(x)
    out = np.empty((n, n))
    t = time.perf_counter()
    for r0 in range(0, n, tile):
        r1 = min(n, r0 + tile)
        _gram_into(out[r0:r1, :r1], x, x, r0, r1, r1, True)
    return time.perf_counter() - t


def blas_description():
    """OpenBLAS's kernel family and OPENBLAS_CORETYPE, for the header."""
    return (f"OpenBLAS kernels {openblas_core()} "
            f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')})")


def ours(phi, x, depth, w, b, repeat):
    net = deep_network(phi, depth, w, b)
    net.kernel(x[:300])  # compile and build tables outside the timing
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        k = net.kernel(x)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), k


def peer(py, phi, x, depth, w, b, repeat):
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        out = Path(tmp) / "k.npz"
        cmd = [str(py), str(ROOT / "bench/nt_peer.py"), "--activation", phi, "--x",
               str(Path(tmp) / "x.npy"), "--n", str(len(x)), "--depth", str(depth),
               "--weight-var", str(w), "--bias-var", str(b), "--repeat", str(repeat),
               "--out", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        info = json.loads(res.stdout.strip().splitlines()[-1])
        return info["time_s"], np.load(out)["kernel"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-relu", type=int, default=10000)
    ap.add_argument("--n-tanh", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--peer-python", default=str(PEER_DEFAULT))
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args()
    with np.load(MNIST) as z:
        images = z["x_train"][10000:].astype(np.float64)

    if not args.skip_accuracy:
        rows, t1, un = accuracy(images)
        print("accuracy: max |K - K_exact| / max diag, 60 standardised MNIST images")
        for where, phi, depth, err in rows:
            print(f"  {phi:<9} depth {depth:>2}  {err:.2e}")
        print("Table 1 settings: max off-diagonal error / off-diagonal spread (60 images)")
        for phi, setting, err in t1:
            print(f"  {phi:<5} {setting:<14} {err:.2e}")
        print("random inputs, norms over two decades: max |K - K_exact| / sqrt(Kii Kjj)")
        for phi, depth, err in un:
            print(f"  {phi:<5} depth {depth:>2}  {err:.2e}")

    peer_ok = not args.no_peer and Path(args.peer_python).exists()
    print(f"speed: d = 784, depth 3, weight_var 1.6, bias_var 0.2, standardised MNIST, "
          f"median of {args.repeat}; {blas_description()}")
    print(f"  {'case':<22}{'nngp-lut s':>12}{'peer s':>10}{'speed-up':>10}"
          f"{'entries*layers/s':>18}{'Gram share':>12}{'max |diff|':>12}")
    for phi, n in (("relu", args.n_relu), ("tanh", args.n_tanh)):
        x = standardize(images[:n])
        t_ours, k = ours(phi, x, 3, 1.6, 0.2, args.repeat)
        share = float(np.median([gram_seconds(x) for _ in range(args.repeat)])) / t_ours
        rate = n * (n + 1) / 2 * 3 / t_ours
        t_peer, diff = math.nan, math.nan
        if peer_ok:
            t_peer, k_peer = peer(args.peer_python, phi, x, 3, 1.6, 0.2,
                                  args.repeat if phi == "relu" else 1)
            diff = float(np.abs(k - k_peer).max())
        print(f"  {phi + ' n=' + str(n):<22}{t_ours:>12.2f}{t_peer:>10.2f}"
              f"{t_peer / t_ours:>10.1f}{rate:>18.3g}{share:>12.0%}{diff:>12.2e}", flush=True)
    if peer_ok:
        # Which of the two tanh kernels is right: both against direct quadrature, 60 images.
        x = standardize(images[:60])
        e = reference_kernel("tanh", x, 3, 1.6, 0.2, Integrator("tanh", 1e4))
        k = deep_network("tanh", 3, 1.6, 0.2).kernel(x)
        _, k_peer = peer(args.peer_python, "tanh", x, 3, 1.6, 0.2, 1)
        scale = np.diag(e).max()
        print(f"  tanh accuracy vs quadrature (60 images): nngp-lut "
              f"{np.abs(k - e).max() / scale:.2e}, neural-tangents deg 25 "
              f"{np.abs(k_peer - e).max() / scale:.2e} (relative to max diagonal)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
