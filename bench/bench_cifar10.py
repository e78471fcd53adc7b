"""The paper's Table 1, CIFAR-10 rows: exact NNGP test accuracy on CIFAR-10, beside the
paper's (ReLU GP: 1k 0.3608, 10k 0.4780, 45k 0.5566).

It needs the CIFAR-10 python distribution, which this project does not ship or download:
point it at ``cifar-10-python.tar.gz`` or its folder ``cifar-10-batches-py/``
(https://www.cs.toronto.edu/~kriz/cifar.html).  Give each row's setting as
N:PHI:DEPTH-WEIGHT_VAR-BIAS_VAR, e.g. ``--setting 1000:relu:7-3.0-0.5`` (the paper's Table 1
lists depth-weight_var-bias_var for every row; copy them from there).

Training sets: below 45000, the paper's class-balanced subset (the first N/10 images of each
class of the training batches, shuffled with RandomState(9999)); at 45000, the first 45000
training images (the paper holds 5000 out for validation; which 5000 is an assumption here).
Test set: the 10000 test images.  Inputs are standardised per example, as in the paper's code.

    python bench/bench_cifar10.py --data PATH --setting 1000:relu:D-W-B [--setting ...]
                                  [--n-test M] [--memory auto] [--scratch DIR] [--json OUT]
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nngp_lut import paper  # noqa: E402
from nngp_lut.data import balanced_subset, load_dataset  # noqa: E402
from nngp_lut.gp import evaluate  # noqa: E402


def parse_setting(text):
    try:
        n, phi, rest = text.split(":")
        depth, w, b = rest.split("-")
        return int(n), phi, int(depth), float(w), float(b)
    except ValueError:
        raise SystemExit(f"cannot read --setting {text!r}; write N:PHI:DEPTH-W-B") from None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="cifar-10-python.tar.gz or its folder")
    ap.add_argument("--setting", action="append", required=True, type=parse_setting,
                    help="N:PHI:DEPTH-WEIGHT_VAR-BIAS_VAR (repeatable)")
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--memory", default="auto")
    ap.add_argument("--scratch", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    print("inputs standardised per example (the paper's convention; the library's default "
          "is off)", file=sys.stderr, flush=True)
    d = load_dataset(args.data)
    x_test, y_test = d.x_test[:args.n_test], d.y_test[:args.n_test]
    rows = []
    for n, phi, depth, w, b in args.setting:
        idx = (slice(0, n) if n >= 45000 else balanced_subset(d.y_train, n))
        t0 = time.perf_counter()
        res = evaluate(d.x_train[idx], d.y_train[idx], x_test, y_test, phi=phi, depth=depth,
                       weight_var=w, bias_var=b, standardize=paper.STANDARDIZE,
                       memory=args.memory, scratch=args.scratch)
        ref = paper.TABLE1_CIFAR10_RELU_ACCURACY.get(n) if phi == "relu" else None
        rows.append(dict(n_train=n, phi=phi, setting=f"{depth}-{w:g}-{b:g}", paper=ref,
                         accuracy=res.accuracy, mse=res.mse, jitter=res.jitter,
                         wall=time.perf_counter() - t0))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"{'train':>6} {'phi':<5} {'setting':<14} {'paper':>7} {'ours':>7} {'jitter':>7} "
          f"{'wall s':>7}")
    for r in rows:
        ref = f"{r['paper']:7.4f}" if r["paper"] is not None else f"{'-':>7}"
        print(f"{r['n_train']:>6} {r['phi']:<5} {r['setting']:<14} {ref} {r['accuracy']:7.4f} "
              f"{r['jitter']:7.0e} {r['wall']:7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
