"""A real kill and resume of an out-of-core `nngp-lut predict` (issue #4).

Runs the command on MNIST (the paper's split, class-balanced --n-train subset) under a small
memory budget so that it runs out of core, sends SIGKILL once the factorisation has finished
--kill-after tile columns, resumes with --resume, and compares the result with an
uninterrupted run: accuracy, MSE and jitter must be identical.

    python bench/bench_resume.py [--n-train 10000] [--memory 300MB] [--kill-after 3]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nngp_lut.data import mnist_paper_split  # noqa: E402

MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--memory", default="300MB")
    ap.add_argument("--kill-after", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        split = mnist_paper_split(MNIST)
        data = tmp / "mnist.npz"
        np.savez(data, x_train=split.x_train, y_train=split.y_train, x_test=split.x_test,
                 y_test=split.y_test)
        cmd = [sys.executable, "-m", "nngp_lut.cli", "predict", "--data", str(data),
               "--n-train", str(args.n_train), "--phi", "relu", "--depth", "7",
               "--weight-var", "0.61", "--bias-var", "0.07", "--memory", args.memory,
               "--scratch", str(tmp / "scratch"), "--json", "-q"]

        t0 = time.perf_counter()
        full = subprocess.run(cmd, capture_output=True, text=True, check=True)
        t_full = time.perf_counter() - t0
        full = json.loads(full.stdout.splitlines()[-1])

        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        done = 0
        while proc.poll() is None:
            states = list((tmp / "scratch").glob("nngp-lut-*/state.json"))
            if states:
                try:
                    done = json.loads(states[0].read_text())["panels_done"]
                except (OSError, ValueError):
                    pass
            if done >= args.kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait()
        t_killed = time.perf_counter() - t0
        if done < args.kill_after:
            sys.exit("the run finished before it could be killed; use a larger --n-train")
        tiles = len(list((tmp / "scratch").glob("nngp-lut-*/*.npy")))

        t0 = time.perf_counter()
        resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True,
                                 check=True)
        t_resumed = time.perf_counter() - t0
        resumed = json.loads(resumed.stdout.splitlines()[-1])
        left = list((tmp / "scratch").iterdir())

    print(f"n_train {args.n_train}, memory {args.memory} (out of core), relu 7-0.61-0.07")
    print(f"uninterrupted: {t_full:.1f} s, accuracy {full['accuracy']:.4f}, mse "
          f"{full['mse']:.8f}, jitter {full['jitter']:g}")
    print(f"killed (SIGKILL) after {done} finished tile columns at {t_killed:.1f} s "
          f"({tiles} tile files kept)")
    print(f"resumed: {t_resumed:.1f} s, accuracy {resumed['accuracy']:.4f}, mse "
          f"{resumed['mse']:.8f}, jitter {resumed['jitter']:g}")
    same = all(full[k] == resumed[k] for k in ("accuracy", "mse", "jitter"))
    print(f"identical results: {same}; scratch left after the resumed run: {len(left)} entries")


if __name__ == "__main__":
    main()
