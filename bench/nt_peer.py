"""Time the peer library neural-tangents 0.6.5 on the NNGP kernel of a deep fully connected net.

Run with the bench-only venv made by bench/envs/neural_tangents.sh (never with the project's
environment; this script does not import nngp_lut):

    PY=$(bash bench/envs/neural_tangents.sh | tail -1)
    $PY bench/nt_peer.py --activation relu --n 2000 --depth 3 --weight-var 2 --bias-var 0.1
    $PY bench/nt_peer.py --activation tanh --n 500 --depth 3 --repeat 1 --out k.npz
    $PY bench/nt_peer.py --selfcheck --depth 3 --weight-var 1.6 --bias-var 0.2

Network (Lee et al., ICLR 2018, L = --depth hidden layers):

    stax.serial(*[Dense(512, W_std=sqrt(W), b_std=sqrt(B)), act] * L,
                Dense(1, W_std=sqrt(W), b_std=sqrt(B)))

act = stax.Relu() (closed-form arc-cosine kernel) for relu, stax.ElementwiseNumerical(
jnp.tanh, deg=--deg) (deg x deg Gauss-Hermite quadrature) for tanh.  NT's input kernel is
<x, x'>/d, so the kernel returned is exactly
    K^0 = B + W <x,x'>/d,   K^l = B + W E[phi(u) phi(v)],  u,v ~ N(0, K^{l-1}),  l = 1..L
(checked by --selfcheck against a numpy arc-cosine recursion, for both NT parameterizations).

Timing: jax float64 on CPU; kernel_fn is wrapped in jax.jit (NT's recommended use; --no-jit
for eager op-by-op).  One warm-up call on a tiny input (--warmup-n rows) pays the one-time
costs; the first call on the real input (which still compiles for its shape under jit) is
reported as first_call_s; then --repeat further calls, whose median is time_s (time_s =
first_call_s if --repeat 0).  Every call is blocked until ready.  One JSON line on stdout.

Memory: ElementwiseNumerical evaluates deg^2 quadrature nodes per kernel entry.  Under jit
XLA fuses that (peak RSS 0.6 GB at n = 500); eager (--no-jit) materialises deg^2 x n^2
float64 arrays (25^2 x 500^2 x 8 B = 1.25 GB each; peak RSS 3.1 GB at n = 500), so large n
may need --batch-size (nt.batch: the n x n kernel is computed in batch_size x batch_size
blocks, n must be divisible by batch_size; results equal the unbatched kernel to 2e-16).
Closed-form relu needs no batching up to n = 10000 (peak RSS 1.5 GB under jit).
"""

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time
import types
import warnings

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# neural_tangents/__init__.py imports neural_tangents.experimental, which alone needs
# TensorFlow + tf2jax (TF->JAX NTK conversion; unused here).  In a lite venv without
# TensorFlow (NT_LITE=1) stub that subpackage out; stax, batch and the kernels are unaffected.
LITE = importlib.util.find_spec("tensorflow") is None
if LITE:
    sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")

import numpy as np  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402


def make_kernel_fn(activation, depth, weight_var, bias_var, deg, parameterization="ntk",
                   width=512):
    w_std, b_std = math.sqrt(weight_var), math.sqrt(bias_var)
    if activation == "relu":
        act = stax.Relu()
    elif activation == "tanh":
        with warnings.catch_warnings():  # "Numerical Activation Layer ... used!"
            warnings.simplefilter("ignore")
            act = stax.ElementwiseNumerical(jnp.tanh, deg=deg)
    else:
        raise ValueError(activation)
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=w_std, b_std=b_std,
                              parameterization=parameterization), act]
    layers.append(stax.Dense(1, W_std=w_std, b_std=b_std, parameterization=parameterization))
    return stax.serial(*layers)[2]


def wrap(kernel_fn, jit, batch_size):
    f = jax.jit(kernel_fn, static_argnames="get") if jit else kernel_fn
    if batch_size:
        f = nt.batch(f, batch_size=batch_size, store_on_device=False)
    return f


def nngp(f, x):
    return jax.block_until_ready(f(x, None, "nngp"))


# ---------------------------------------------------------------- numpy references (self-check)

def arccos_relu(k):
    """E[relu(u) relu(v)] for (u, v) ~ N(0, k), elementwise on the full covariance matrix."""
    s = np.sqrt(np.diag(k))
    norm = np.outer(s, s)
    c = np.clip(k / norm, -1.0, 1.0)
    th = np.arccos(c)
    return norm / (2 * np.pi) * (np.sin(th) + (np.pi - th) * c)


def gauss_tanh(k, deg=200):
    """E[tanh(u) tanh(v)] by deg x deg Gauss-Hermite on the Cholesky of each 2x2 covariance."""
    t, w = np.polynomial.hermite.hermgauss(deg)
    z, w = np.sqrt(2.0) * t, w / np.sqrt(np.pi)
    q = np.diag(k)
    out = np.empty_like(k)
    for i in range(k.shape[0]):
        for j in range(k.shape[0]):
            a = np.sqrt(q[i])
            c = k[i, j] / a
            e = np.sqrt(max(q[j] - c * c, 0.0))
            u = a * z[:, None]
            v = c * z[:, None] + e * z[None, :]
            out[i, j] = w @ (np.tanh(u) * np.tanh(v)) @ w
    return out


