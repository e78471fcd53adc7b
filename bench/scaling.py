"""The scaling model of the Dask backend (issue 14; bench/scaling.md explains it).

Reads the per-task costs that ``bench/bench_dask.py tasks`` measured on this machine (tile
operation rates of one core, kernel seconds per entry, task overhead, tile transfer time)
from the JSON log, predicts the wall time of the GP fit (kernel tiles + blocked Cholesky) on
N workers of M cores, compares the predictions with every point ``bench_dask.py`` measured
(overhead, fault, mnist), and prints predictions for n = 60 000, 200 000 and 1 000 000.

    python bench/scaling.py [--log bench/dask_results.jsonl] [--tile 2048]

Model, for n, tile order b, nt = ceil(n / b) tile columns, P = N * M task slots:

    W    = nt t_potrf + nt(nt-1)/2 (t_trsm + t_syrk) + C(nt, 3) t_gemm
           + nt(nt+1)/2 b^2 s_kernel                          (work, seconds of one core)
    CP   = t_kernel_tile + nt (t_potrf + t_trsm + t_syrk + 3 (o + tau))   (critical path)
    Xfer = sum_k min(nt - k, 2 g_k / N) tiles per worker, g_k the updates of step k
           (a worker fetches each factor tile of panel k at most once and keeps it)
    T    = max(W / P + (1 - 1/P) CP + tasks * o / P,  Xfer * 8 b^2 / bandwidth,
               tasks * o_scheduler)

W / P + (1 - 1/P) CP is Graham's bound for a greedy list schedule.  On one machine the
transfers share the cores (localhost TCP: pickling and copies), so there Xfer * tau / P
is added to the compute term instead of overlapping.
"""

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Network bandwidth per worker node assumed for the predictions beyond this machine (10 GbE).
BANDWIDTH = 1.25e9
#: Scheduler throughput beyond this machine: the measured per-task cost here (one scheduler).


def load(path):
    recs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    by = {}
    for r in recs:
        by.setdefault(r["bench"], []).append(r)
    return by


