"""Random architectures against neural-tangents 0.6.5 (issue #20), disagreements arbitrated
by Monte Carlo over finite networks.

Draws --count networks of the grammar with ``tests/random_arch.random_network`` (vectors and
4x4x2 images; Dense, Conv, AvgPool, Flatten, GlobalAvgPool, LayerNorm, residual and
concatenated branches, an Activation after a Flatten or a FanInConcat; both
parameterisations; relu, erf and gelu, which nngp-lut tabulates like any activation), computes
the NNGP and NTK of --n inputs each with nngp-lut (fused) and with neural-tangents in its
bench venv (bench/nt_peer_random.py; float64, closed forms for relu, erf and gelu), and
prints how many agree: the error of an entry is |K - K_peer| / max |K_peer|; the target is
1e-8 for relu-only networks and 1e-6 otherwise.

neural-tangents applies an activation after Flatten or FanInConcat to the mean covariance
(F of the mixture's mean), which is not the finite network's kernel (test_exact.py).  Each
network is therefore also given to the peer in nngp-lut's exact form
(``layers.exact_form``: the activation moved before the Flatten, or into each branch, where
the finite network is the same function), and compared with that; where the two texts
differ, the peer's value on the original text is printed beside Monte Carlo (finite networks
of width --mc-width, --mc-draws draws: the mean and its standard error) for the first
--arbitrate of them.

    python bench/bench_random_arch.py [--count 240] [--n 4] [--peer-python PATH]
        [--mc-width 1024] [--mc-draws 32] [--arbitrate 3]
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402

from nngp_lut.kernel import Network  # noqa: E402
from nngp_lut.kernel.layers import exact_form  # noqa: E402
from tests.random_arch import random_inputs, random_network  # noqa: E402

PEER_DEFAULT = Path.home() / ".cache/nngp-lut-bench/nt-venv/bin/python"
TOL_RELU, TOL_OTHER = 1e-8, 1e-6


def err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def run_peer(peer, jobs, tmp):
    path = Path(tmp) / "jobs.json"
    path.write_text(json.dumps(jobs))
    out = Path(tmp) / "peer.npz"
    subprocess.run([str(peer), str(ROOT / "bench" / "nt_peer_random.py"), "--jobs", str(path),
                    "--out", str(out)], check=True)
    return dict(np.load(out))


def monte_carlo(layer, x, width, draws):
    from nngp_lut import montecarlo as mc

    runs = list(mc._per_draw(layer, x, None, width, draws, 0, ("nngp", "ntk"), 1, None))
    return {kind: (np.mean([r[kind] for r in runs], 0),
                   np.std([r[kind] for r in runs], 0, ddof=1) / math.sqrt(draws))
            for kind in ("nngp", "ntk")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=240)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--peer-python", default=str(PEER_DEFAULT))
    ap.add_argument("--mc-width", type=int, default=1024)
    ap.add_argument("--mc-draws", type=int, default=32)
    ap.add_argument("--arbitrate", type=int, default=3)
    args = ap.parse_args()

    t0 = time.perf_counter()
    cases, jobs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.count):
            layer, kind, used = random_network(seed)
            x = random_inputs(kind, args.n, seed)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                k, t = Network(layer).kernel(x, get=("nngp", "ntk"))
            xpath = Path(tmp) / f"x{seed}.npy"
            np.save(xpath, x)
            exact, original = repr(exact_form(layer)), repr(layer)
            cases.append(dict(seed=seed, layer=layer, x=x, k=k, t=t, used=used,
                              moved=exact != original, warned=len(caught),
                              job=len(jobs)))
            jobs.append({"arch": exact, "x": str(xpath)})
            if exact != original:
                jobs.append({"arch": original, "x": str(xpath)})
        ours_s = time.perf_counter() - t0
        peer = run_peer(args.peer_python, jobs, tmp)
    print(f"{args.count} random architectures, {args.n} inputs each; nngp-lut {ours_s:.1f} s "
          "(tables cached), neural-tangents 0.6.5 float64 in its bench venv")

    passed, failed, refused, moved = 0, [], [], []
    for c in cases:
        i = c["job"]
        tol = TOL_RELU if c["used"] <= {"relu"} else TOL_OTHER
        if f"error_{i}" in peer:
            refused.append((c, str(peer[f"error_{i}"])))
            continue
        e = max(err(c["k"], peer[f"nngp_{i}"]), err(c["t"], peer[f"ntk_{i}"]))
        c["error"] = e
        (failed.append(c) if e > tol else None)
        passed += e <= tol
        if c["moved"]:
            c["peer_original"] = (str(peer[f"error_{i + 1}"]) if f"error_{i + 1}" in peer
                                  else (peer[f"nngp_{i + 1}"], peer[f"ntk_{i + 1}"]))
            moved.append(c)
    relu_only = sum(c["used"] <= {"relu"} for c in cases)
    print(f"agree within tolerance (relu-only 1e-8: {relu_only} networks; others 1e-6): "
          f"{passed} of {args.count}; disagree: {len(failed)}; refused by the peer: "
          f"{len(refused)}; warned (layerwise fallback): {sum(c['warned'] > 0 for c in cases)}")
    worst = max((c for c in cases if "error" in c), key=lambda c: c["error"])
    print(f"largest error: {worst['error']:.1e} (seed {worst['seed']}: {worst['layer']!r})")
    for c in failed:
        print(f"  DISAGREE seed {c['seed']} error {c['error']:.1e}: {c['layer']!r}")
    for c, why in refused:
        print(f"  peer refused seed {c['seed']}: {why}")

    refusals = sorted({p for c in moved if isinstance(p := c["peer_original"], str)})
    valued = [c for c in moved if not isinstance(c["peer_original"], str)]
    print(f"\n{len(moved)} networks have an Activation after Flatten or FanInConcat "
          f"(compared above in their exact form); on their original text the peer refuses "
          f"{len(moved) - len(valued)} ({'; '.join(refusals) or '-'}) and computes "
          f"{len(valued)}")
    for c in valued:
        c["peer_diff"] = max(err(c["peer_original"][0], c["k"]),
                             err(c["peer_original"][1], c["t"]))
        print(f"  seed {c['seed']}: the peer on the original text differs by "
              f"{c['peer_diff']:.1e}")
    print(f"Monte Carlo arbitration (width {args.mc_width}, {args.mc_draws} draws) of the "
          f"first {min(args.arbitrate, len(moved))}: the largest |nngp-lut - mean| / SE "
          "over the entries (and the peer's, where it computes the original)")
    for c in moved[:args.arbitrate]:
        mc = monte_carlo(c["layer"], c["x"], args.mc_width, args.mc_draws)
        line = []
        for index, (kind, ours) in enumerate((("nngp", c["k"]), ("ntk", c["t"]))):
            mean, se = mc[kind]
            j = np.unravel_index(np.argmax(np.abs(ours - mean) / se), ours.shape)
            text = (f"{kind} {np.max(np.abs(ours - mean) / se):.1f} (entry "
                    f"{tuple(map(int, j))}: MC {mean[j]:.4f} +- {se[j]:.4f}, nngp-lut "
                    f"{ours[j]:.4f}")
            if "peer_diff" in c:
                theirs = c["peer_original"][index]
                text += (f", peer {theirs[j]:.4f}, peer's largest "
                         f"{np.max(np.abs(theirs - mean) / se):.1f}")
            line.append(text + ")")
        print(f"  seed {c['seed']}: " + "; ".join(line))

if __name__ == "__main__":
    main()
