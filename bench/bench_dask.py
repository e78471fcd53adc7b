"""The Dask backend (issue 14): correctness, overhead, the dask.array peer, a killed worker,
task overheads and MNIST 60000, each measured against its in-process peer in the same run.

    python bench/bench_dask.py correct  [--n 3000]
    python bench/bench_dask.py overhead [--n 20000] [--repeat 3]
    python bench/bench_dask.py peer     [--n 20000] [--chunks 2000,2500,4000,5000]
    python bench/bench_dask.py fault    [--n 12000]
    python bench/bench_dask.py tasks                   (per-task costs for bench/scaling.py)
    python bench/bench_dask.py mnist    [--n 60000]    (long: ~20+ min per path)

Workloads: the GP fit (kernel tiles + blocked Cholesky + solve of the 10 one-hot targets)
on the first n MNIST training images, standardised per input, with the paper's 50k ReLU
setting (depth 1, weight_var 0.10, bias_var 0.48); tile order 2048 everywhere.  The
in-process peer is NNGPRegressor without a client (BLAS and Numba on both cores); the
cluster is a LocalCluster of single-threaded worker processes (started before the timer).
Every figure is the median of --repeat runs, all runs printed.  Every result line is also
appended as JSON to --log (bench/scaling.py reads the measured points from it).
"""

import argparse
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nngp_lut import cluster  # noqa: E402
from nngp_lut.data import standardize_rows  # noqa: E402
from nngp_lut.gp import NNGPRegressor, evaluate, regression_targets  # noqa: E402
from nngp_lut.kernel import deep_network  # noqa: E402

MNIST = Path("/work/shared/data/mnist.npz")
SETTING = dict(depth=1, weight_var=0.10, bias_var=0.48)  # paper Table 1, MNIST 50k, ReLU
TILE = 2048


def blas_info():
    from threadpoolctl import threadpool_info

    return "; ".join(f"{i['internal_api']} {i.get('version')} {i.get('architecture')} "
                     f"threads={i['num_threads']}" for i in threadpool_info()
                     if i["user_api"] == "blas")


def env_line():
    keys = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS")
    return (f"BLAS: {blas_info()}; env: " +
            ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in keys) +
            f"; load average at start: {os.getloadavg()[0]:.1f} (2 cores, shared)")


def log(args, record):
    print(json.dumps(record), flush=True)
    with open(args.log, "a") as f:
        f.write(json.dumps({**record, "time": time.strftime("%H:%M:%S"),
                            "load": os.getloadavg()[0]}) + "\n")


def mnist(n, n_test=0):
    d = np.load(MNIST)
    x = standardize_rows(d["x_train"][:n].astype(np.float64), "x")
    xt = standardize_rows(d["x_test"][:n_test].astype(np.float64), "x") if n_test else None
    return x, d["y_train"][:n], xt, d["y_test"][:n_test]


def network():
    return deep_network("relu", **SETTING)


def local_cluster(workers, threads=1, **kw):
    import distributed

    lc = distributed.LocalCluster(n_workers=workers, threads_per_worker=threads,
                                  processes=True, dashboard_address=None,
                                  silence_logs=40, **kw)
    return lc, distributed.Client(lc)


def warm(client, net):
    """Compile the Numba kernels and touch BLAS in every worker (and here)."""
    x, y, _, _ = mnist(600)
    t, _ = regression_targets(y, y)
    NNGPRegressor(network=net, jitter=1e-3, tile=256, client=client).fit(x, t)
    NNGPRegressor(network=net, jitter=1e-3, tile=256).fit(x, t)