class Model:
    def __init__(self, by, tile):
        rates = {r["tile"]: r for r in by["tile-rates"]}
        if tile not in rates:
            raise SystemExit(f"no tile-rates for tile {tile} in the log")
        r = rates[tile]
        self.b = tile
        self.t = {op: r[op]["s"] for op in ("gemm", "syrk", "potrf", "trsm")}
        self.s_kernel = by["kernel-rate"][-1]["s_per_entry"]
        ov = by["task-overhead"][-1]
        self.o = ov["independent_s_per_task"]  # scheduler + worker cost per task
        self.o_chain = ov["chain_s_per_task"]  # latency of a dependent task
        xfer = {x["tile"]: x["median_s"] for x in by["transfer"]}
        self.tau = xfer.get(tile, max(xfer.values()) * (tile / max(xfer)) ** 2)

    def counts(self, n):
        nt = math.ceil(n / self.b)
        return nt, {"kernel": nt * (nt + 1) // 2, "potrf": nt, "trsm": nt * (nt - 1) // 2,
                    "syrk": nt * (nt - 1) // 2, "gemm": math.comb(nt, 3)}

    def parts(self, n, workers, cores, local=True, bandwidth=BANDWIDTH):
        b = self.b
        nt, c = self.counts(n)
        t_kernel = b * b * self.s_kernel
        work = sum(c[op] * self.t[op] for op in self.t) + c["kernel"] * t_kernel
        tasks = sum(c.values())
        p = workers * cores
        hop = self.o_chain + (self.tau if workers > 1 else 0.0)
        cp = t_kernel + nt * (self.t["potrf"] + self.t["trsm"] + self.t["syrk"] + 3 * hop)
        # Tiles each worker fetches: per step k, at most the nt - k factor tiles of panel k,
        # and no more than the two per update it runs.
        fetched = 0.0
        if workers > 1:
            for k in range(nt):
                updates = math.comb(nt - k - 1, 2) + (nt - k - 1)
                fetched += min(nt - k, 2 * updates / workers)
        compute = work / p + (1 - 1 / p) * cp + tasks * self.o / p
        if local:  # the transfers use the same cores
            return {"T": compute + fetched * workers * self.tau / p, "W": work, "CP": cp,
                    "tasks": tasks, "fetched_tiles_per_worker": fetched}
        comm = fetched * 8 * b * b / bandwidth
        sched = tasks * self.o
        return {"T": max(compute, comm, sched), "compute": compute, "comm": comm,
                "scheduler": sched, "W": work, "CP": cp, "tasks": tasks,
                "bytes_per_task": 8 * b * b * 2 * (workers - 1) / workers}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--log", default=str(ROOT / "bench" / "dask_results.jsonl"))
    p.add_argument("--tile", type=int, default=2048)
    p.add_argument("--core-gflops", type=float, default=None,
                   help="predictions beyond this machine: scale every measured tile time so "
                   "that one core's DGEMM runs at this rate (default: as measured here)")
    args = p.parse_args()
    by = load(args.log)
    m = Model(by, args.tile)
    print(f"measured here (one core per task): tile {m.b}: " + ", ".join(
        f"{op} {s * 1e3:.0f} ms" for op, s in m.t.items())
        + f"; kernel {m.s_kernel * 1e9:.1f} ns/entry; task overhead {m.o * 1e3:.2f} ms "
        f"(independent), {m.o_chain * 1e3:.2f} ms (chain); tile transfer {m.tau * 1e3:.0f} ms")
    print("\nper tile order (one core): flops, bytes moved per gemm task (N > 1), task time")
    for r in sorted(by["tile-rates"], key=lambda r: r["tile"]):
        b = r["tile"]
        print(f"  b = {b:5d}: gemm {2 * b**3 / 1e9:7.1f} GFLOP in {r['gemm']['s']:.3f} s "
              f"({r['gemm']['gflops']:.1f} GFLOP/s), potrf {r['potrf']['gflops']:.1f}, "
              f"trsm {r['trsm']['gflops']:.1f}, syrk {r['syrk']['gflops']:.1f} GFLOP/s; "
              f"moves <= {2 * 8 * b * b / 1e6:.0f} MB")
    print("\nvalidation against the points measured by bench_dask.py (this machine):")
    worst = 0.0
    points = []
    for r in by.get("overhead", []):
        if r["workers"]:
            points.append((f"overhead n={r['n']}, {r['workers']} worker(s)", r["n"],
                           r["workers"], r["median_s"]))
    for r in by.get("fault", []):
        points.append((f"fault n={r['n']}, 2 workers, no kill", r["n"], 2, r["clean_s"]))
    for r in by.get("mnist", []):
        if r["path"] == "cluster":
            points.append((f"MNIST n={r['n_train']} fit, 2 workers", r["n_train"], 2,
                           r["timings"]["cholesky"] + r["timings"]["kernel"]))
    for label, n, workers, measured in points:
        pred = m.parts(n, workers, 1)["T"]
        err = pred / measured - 1
        worst = max(worst, abs(err))
        print(f"  {label}: predicted {pred:.1f} s, measured {measured:.1f} s, "
              f"error {100 * err:+.0f}%")
    if points:
        print(f"  worst |error|: {100 * worst:.0f}% (target: within 20%)")
    speed = (f"one core's DGEMM at {args.core_gflops:g} GFLOP/s" if args.core_gflops else
             "cores as fast as one here")
    print(f"\npredictions beyond this machine ({speed}, {BANDWIDTH / 1e9:g} GB/s per node, "
          "one scheduler at the task cost measured here):")
    for n in (60_000, 200_000, 1_000_000):
        for b in sorted({m.b, 4096, 8192}):
            mb = Model(by, b) if b in {r["tile"] for r in by["tile-rates"]} else None
            if mb is None:
                continue
            if args.core_gflops:
                scale = (2 * b**3 / mb.t["gemm"] / 1e9) / args.core_gflops
                mb.t = {op: t * scale for op, t in mb.t.items()}
                mb.s_kernel *= scale
            for workers, cores in ((1, 2), (8, 32), (64, 32)):
                q = mb.parts(n, workers, cores, local=False)
                bound = max(("compute", "comm", "scheduler"), key=lambda k: q[k])
                print(f"  n = {n:>9,}, b = {b}, {workers:3d} x {cores:2d} cores: "
                      f"{q['T'] / 3600:8.2f} h  ({bound}-bound; tasks {q['tasks']:.3g}, "
                      f"compute {q['compute'] / 3600:.2f} h, transfers {q['comm'] / 3600:.2f}"
                      f" h, scheduler {q['scheduler'] / 3600:.2f} h; packed L "
                      f"{4 * n * n / 1e9:.0f} GB)")


if __name__ == "__main__":
    sys.exit(main())
