"""neural-tangents 0.6.5 kernels of a list of architectures in nngp-lut's ``--arch`` text,
mapped onto ``stax`` by bench/nt_peer_conv.py's Builder (every layer without a declared width
512 wide, float64).

Run with the bench-only venv of bench/envs/neural_tangents.sh (this script does not import
nngp_lut); bench/bench_random_arch.py calls it once for the whole list:

    PY=$(NT_LITE=1 bash bench/envs/neural_tangents.sh | tail -1)
    $PY bench/nt_peer_random.py --jobs jobs.json --out kernels.npz

``jobs.json`` is a list of {"arch": TEXT, "x": "inputs.npy"}; kernel i is saved as
``nngp_i`` and ``ntk_i``, or ``error_i`` (one line) where the peer refuses the network.
"""

import argparse
import json
import warnings

from nt_peer_conv import Builder, np  # noqa: E402  (sets up jax in float64 on the CPU)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # "FanIn layers assume independent inputs", per call
    out = {}
    with open(args.jobs) as f:
        jobs = json.load(f)
    for i, job in enumerate(jobs):
        x = np.load(job["x"])
        try:
            kernel_fn = Builder(x.ndim, 512, 25).build(job["arch"])[2]
            nngp, ntk = kernel_fn(x, None, ("nngp", "ntk"))
            out[f"nngp_{i}"], out[f"ntk_{i}"] = np.asarray(nngp), np.asarray(ntk)
        except (Exception, SystemExit) as exc:  # the peer refuses some networks: say which
            out[f"error_{i}"] = np.array(f"{type(exc).__name__}: {exc}".splitlines()[0])
    np.savez(args.out, **out)


if __name__ == "__main__":
    main()
