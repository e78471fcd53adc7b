"""Convolutional and graph kernels (issue #13): accuracy and speed against neural-tangents
0.6.5 (the bench venv, bench/nt_peer_conv.py, same run, same inputs), and the Monte Carlo
slope.

Accuracy (random N(0, 1) inputs 8x8x3, n = --n-8, and 28x28x1, n = --n-28; NTK
parameterisation, weight_var 2, bias_var 0.1; the error of an entry is
|K - K_peer| / sqrt(K_peer(x,x) K_peer(x',x')), the largest over all entries is printed):

* four architectures, relu and erf, NNGP and NTK, against neural-tangents' closed forms:
  a 4-layer CNN with Flatten; a CNN with AvgPool + GlobalAvgPool; a residual CNN (two
  blocks x + Conv(phi(Conv(phi(x)))), FanOut / FanInSum); a graph network on the pixel grid
  (Aggregate with a non-symmetric adjacency: 4-neighbour arcs of random weights and self
  loops).  Targets: 1e-8 (relu), 1e-6 (erf);
* tanh (8x8 inputs, the Flatten CNN and the pooled CNN) against (a) the layerwise
  reference (nngp_lut/kernel/spatial.py) with direct quadrature in place of the tables
  (QuadratureTable), target 1e-6, and (b) neural-tangents' ElementwiseNumerical
  (Gauss-Hermite quadrature of degree --deg, its own error shown as the distance to degree
  --deg / 2; --deg 0 skips it), for the Flatten CNN only: on the pooled one it holds
  deg^2 nodes for every pixel pair and took > 13 GB at degree 128.

Monte Carlo: ``montecarlo.convergence`` of a small CNN with pooling (4 random 6x6x2 inputs,
widths 64 .. --mc-max-width, --mc-draws draws): the fitted log-log slopes.  Target: slope in
[-0.6, -0.4].

Speed (standardised MNIST, NNGP + NTK, --repeat calls after a warm-up, the median): a
depth-8 3x3 relu CNN with Flatten on 28x28 images (n = --n-flat) and the same CNN with
GlobalAvgPool on 16x16 images (the centre crop, n = --n-gap).  Entries per second are
n^2 / time for both libraries (each returns the full n x n kernel; nngp-lut computes the
lower half of a symmetric kernel, neural-tangents every entry).  neural-tangents runs
jit'ed (XLA, which does not use OpenBLAS), batched with nt.batch where the pixel-by-pixel
covariance of all pairs would not fit; nngp-lut runs in a subprocess twice: OpenBLAS's own
kernel choice (no OPENBLAS_* variables) and the machine's documented
OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=512.  Target: >= 10x entries per second.

    python bench/bench_conv.py [--skip-accuracy] [--skip-mc] [--skip-speed] [--skip-tanh]
        [--sizes 8x8,28x28] [--graph-sizes 8x8,28x28] [--n-flat 200] [--n-gap 32]
        [--repeat 3] [--peer-python PATH]
"""

import argparse
import json
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
from nngp_lut.kernel import Network  # noqa: E402
from nngp_lut.kernel.arch import parse_arch  # noqa: E402
from bench.bench_blas import openblas_core  # noqa: E402

MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"
PEER_DEFAULT = Path.home() / ".cache/nngp-lut-bench/nt-venv/bin/python"
PEER_SCRIPT = ROOT / "bench" / "nt_peer_conv.py"
W, B = 2.0, 0.1
TARGETS = {"relu": 1e-8, "erf": 1e-6, "tanh": 1e-6}
SLOPE_TARGET = (-0.6, -0.4)
SPEED_TARGET = 10.0
HASWELL = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512"}


# --- architectures (nngp-lut --arch text, which nt_peer_conv.py maps onto stax) -----------------
def conv(w=W, b=B):
    return f"Conv({w}, {b})"


def act(phi):
    return f"Activation('{phi}')"