def reference(x, activation, depth, weight_var, bias_var):
    k = bias_var + weight_var * (x @ x.T) / x.shape[1]
    expect = arccos_relu if activation == "relu" else gauss_tanh
    for _ in range(depth):
        k = bias_var + weight_var * expect(k)
    return k


def selfcheck(args):
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((12, args.d))
    x[1] = 0.5 * x[0]          # rho = 1 exactly, and a pair with unequal variances
    x[2] = -x[0]               # rho = -1
    out = {"selfcheck": True, "n": 12, "d": args.d, "depth": args.depth,
           "weight_var": args.weight_var, "bias_var": args.bias_var}
    for activation in ("relu", "tanh"):
        ref = reference(x, activation, args.depth, args.weight_var, args.bias_var)
        for par in ("ntk", "standard"):
            kf = make_kernel_fn(activation, args.depth, args.weight_var, args.bias_var,
                                args.deg, parameterization=par)
            k = np.asarray(nngp(wrap(kf, not args.no_jit, 0), jnp.asarray(x)))
            key = f"{activation}_{par}"
            out[f"max_abs_diff_{key}"] = float(np.max(np.abs(k - ref)))
            out[f"max_rel_diff_{key}"] = float(np.max(np.abs(k - ref)) / np.max(np.abs(ref)))
    out["tanh_reference"] = "numpy Gauss-Hermite 200x200 (NT uses deg=%d)" % args.deg
    print(json.dumps(out))
    ok = out["max_abs_diff_relu_ntk"] < 1e-10 and out["max_abs_diff_relu_standard"] < 1e-10
    return 0 if ok else 1


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--activation", choices=["relu", "tanh"], default="relu")
    ap.add_argument("--n", type=int, default=1000, help="number of inputs (rows of --x kept)")
    ap.add_argument("--d", type=int, default=784, help="input dimension (random inputs)")
    ap.add_argument("--depth", type=int, default=3, help="number of hidden layers L")
    ap.add_argument("--weight-var", type=float, default=2.0)
    ap.add_argument("--bias-var", type=float, default=0.1)
    ap.add_argument("--deg", type=int, default=25, help="quadrature degree for tanh")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--x", help="load inputs from this .npy (n x d) instead of N(0,1) draws")
    ap.add_argument("--standardize", action="store_true",
                    help="per example: subtract the row mean, divide by the row std")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls after the first call")
    ap.add_argument("--warmup-n", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=0, help="nt.batch block size (0: none)")
    ap.add_argument("--no-jit", action="store_true", help="eager op-by-op, no jax.jit")
    ap.add_argument("--out", help="save the kernel (and settings) to this .npz")
    ap.add_argument("--selfcheck", action="store_true",
                    help="compare NT to a numpy recursion on 12 inputs and exit")
    args = ap.parse_args()

    if args.selfcheck:
        return selfcheck(args)

    if args.x:
        x = np.load(args.x).astype(np.float64)
        x = x.reshape(x.shape[0], -1)[: args.n]
    else:
        x = np.random.default_rng(args.seed).standard_normal((args.n, args.d))
    if args.standardize:
        x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    n, d = x.shape
    if args.batch_size and n % args.batch_size:
        ap.error(f"--batch-size {args.batch_size} must divide n = {n}")

    f = wrap(make_kernel_fn(args.activation, args.depth, args.weight_var, args.bias_var,
                            args.deg), not args.no_jit, args.batch_size)
    xj = jnp.asarray(x)
    xw = xj[: args.warmup_n]
    if args.batch_size:  # the batched function needs n divisible by batch_size
        xw = xj[: args.batch_size]

    t0 = time.perf_counter()
    nngp(f, xw)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    k = nngp(f, xj)
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeat):
        del k
        t0 = time.perf_counter()
        k = nngp(f, xj)
        times.append(time.perf_counter() - t0)

    k = np.asarray(k)
    res = {
        "library": "neural-tangents", "version": nt.__version__, "jax": jax.__version__,
        "lite_no_tf": LITE, "activation": args.activation,
        "act_layer": "Relu()" if args.activation == "relu"
        else f"ElementwiseNumerical(tanh, deg={args.deg})",
        "n": n, "d": d, "depth": args.depth, "weight_var": args.weight_var,
        "bias_var": args.bias_var, "seed": args.seed, "standardize": args.standardize,
        "jit": not args.no_jit, "batch_size": args.batch_size, "dtype": str(k.dtype),
        "time_s": statistics.median(times) if times else first_s,
        "times_s": times, "first_call_s": first_s, "warmup_s": warmup_s,
        "us_per_entry": 1e6 * (statistics.median(times) if times else first_s) / n**2,
        "kernel_finite": bool(np.isfinite(k).all()),
    }
    if args.out:
        np.savez(args.out, kernel=k, meta=json.dumps(res))
        res["out"] = args.out
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
