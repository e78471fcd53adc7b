"""neural-tangents 0.6.5 on the architectures of bench/bench_ntk.py: NNGP and NTK, timed.

Run with the bench-only venv made by bench/envs/neural_tangents.sh (never with the project's
environment; this script does not import nngp_lut).  bench_ntk.py calls it:

    PY=$(bash bench/envs/neural_tangents.sh | tail -1)
    $PY bench/nt_peer_arch.py --arch relu --x x.npy --depth 3 --weight-var 1.6 \
        --bias-var 0.2 --get ntk --repeat 3 --out k.npz

Architectures (NTK parameterisation, W_std = sqrt(weight_var), b_std = sqrt(bias_var)):

* relu, erf, tanh: serial([Dense(512), act] * depth, Dense(1)) with act = Relu() and Erf()
  (closed forms) or ElementwiseNumerical(tanh, deg=--deg) (Gauss-Hermite);
* residual: Dense, then --blocks times serial(FanOut(2), parallel(serial(Relu(), Dense),
  Identity()), FanInSum(), LayerNorm()), then Dense(1).

Timing: jax.jit'ed kernel_fn, float64 on CPU; a warm-up on --warmup-n rows, the first call on
the real input, then --repeat calls whose median is time_s.  One JSON line on stdout.
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
if importlib.util.find_spec("tensorflow") is None:  # lite venv: stub the TF-only subpackage
    sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")

import numpy as np  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402


def make_kernel_fn(arch, depth, weight_var, bias_var, deg, blocks):
    dense = lambda width=512: stax.Dense(width, W_std=math.sqrt(weight_var),  # noqa: E731
                                          b_std=math.sqrt(bias_var))
    if arch == "residual":
        block = stax.serial(stax.FanOut(2),
                            stax.parallel(stax.serial(stax.Relu(), dense()), stax.Identity()),
                            stax.FanInSum(), stax.LayerNorm())
        return stax.serial(dense(), *[block] * blocks, dense(1))[2]
    if arch == "relu":
        act = stax.Relu()
    elif arch == "erf":
        act = stax.Erf()
    else:
        with warnings.catch_warnings():  # "Numerical Activation Layer ... used!"
            warnings.simplefilter("ignore")
            act = stax.ElementwiseNumerical(jnp.tanh, deg=deg)
    return stax.serial(*[dense(), act] * depth, dense(1))[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["relu", "erf", "tanh", "residual"], required=True)
    ap.add_argument("--x", required=True, help="inputs, an (n, d) .npy")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--weight-var", type=float, default=1.6)
    ap.add_argument("--bias-var", type=float, default=0.2)
    ap.add_argument("--deg", type=int, default=25)
    ap.add_argument("--get", default="nngp,ntk", help="nngp, ntk or nngp,ntk")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup-n", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=0,
                    help="nt.batch block size (0: none); ElementwiseNumerical's NTK needs it "
                    "beyond a few hundred inputs (deg^2 quadrature nodes per entry)")
    ap.add_argument("--out", help="save the kernels to this .npz")
    args = ap.parse_args()

    x = jnp.asarray(np.load(args.x).astype(np.float64))
    get = tuple(args.get.split(","))
    f = jax.jit(make_kernel_fn(args.arch, args.depth, args.weight_var, args.bias_var,
                               args.deg, args.blocks), static_argnames="get")
    if args.batch_size:
        f = nt.batch(f, batch_size=args.batch_size, store_on_device=False)
    run = lambda xs: jax.block_until_ready(f(xs, None, get))  # noqa: E731
    t0 = time.perf_counter()
    run(x[:args.batch_size or args.warmup_n])
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    k = run(x)
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeat):
        del k
        t0 = time.perf_counter()
        k = run(x)
        times.append(time.perf_counter() - t0)
    res = {"library": "neural-tangents", "version": nt.__version__, "jax": jax.__version__,
           "arch": args.arch, "get": args.get, "n": int(x.shape[0]),
           "time_s": statistics.median(times) if times else first, "times_s": times,
           "first_call_s": first, "warmup_s": warmup}
    if args.out:
        np.savez(args.out, **{g: np.asarray(v) for g, v in zip(get, k)})
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