def cnn_flatten(phi, depth=4):
    return f"serial(repeat(serial({conv()}, {act(phi)}), {depth}), Flatten(), Dense({W}, {B}))"


def cnn_pool(phi):
    return (f"serial({conv()}, {act(phi)}, AvgPool((2, 2)), {conv()}, {act(phi)}, "
            f"GlobalAvgPool(), Dense({W}, {B}))")


def residual_cnn(phi, blocks=2):
    block = (f"serial(FanOut(2), parallel(serial({act(phi)}, {conv(1.0, 0.0)}, {act(phi)}, "
             f"{conv(1.0, 0.0)}), Identity()), FanInSum())")
    return (f"serial({conv()}, repeat({block}, {blocks}), {act(phi)}, Flatten(), "
            f"Dense({W}, {B}))")


def graph_net(phi, adjacency_path):
    # The per-node linear maps are 1-wide Conv layers, the same function and kernel as a Dense
    # on the channels; a Dense before the readout counts as a readout depth in Network, which
    # refuses a kernel with spatial (node) axes there.
    agg, node_map = f"Aggregate('{adjacency_path}')", f"Conv({W}, {B}, (1,))"
    return (f"serial({node_map}, {act(phi)}, {agg}, {node_map}, {act(phi)}, {agg}, "
            f"GlobalAvgPool(), Dense({W}, {B}))")


def speed_cnn(readout, depth=8):
    return (f"serial(repeat(serial({conv()}, {act('relu')}), {depth}), {readout}, "
            f"Dense({W}, {B}))")


def grid_adjacency(h, w, seed):
    """Arcs between 4-neighbours of an h x w grid with random weights in [0.2, 1] (so not
    symmetric), plus self loops of weight 1: a (hw, hw) array."""
    rng = np.random.default_rng(seed)
    a = np.eye(h * w)
    for i in range(h):
        for j in range(w):
            for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if 0 <= i + di < h and 0 <= j + dj < w:
                    a[i * w + j, (i + di) * w + j + dj] = rng.uniform(0.2, 1.0)
    return a


# --- the peer --------------------------------------------------------------------------------
def run_peer(py, arch, x, get=("nngp", "ntk"), repeat=0, batch_size=0, deg=None):
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", x)
        cmd = [str(py), str(PEER_SCRIPT), "--arch", arch, "--x", f"{tmp}/x.npy", "--get",
               ",".join(get), "--repeat", str(repeat), "--out", f"{tmp}/k.npz"]
        if batch_size:
            cmd += ["--batch-size", str(batch_size)]
        if deg:
            cmd += ["--deg", str(deg)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"peer failed: {res.stderr.strip().splitlines()[-1:]}")
        out = json.loads(res.stdout.strip().splitlines()[-1])
        with np.load(f"{tmp}/k.npz") as k:
            return out, {g: k[g] for g in get}


def entry_error(k, ref):
    d = np.sqrt(np.abs(np.diag(ref)))
    return float(np.max(np.abs(k - ref) / np.outer(d, d)))


class QuadratureTable:
    """The four expectations a table gives an Activation layer, by direct quadrature at every
    point (the table builder's integrator, itself tested against closed forms and a slow
    scipy integrator): the tables' interpolation taken out of the layerwise reference."""

    def __init__(self, phi):
        from nngp_lut.tables import Integrator

        self.integrator = Integrator(phi, 1e4)

    def _both(self, q1, q2, rho):
        q1, q2, rho = np.broadcast_arrays(q1, q2, rho)
        f, fd = self.integrator.bivariate(q1.ravel(), q2.ravel(),
                                          np.arccos(np.clip(rho, -1.0, 1.0)).ravel())
        return f.reshape(q1.shape), fd.reshape(q1.shape)

    def F(self, q1, q2, rho):
        return self._both(q1, q2, rho)[0]

    def dF(self, q1, q2, rho):
        return self._both(q1, q2, rho)[1]

    def _moments(self, q):
        q = np.asarray(q, dtype=np.float64)
        return [m.reshape(q.shape) for m in self.integrator.moments(q.ravel())]

    def second_moment(self, q):
        return self._moments(q)[0]

    def derivative_second_moment(self, q):
        return self._moments(q)[2]