def fit(x, t, client, jitter="absolute"):
    gp = NNGPRegressor(network=network(), jitter=jitter, tile=TILE, client=client)
    t0 = time.perf_counter()
    gp.fit(x, t)
    return time.perf_counter() - t0, gp


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --- correctness ---------------------------------------------------------------------------
def bench_correct(args):
    """At the paper's jitter rule (K + 1e-10 I: condition number ~1e10, so rounding
    differences of 1e-16 in the tiles grow up to ~1e-6 in the solves) and at a fixed jitter
    of 1e-3 (well conditioned); and against the in-process path restricted to one thread
    (BLAS and Numba), which is what each worker runs: there the results are bit for bit the
    same, so every difference above is OpenBLAS's two-thread rounding."""
    import numba
    from threadpoolctl import threadpool_limits

    x, y, xt, yt = mnist(args.n, 1000)
    t, _ = regression_targets(y, y)
    lc, client = local_cluster(2)
    with lc, client:
        net = network()
        k_ref = net.kernel(x)
        k_ours = cluster.kernel(client, net, x, tile=512)
        log(args, {"bench": "correct-kernel", "n": args.n, "kernel_rel": rel(k_ours, k_ref)})
        for jitter in ("absolute", 1e-3):
            ours = NNGPRegressor(network=net, jitter=jitter, tile=512, client=client).fit(x, t)
            ref = NNGPRegressor(network=net, jitter=jitter, tile=512).fit(x, t)
            with threadpool_limits(1):
                numba.set_num_threads(1)
                one = NNGPRegressor(network=net, jitter=jitter, tile=512).fit(x, t)
                m_one = one.predict(xt)
                numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
            m1, v1 = ours.predict(xt, True)
            m0, v0 = ref.predict(xt, True)
            l1 = ours.factor_.to_dense()
            rec = {"bench": "correct", "n": args.n, "tile": 512, "workers": 2,
                   "jitter_rule": jitter, "jitter": [ours.jitter_, ref.jitter_],
                   "factor_rel": rel(l1, ref.factor_.to_dense()),
                   "alpha_rel": rel(ours.alpha_, ref.alpha_),
                   "solve_lower_rel": rel(ours.factor_.solve_lower(t),
                                          ref.factor_.solve_lower(t)),
                   "mean_rel": rel(m1, m0), "variance_rel": rel(v1, v0),
                   "logdet_rel": abs(ours.factor_.logdet() / ref.factor_.logdet() - 1),
                   "same_predicted_classes": bool(np.array_equal(m1.argmax(1), m0.argmax(1))),
                   "one_thread_factor_identical": bool(np.array_equal(
                       l1, one.factor_.to_dense())),
                   "one_thread_factor_rel": rel(l1, one.factor_.to_dense()),
                   "one_thread_alpha_rel": rel(ours.alpha_, one.alpha_),
                   "one_thread_mean_rel": rel(m1, m_one)}
            log(args, rec)


# --- overhead: in process vs 2 and 1 single-threaded workers -------------------------------
def bench_overhead(args):
    x, y, _, _ = mnist(args.n)
    t, _ = regression_targets(y, y)
    times = {}
    for label, workers in (("in-process", 0), ("2 workers", 2), ("1 worker", 1)):
        lc, client = local_cluster(workers) if workers else (None, None)
        try:
            warm(client, network())
            runs, jitters = [], set()
            for _ in range(args.repeat):
                sec, gp = fit(x, t, client)
                runs.append(sec)
                jitters.add(gp.jitter_)
                gp.close()
                del gp
            times[label] = statistics.median(runs)
            log(args, {"bench": "overhead", "n": args.n, "tile": TILE, "path": label,
                       "workers": workers, "median_s": times[label], "runs_s": runs,
                       "jitter": sorted(jitters)})
        finally:
            if client is not None:
                client.close()
                lc.close()
    log(args, {"bench": "overhead-ratios", "n": args.n,
               "two_workers_over_in_process": times["2 workers"] / times["in-process"],
               "one_over_two_workers": times["1 worker"] / times["2 workers"]})


# --- peer: dask.array.linalg.cholesky on the same cluster ----------------------------------
def spd_tile(rows, cols, g):
    """Tile of A = G G^T / rank + I (a pure function of G)."""
    t = g[rows[0]:rows[1]] @ g[cols[0]:cols[1]].T / g.shape[1]
    if rows == cols:
        t[np.diag_indices_from(t)] += 1.0
    return np.asfortranarray(t)


