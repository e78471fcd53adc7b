"""neural-tangents 0.6.5 on convolutional and graph architectures (issue #13): NNGP and NTK,
timed.

Run with the bench-only venv made by bench/envs/neural_tangents.sh (never with the project's
environment; this script does not import nngp_lut).  bench/bench_conv.py calls it:

    PY=$(NT_LITE=1 bash bench/envs/neural_tangents.sh | tail -1)
    $PY bench/nt_peer_conv.py --arch "serial(Conv(2, 0.1), Activation('relu'), Flatten(), \
        Dense(2, 0.1))" --x x.npy --get nngp,ntk --repeat 3 --out k.npz

The architecture is nngp-lut's ``--arch`` text (nngp_lut/kernel/arch.py), read here with
:mod:`ast` (never ``eval``-ed) and mapped layer by layer onto ``stax``, so the bench hands the
same text to both libraries.  NTK parameterisation, W_std = sqrt(weight_var),
b_std = sqrt(bias_var) (None: no bias):

=============================================  ================================================
``Dense(w, b, parameterization, width)``       ``stax.Dense(width or --width, ...)``
``Conv(w, b, filter_shape, strides, padding,   ``stax.Conv(width or --width, filter_shape,
parameterization, width)``                     strides, padding, ...)``
``Activation('relu' | 'erf' | 'identity')``    ``stax.Relu()``, ``stax.Erf()``, ``stax.Identity()``
``Activation('gelu')``                         ``stax.Gelu(approximate=False)`` (closed forms)
``Activation('tanh')``                         ``stax.ElementwiseNumerical(tanh, deg=--deg)``
                                               (Gauss-Hermite quadrature)
``AvgPool(window_shape, strides, padding)``    ``stax.AvgPool(...)`` (normalize_edges=False;
                                               strides=None is the window, as nngp-lut's)
``GlobalAvgPool()``, ``Flatten()``             ``stax.GlobalAvgPool()``, ``stax.Flatten()``
``LayerNorm(over)``                            ``stax.LayerNorm(axis=...)``: channels -1, all
                                               every non-batch axis ("space" alone has no
                                               limit kernel in neural-tangents: refused)
``Aggregate('A.npy' | 'A.npz')``               ``stax.Aggregate()`` with pattern = A^T of the
                                               adjacency A of the file (neural-tangents sums
                                               over arcs i -> j, out_j = sum_i P_ij x_i;
                                               nngp-lut's z_i = sum_j A_ij x_j)
``FanOut``, ``FanInSum``, ``FanInConcat``,     the ``stax`` layers of the same names
``Identity``, ``serial``, ``parallel``,
``repeat(block, n)``
=============================================  ================================================

Timing: jax.jit'ed kernel_fn (optionally under ``nt.batch``), float64 on CPU; a warm-up on
--warmup-n inputs, the first call on the real input, then --repeat calls whose median is
time_s.  One JSON line on stdout.
"""

import argparse
import ast
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


def _tuple(v):
    """A filter shape, window or strides as a tuple (a bare int: one spatial axis)."""
    return None if v is None else (int(v),) if isinstance(v, int) else tuple(v)