def quadrature_reference(text, x):
    """Network.layerwise of the architecture with every Activation's table replaced by
    direct quadrature (QuadratureTable)."""
    from nngp_lut.kernel.layers import Activation

    layer = parse_arch(text)
    for node in layer.walk():
        if isinstance(node, Activation):
            node.__dict__["table"] = QuadratureTable(node.key[0])  # the cached_property
    return Network(layer).layerwise(x, get=("nngp", "ntk"))


# --- accuracy ------------------------------------------------------------------------------------
def accuracy(args, tmp):
    print("== accuracy against neural-tangents 0.6.5 (largest |K - K_nt| / sqrt(K_nt(x,x) "
          "K_nt(x',x')) over all entries)")
    rng = np.random.default_rng(0)
    inputs = {"8x8": rng.standard_normal((args.n_8, 8, 8, 3)),
              "28x28": rng.standard_normal((args.n_28, 28, 28, 1))}
    verdicts = []
    print(f"{'inputs':<7} {'architecture':<10} {'phi':<5} {'NNGP':>9} {'NTK':>9} {'target':>7}  "
          f"{'nngp-lut s':>10} {'peer s':>8}")
    for size, x in inputs.items():
        if size not in args.sizes:
            continue
        h, w = x.shape[1:3]
        adj = f"{tmp}/grid{h}.npy"
        np.save(adj, grid_adjacency(h, w, seed=h))
        graph_x = x.reshape(x.shape[0], h * w, x.shape[3])
        for phi in ("relu", "erf"):
            archs = {"flatten": (cnn_flatten(phi), x), "pool": (cnn_pool(phi), x),
                     "residual": (residual_cnn(phi), x), "graph": (graph_net(phi, adj), graph_x)}
            if size not in args.graph_sizes:
                del archs["graph"]
            for name, (text, xs) in archs.items():
                start = time.perf_counter()
                ours = Network(parse_arch(text)).kernel(xs, get=("nngp", "ntk"))
                took = time.perf_counter() - start
                peer, ref = run_peer(args.peer_python, text, xs)
                errs = [entry_error(o, ref[g]) for o, g in zip(ours, ("nngp", "ntk"))]
                ok = max(errs) <= TARGETS[phi]
                verdicts.append(ok)
                print(f"{size:<7} {name:<10} {phi:<5} {errs[0]:>9.1e} {errs[1]:>9.1e} "
                      f"{TARGETS[phi]:>7.0e}  {took:>10.2f} {peer['first_call_s']:>8.2f}"
                      f"{'' if ok else '   MISSED'}", flush=True)
    if args.skip_tanh:
        print(f"accuracy: {sum(verdicts)}/{len(verdicts)} within target")
        return
    x = inputs["8x8"][:args.n_tanh]
    print(f"tanh (8x8, n = {x.shape[0]}) against (a) the layerwise reference with direct "
          f"quadrature instead of tables, (b) neural-tangents' ElementwiseNumerical of degree "
          f"{args.deg} (its own error: the distance to degree {args.deg // 2})")
    for name, text in (("flatten", cnn_flatten("tanh")), ("pool", cnn_pool("tanh"))):
        ours = Network(parse_arch(text)).kernel(x, get=("nngp", "ntk"))
        quad = quadrature_reference(text, x)
        errs = [entry_error(o, r) for o, r in zip(ours, quad)]
        ok = max(errs) <= TARGETS["tanh"]
        verdicts.append(ok)
        print(f"8x8     {name:<10} tanh  {errs[0]:>9.1e} {errs[1]:>9.1e} "
              f"{TARGETS['tanh']:>7.0e}  (a) quadrature{'' if ok else '   MISSED'}", flush=True)
        if args.deg and name == "flatten":  # pooled: deg^2 nodes x (HW)^2 entries, > 13 GB
            _, ref = run_peer(args.peer_python, text, x, deg=args.deg)
            _, half = run_peer(args.peer_python, text, x, deg=args.deg // 2)
            errs = [entry_error(o, ref[g]) for o, g in zip(ours, ("nngp", "ntk"))]
            own = [entry_error(half[g], ref[g]) for g in ("nngp", "ntk")]
            print(f"8x8     {name:<10} tanh  {errs[0]:>9.1e} {errs[1]:>9.1e} "
                  f"{'':>7}  (b) ElementwiseNumerical (its own error {own[0]:.1e}, "
                  f"{own[1]:.1e})", flush=True)
    print(f"accuracy: {sum(verdicts)}/{len(verdicts)} within target")


# --- Monte Carlo -----------------------------------------------------------------------------
def monte_carlo(args):
    from nngp_lut import montecarlo

    text = cnn_pool("relu")
    x = np.random.default_rng(1).standard_normal((4, 6, 6, 2))
    widths = [w for w in (64, 128, 256, 512, 1024, 2048) if w <= args.mc_max_width]
    print(f"\n== Monte Carlo: {text}\n   4 random 6x6x2 inputs, {args.mc_draws} draws per "
          f"width, seed 0, against Network.kernel")
    start = time.perf_counter()
    rows, slopes = montecarlo.convergence(parse_arch(text), x, widths, args.mc_draws, seed=0)
    print_convergence(rows, slopes, f"{time.perf_counter() - start:.0f} s")


def print_convergence(rows, slopes, note):
    """The table of ``montecarlo.convergence``: errors per width, the fitted slopes (with
    ``note`` beside them), and each slope against SLOPE_TARGET (the kinds the rows have)."""
    names = [f"{kind}_{what}" for what in ("error", "rms") for kind in ("nngp", "ntk")
             if f"{kind}_{what}" in rows[0]]
    print(f"{'width':>7} " + " ".join(f"{n.replace('_', ' '):>11}" for n in names))
    for r in rows:
        print(f"{r['width']:>7} " + " ".join(f"{r[n]:>11.4f}" for n in names))
    print(f"{'slope':>7} " + " ".join(f"{slopes[n]:>11.3f}" for n in names) + f"   ({note})")
    for name in names:
        ok = SLOPE_TARGET[0] <= slopes[name] <= SLOPE_TARGET[1]
        print(f"  slope {name}: {slopes[name]:.3f} {'in' if ok else 'OUTSIDE'} "
              f"{list(SLOPE_TARGET)}", flush=True)


# --- speed -----------------------------------------------------------------------------------
WORKER = """
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import nngp_lut
nngp_lut.set_openblas_idle_timeout()
import numpy as np
from nngp_lut.kernel import Network
from nngp_lut.kernel.arch import parse_arch
from bench.bench_blas import openblas_core
text, path, repeat = sys.argv[2], sys.argv[3], int(sys.argv[4])
x = np.load(path)
net = Network(parse_arch(text))
t0 = time.perf_counter(); net.kernel(x[:2], get=("nngp", "ntk")); warm = time.perf_counter() - t0
times = []
for _ in range(repeat):
    t0 = time.perf_counter()
    k = net.kernel(x, get=("nngp", "ntk"))
    times.append(time.perf_counter() - t0)
    np.save(sys.argv[5], np.stack(k))
    del k
print(json.dumps({"time_s": statistics.median(times), "times_s": times, "warmup_s": warm,
                  "blas": openblas_core(), "storage": net.storage(x.shape[1:])}))
"""


def run_ours(text, x, repeat, env_extra, tmp):
    np.save(f"{tmp}/xs.npy", x)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    env.update(env_extra)
    res = subprocess.run([sys.executable, "-c", WORKER, str(ROOT), text, f"{tmp}/xs.npy",
                          str(repeat), f"{tmp}/ours.npy"], capture_output=True, text=True,
                         env=env)
    if res.returncode != 0:
        raise RuntimeError(f"nngp-lut worker failed: {res.stderr.strip()[-500:]}")
    return json.loads(res.stdout.strip().splitlines()[-1]), np.load(f"{tmp}/ours.npy")


def mnist_images(n, size):
    with np.load(MNIST) as d:
        x = d["x_train"][:n].astype(np.float64)
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    x = x.reshape(n, 28, 28, 1)
    lo = (28 - size) // 2
    return np.ascontiguousarray(x[:, lo:lo + size, lo:lo + size])


def speed(args, tmp):
    print(f"\n== speed, NNGP + NTK, standardised MNIST; medians of {args.repeat} calls after a "
          "warm-up; this machine: 2 cores shared with other jobs")
    cases = [("Flatten, 28x28", speed_cnn("Flatten()"), mnist_images(args.n_flat, 28),
              args.batch_flat),
             ("GlobalAvgPool, 16x16", speed_cnn("GlobalAvgPool()"),
              mnist_images(args.n_gap, 16), args.batch_gap)]
    for name, text, x, batch in cases:
        n = x.shape[0]
        print(f"\n{name}: {text}  (n = {n}, {n * n} entries)")
        peer, ref = run_peer(args.peer_python, text, x, repeat=args.repeat, batch_size=batch)
        peer_rate = n * n / peer["time_s"]
        print(f"  neural-tangents {peer['version']} (jax {peer['jax']}, jit, nt.batch "
              f"{batch or 'none'}): {peer['time_s']:.2f} s (runs "
              f"{', '.join(f'{t:.2f}' for t in peer['times_s'])}), "
              f"{peer_rate:,.0f} entries/s")
        for label, extra in (("OpenBLAS's own choice", {}),
                             ("OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=512", HASWELL)):
            ours, k = run_ours(text, x, args.repeat, extra, tmp)
            rate = n * n / ours["time_s"]
            err = max(entry_error(k[i], ref[g]) for i, g in enumerate(("nngp", "ntk")))
            ratio = rate / peer_rate
            print(f"  nngp-lut [{label}; kernels {ours['blas']}; {ours['storage']}]: "
                  f"{ours['time_s']:.2f} s (runs {', '.join(f'{t:.2f}' for t in ours['times_s'])}"
                  f"), {rate:,.0f} entries/s = {ratio:.1f}x the peer "
                  f"({'meets' if ratio >= SPEED_TARGET else 'MISSES'} >= {SPEED_TARGET:.0f}x); "
                  f"largest entry error against the peer {err:.1e}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-mc", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--sizes", default="8x8,28x28", help="input sizes of the accuracy part")
    ap.add_argument("--graph-sizes", default="8x8,28x28",
                    help="input sizes whose pixel grid the graph network runs on")
    ap.add_argument("--skip-tanh", action="store_true")
    ap.add_argument("--n-8", type=int, default=6)
    ap.add_argument("--n-28", type=int, default=4)
    ap.add_argument("--n-tanh", type=int, default=4)
    ap.add_argument("--deg", type=int, default=128)
    ap.add_argument("--mc-draws", type=int, default=8)
    ap.add_argument("--mc-max-width", type=int, default=1024)
    ap.add_argument("--n-flat", type=int, default=200)
    ap.add_argument("--n-gap", type=int, default=32)
    ap.add_argument("--batch-flat", type=int, default=100)
    ap.add_argument("--batch-gap", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peer-python", default=str(PEER_DEFAULT))
    args = ap.parse_args()
    args.sizes, args.graph_sizes = args.sizes.split(","), args.graph_sizes.split(",")
    print(f"nngp-lut {nngp_lut.__version__}; OpenBLAS kernels in this process: "
          f"{openblas_core()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_accuracy:
            accuracy(args, tmp)
        if not args.skip_mc:
            monte_carlo(args)
        if not args.skip_speed:
            speed(args, tmp)


if __name__ == "__main__":
    main()