def bench_peer(args):
    import dask.array as da
    from distributed import wait

    n, rank = args.n, 512
    g = np.random.default_rng(0).standard_normal((n, rank))
    lc, client = local_cluster(2)
    with lc, client:
        warm(client, network())
        ours = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            f = cluster.cholesky(client, spd_tile, (g,), n, tile=TILE)
            ours.append(time.perf_counter() - t0)  # cholesky() returns when L is done
            l00 = f.tiles[0, 0].result()
            del f
        log(args, {"bench": "peer-ours", "n": n, "tile": TILE, "median_s":
                   statistics.median(ours), "runs_s": ours,
                   "note": "includes making A's lower tiles from G on the workers"})
        best = None
        for c in (int(s) for s in args.chunks.split(",")):
            gd = da.from_array(g, chunks=(c, rank))
            a = (gd @ gd.T / rank + da.eye(n, chunks=c)).persist()
            wait(a)
            runs = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                lower = da.linalg.cholesky(a, lower=True).persist()
                wait(lower)
                runs.append(time.perf_counter() - t0)
                check = lower.blocks[0, 0].compute()
                del lower
            med = statistics.median(runs)
            log(args, {"bench": "peer-dask-array", "n": n, "chunk": c, "median_s": med,
                       "runs_s": runs, "first_tile_rel_to_ours":
                       rel(check[:TILE, :TILE] if c >= TILE else check,
                           l00[:c, :c] if c < TILE else l00),
                       "note": "A persisted on the cluster before the timer"})
            best = med if best is None else min(best, med)
            del a
        log(args, {"bench": "peer-ratio", "n": n,
                   "dask_array_best_over_ours": best / statistics.median(ours)})


# --- fault: SIGKILL one worker at about half of the factorisation --------------------------
def bench_fault(args):
    x, y, _, _ = mnist(args.n)
    t, _ = regression_targets(y, y)
    lc, client = local_cluster(2)
    with lc, client:
        warm(client, network())
        clean_s, clean = fit(x, t, client, jitter=1e-6)
        l_clean = clean.factor_.to_dense()
        a_clean = clean.alpha_
        clean.close()
        del clean
        victim = sorted(client.run(os.getpid).values())[0]
        killed = []

        def progress(stage, done, total):
            if not killed and done >= total // 2:
                os.kill(victim, signal.SIGKILL)
                killed.append((time.perf_counter(), done, total))

        gp = NNGPRegressor(network=network(), jitter=1e-6, tile=TILE, client=client,
                           progress=progress)
        t0 = time.perf_counter()
        gp.fit(x, t)
        fault_s = time.perf_counter() - t0
        same = bool(np.array_equal(gp.factor_.to_dense(), l_clean))
        log(args, {"bench": "fault", "n": args.n, "tile": TILE, "workers": 2,
                   "clean_s": clean_s, "killed_s": fault_s, "extra_s": fault_s - clean_s,
                   "killed_at": f"{killed[0][1]}/{killed[0][2]} factor tiles",
                   "killed_after_s": killed[0][0] - t0, "identical_factor": same,
                   "identical_alpha": bool(np.array_equal(gp.alpha_, a_clean))})


# --- per-task costs for the scaling model ---------------------------------------------------
def _noop(*_):
    return 0


def bench_tasks(args):
    from distributed import wait

    lc, client = local_cluster(2)
    with lc, client:
        futures = [client.submit(_noop, i, pure=False) for i in range(200)]  # warm
        wait(futures)
        count = 4000
        t0 = time.perf_counter()
        futures = [client.submit(_noop, i, pure=False) for i in range(count)]
        wait(futures)
        independent = (time.perf_counter() - t0) / count
        t0 = time.perf_counter()
        f = client.submit(_noop, -1, pure=False)
        for i in range(500):
            f = client.submit(_noop, f, i, pure=False)
        f.result()
        chain = (time.perf_counter() - t0) / 501
        log(args, {"bench": "task-overhead", "independent_s_per_task": independent,
                   "chain_s_per_task": chain, "workers": 2})
        a, b = client.run(os.getpid)  # noqa: F841 (two workers)
        workers = list(client.scheduler_info()["workers"])
        for tile in (512, 1024, 2048, 4096):
            arr = client.submit(np.ones, (tile, tile), workers=[workers[0]], pure=False)
            wait(arr)
            runs = []
            for i in range(3):
                t0 = time.perf_counter()
                moved = client.submit(np.sum, arr, workers=[workers[1]], pure=False)
                moved.result()
                runs.append(time.perf_counter() - t0)
                client.cancel(moved)
                # drop the replica so the next move is a transfer again
                client.run(lambda dask_worker, k=arr.key: dask_worker.state.tasks.get(k)
                           and None, workers=[workers[1]])
                arr2 = client.submit(np.ones, (tile, tile), workers=[workers[0]], pure=False)
                wait(arr2)
                arr = arr2
            log(args, {"bench": "transfer", "tile": tile, "bytes": 8 * tile * tile,
                       "median_s": statistics.median(runs), "runs_s": runs})
    # Single-thread tile operation rates (the worker's view: OPENBLAS_NUM_THREADS=1 there;
    # here the rates are measured in a worker process).
    lc, client = local_cluster(1)
    with lc, client:
        for tile in (512, 1024, 2048, 4096):
            log(args, {"bench": "tile-rates", "tile": tile, **client.submit(
                _tile_rates, tile, pure=False).result()})
        log(args, {"bench": "kernel-rate", **client.submit(_kernel_rate,
                                                              pure=False).result()})