class Builder:
    """nngp-lut architecture text -> a stax layer triple (init_fn, apply_fn, kernel_fn)."""

    def __init__(self, ndim, width, deg):
        self.ndim = ndim  # rank of the inputs, batch axis included (LayerNorm's axes)
        self.width = width
        self.deg = deg
        self.adjacency = None  # the path that the Aggregate layers name

    @staticmethod
    def _std(weight_var, bias_var):
        return math.sqrt(weight_var), (None if bias_var is None else math.sqrt(bias_var))

    def Dense(self, weight_var, bias_var=0.0, parameterization="ntk", width=None):
        w_std, b_std = self._std(weight_var, bias_var)
        return stax.Dense(width or self.width, W_std=w_std, b_std=b_std,
                          parameterization=parameterization)

    def Conv(self, weight_var, bias_var=0.0, filter_shape=(3, 3), strides=None,
             padding="SAME", parameterization="ntk", width=None):
        w_std, b_std = self._std(weight_var, bias_var)
        return stax.Conv(width or self.width, _tuple(filter_shape), _tuple(strides), padding,
                         W_std=w_std,
                         b_std=b_std, parameterization=parameterization)

    def Activation(self, phi):
        if phi == "relu":
            return stax.Relu()
        if phi == "erf":
            return stax.Erf()
        if phi == "gelu":  # x Phi(x), its closed forms
            return stax.Gelu(approximate=False)
        if phi == "identity":
            return stax.Identity()
        if phi == "tanh":
            with warnings.catch_warnings():  # "Numerical Activation Layer ... used!"
                warnings.simplefilter("ignore")
                return stax.ElementwiseNumerical(jnp.tanh, deg=self.deg)
        raise SystemExit(f"nt_peer_conv: no neural-tangents layer for Activation({phi!r})")

    def AvgPool(self, window_shape=(2, 2), strides=None, padding="VALID"):
        # nngp-lut's strides default to the window, stax's (jax.example_libraries') to 1
        window = _tuple(window_shape)
        return stax.AvgPool(window, _tuple(strides) or window, padding)

    def GlobalAvgPool(self):
        return stax.GlobalAvgPool()

    def Flatten(self):
        return stax.Flatten()

    def LayerNorm(self, over="channels"):
        if over == "channels":
            return stax.LayerNorm(axis=-1)
        if over == "all":
            return stax.LayerNorm(axis=tuple(range(1, self.ndim)))
        raise SystemExit(f"nt_peer_conv: neural-tangents has no LayerNorm(over={over!r})")

    def Aggregate(self, adjacency):
        if self.adjacency not in (None, adjacency):
            raise SystemExit("nt_peer_conv: neural-tangents takes one pattern per network; "
                             "all Aggregate layers must name the same adjacency file")
        self.adjacency = adjacency
        return stax.Aggregate()

    def Identity(self):
        return stax.Identity()

    def Dropout(self, rate=0.5):
        return stax.Identity()  # evaluation mode, as nngp-lut's

    def FanOut(self, n):
        return stax.FanOut(int(n))

    def FanInSum(self):
        return stax.FanInSum()

    def FanInConcat(self):
        return stax.FanInConcat()

    def serial(self, *layers):
        return stax.serial(*layers)

    def parallel(self, *layers):
        return stax.parallel(*layers)

    def repeat(self, block, n):
        return stax.serial(*[block] * int(n))

    def build(self, text):
        return self._value(ast.parse(text.strip(), mode="eval").body)

    def _value(self, node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -self._value(node.operand)
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(self._value(e) for e in node.elts)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and not node.func.id.startswith("_") and hasattr(self, node.func.id)):
            return getattr(self, node.func.id)(
                *[self._value(a) for a in node.args],
                **{kw.arg: self._value(kw.value) for kw in node.keywords})
        raise SystemExit(f"nt_peer_conv: cannot map {ast.unparse(node)!r}")


def load_adjacency(path):
    """A dense .npy or scipy.sparse .npz adjacency as a dense float64 array."""
    if path.endswith(".npz"):
        import scipy.sparse

        return scipy.sparse.load_npz(path).toarray().astype(np.float64)
    return np.load(path).astype(np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", required=True, help="nngp-lut architecture text")
    ap.add_argument("--x", required=True, help="inputs, an (n, H, W, C) or (n, L, C) .npy")
    ap.add_argument("--width", type=int, default=512,
                    help="channels of Dense/Conv layers that declare none (the NTK "
                    "parameterisation's kernel does not depend on it)")
    ap.add_argument("--deg", type=int, default=25, help="ElementwiseNumerical's degree")
    ap.add_argument("--get", default="nngp,ntk", help="nngp, ntk or nngp,ntk")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup-n", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=0,
                    help="nt.batch block size (0: none); needed where the pixel-by-pixel "
                    "covariance of all pairs does not fit in memory")
    ap.add_argument("--out", help="save the kernels to this .npz")
    args = ap.parse_args()

    x = jnp.asarray(np.load(args.x).astype(np.float64))
    get = tuple(args.get.split(","))
    builder = Builder(x.ndim, args.width, args.deg)
    kernel_fn = builder.build(args.arch)[2]
    kwargs = {}
    if builder.adjacency:
        # neural-tangents' pattern is per input and transposed (see the module docstring).
        pattern_t = jnp.asarray(load_adjacency(builder.adjacency).T)
        kwargs = {"pattern": lambda n: jnp.broadcast_to(pattern_t, (n,) + pattern_t.shape)}

    def call(x1, x2=None, get=get):
        extra = {}
        if kwargs:
            p = kwargs["pattern"]
            extra = {"pattern": (p(x1.shape[0]), p((x1 if x2 is None else x2).shape[0]))}
        return kernel_fn(x1, x2, get, **extra)

    f = jax.jit(call, static_argnames="get")
    if args.batch_size:
        f = nt.batch(f, batch_size=args.batch_size, store_on_device=False)
    run = lambda xs: jax.block_until_ready(f(xs, None, get=get))  # noqa: E731
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
           "get": args.get, "n": int(x.shape[0]), "shape": list(x.shape[1:]),
           "time_s": statistics.median(times) if times else first, "times_s": times,
           "first_call_s": first, "warmup_s": warmup}
    if args.out:
        np.savez(args.out, **{g: np.asarray(v) for g, v in zip(get, k)})
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