def _tile_rates(b):
    from scipy.linalg import blas, lapack

    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((b, b)))
    c = np.asfortranarray(a @ a.T + b * np.eye(b))
    out = {}

    def timed(fn, flops):
        fn()
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        med = statistics.median(runs)
        return {"s": med, "gflops": flops / med / 1e9}

    out["gemm"] = timed(lambda: blas.dgemm(-1.0, a, a, beta=1.0, c=c, trans_b=1), 2 * b**3)
    out["syrk"] = timed(lambda: blas.dsyrk(-1.0, a, beta=1.0, c=c, lower=1), b**3)
    out["potrf"] = timed(lambda: lapack.dpotrf(c, lower=1, clean=1), b**3 / 3)
    l_ = np.asfortranarray(np.linalg.cholesky(c))
    out["trsm"] = timed(lambda: blas.dtrsm(1.0, l_, a, side=1, lower=1, trans_a=1), b**3)
    return out


def _kernel_rate():
    """Seconds per kernel entry of one 2048 x 2048 MNIST tile, single-threaded."""
    cluster._one_thread()
    x, _, _, _ = mnist(2 * TILE)
    net = network()
    cluster.kernel_tile((TILE, 2 * TILE), (0, TILE), net, x)
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        cluster.kernel_tile((TILE, 2 * TILE), (0, TILE), net, x)
        runs.append(time.perf_counter() - t0)
    return {"tile": TILE, "s_per_tile": statistics.median(runs),
            "s_per_entry": statistics.median(runs) / TILE**2, "d": x.shape[1]}


# --- MNIST 60000 through the distributed path ----------------------------------------------
def bench_mnist(args):
    x, y, xt, yt = mnist(args.n, 10000)
    common = dict(network=network(), jitter=args.jitter, standardize=False)
    out = {}
    paths = (("cluster", 2), ("in-process", 0)) if not args.only else ((args.only, 2),)
    for label, workers in paths:
        if label == "in-process":
            workers = 0
        lc, client = (local_cluster(workers, memory_limit=args.worker_memory)
                      if workers else (None, None))
        try:
            t0 = time.perf_counter()
            res = evaluate(x, y, xt, yt, client=client, **common)
            wall = time.perf_counter() - t0
            out[label] = res
            log(args, {"bench": "mnist", "path": label, "n_train": args.n, "n_test": 10000,
                       "workers": workers, "accuracy": res.accuracy, "mse": res.mse,
                       "jitter": res.jitter, "wall_s": wall,
                       "timings": {k: round(v, 2) for k, v in res.timings.items()}})
        finally:
            if client is not None:
                client.close()
                lc.close()
    if len(out) == 2:
        a, b = out["cluster"], out["in-process"]
        log(args, {"bench": "mnist-compare", "same_accuracy": a.accuracy == b.accuracy,
                   "same_predictions": bool(np.array_equal(a.predicted, b.predicted)),
                   "mean_rel": rel(a.mean, b.mean)})


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["correct", "overhead", "peer", "fault", "tasks", "mnist"])
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--chunks", default="2000,2500,4000,5000")
    p.add_argument("--jitter", default="absolute")
    p.add_argument("--only", default=None, help="mnist: run one path (cluster/in-process)")
    p.add_argument("--worker-memory", default="auto")
    p.add_argument("--log", default=str(ROOT / "bench" / "dask_results.jsonl"))
    args = p.parse_args()
    args.n = args.n or {"correct": 3000, "overhead": 20000, "peer": 20000, "fault": 12000,
                        "tasks": 0, "mnist": 60000}[args.what]
    print(f"bench_dask {args.what}: {env_line()}", flush=True)
    globals()[f"bench_{args.what}"](args)


if __name__ == "__main__":
    main()
