"""Model selection: a grid search over depth, weight_var and bias_var scored on a validation
set, the log marginal likelihood, and its optimisation.

The paper (Lee et al. 2018, Section 3) picks (depth, weight_var, bias_var) on a validation set
from weight_var in linspace(0.1, 5, 30) x bias_var in linspace(0, 2, 30) at several depths.
:func:`grid_search` shares everything it can: the input Grams (train x train, validation x
train) are computed once; each (weight_var, bias_var) runs one fused kernel pass that returns
every depth at once; the table is loaded once.  Rows are appended to a CSV file as soon as a
setting is scored, so an interrupted search resumes where it stopped.
"""

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.optimize

from . import _files, linalg
from .data import DataError, is_labels, standardize_rows, validate_inputs
from .errors import NNGPError, OutputExists, ParameterError
from .gp import evaluate, jitter_ladder, log_evidence, regression_targets
from .kernel import deep_network
from .tables import as_table

#: Columns of the results CSV, in order.
COLUMNS = ("phi", "depth", "weight_var", "bias_var", "val_accuracy", "val_mse",
           "log_marginal_likelihood", "jitter")
#: The paper's grid (Section 3 and Table 1).
PAPER_DEPTHS = (1, 2, 3, 5, 7, 10, 20, 50, 100)
PAPER_WEIGHT_VAR = "0.1:5:30"
PAPER_BIAS_VAR = "0:2:30"


def parse_grid(spec):
    """Values from "a:b:n" (n evenly spaced values from a to b), "x,y,z" or one number."""
    text = str(spec).strip()
    try:
        if text.count(":") == 2:
            a, b, n = text.split(":")
            if int(n) < 1:
                raise ValueError
            return np.linspace(float(a), float(b), int(n))
        return np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise ParameterError(f"cannot read the grid {spec!r}; write a:b:n (n values from a to b) "
                         "or a comma-separated list") from None


def parse_depths(spec):
    """Depths from "1,2,3,5" (non-negative integers)."""
    try:
        depths = sorted({int(v) for v in str(spec).split(",")})
    except ValueError:
        raise ParameterError(f"cannot read the depths {spec!r}; write e.g. 1,2,3,5") from None
    if depths[0] < 0:
        raise ParameterError("depths must be >= 0")
    return depths


@dataclass
class Problem:
    """Training and validation data prepared once: inputs, targets, Grams."""

    x_train: np.ndarray
    x_val: np.ndarray
    t_train: np.ndarray  # targets (n, outputs): shifted one-hot for classification
    t_val: np.ndarray
    labels_val: np.ndarray  # integer labels (classification) or None
    gram_train: np.ndarray
    gram_val: np.ndarray

    @classmethod
    def make(cls, x_train, y_train, x_val, y_val, standardize=True):
        prep = standardize_rows if standardize else validate_inputs
        xt, xv = prep(x_train, "x_train"), prep(x_val, "x_val")
        if xv.shape[1] != xt.shape[1]:
            raise DataError(f"x_train has {xt.shape[1]} features but x_val has {xv.shape[1]}")
        tt, tv = regression_targets(y_train, y_val)
        labels = np.asarray(y_val) if is_labels(y_train) else None
        return cls(xt, xv, tt, tv, labels, xt @ xt.T, xv @ xt.T)


def reachable_depth(table, x, depth, weight_var, bias_var):
    """The deepest l <= depth whose recursion keeps every input's variance inside the
    table's domain on layers 0..l-1 (with bias_var = 0 and a contracting weight_var the
    variances of a saturating phi decay geometrically towards 0 and leave any table)."""
    if table.homogeneous:
        return depth
    q = bias_var + weight_var * np.einsum("ij,ij->i", x, x) / x.shape[1]
    for layer in range(depth):
        if q.min() < table.variance_min or q.max() > table.variance_max:
            return layer
        q = bias_var + weight_var * table.second_moment(q)
    return depth


def score_setting(problem, table, depths, weight_var, bias_var, jitter="absolute"):
    """One row per depth for one (weight_var, bias_var): every depth from one kernel pass.

    Depths the table cannot reach (see :func:`reachable_depth`) get rows of NaN scores.
    """
    p = problem
    top = min(reachable_depth(table, p.x_train, max(depths), weight_var, bias_var),
              reachable_depth(table, p.x_val, max(depths), weight_var, bias_var))
    unreachable = [{"depth": d, "weight_var": float(weight_var), "bias_var": float(bias_var),
                    **{c: float("nan") for c in COLUMNS[4:]}} for d in depths if d > top]
    depths = [d for d in depths if d <= top]
    if not depths:
        return unreachable
    net = deep_network(table, max(depths), weight_var, bias_var)
    # Only the wanted depths are stored; the search holds them in RAM by design.
    k_train = net.kernel(p.x_train, depths=depths, gram=p.gram_train, memory=2**62)
    k_val = net.kernel(p.x_val, p.x_train, depths=depths, gram=p.gram_val, memory=2**62)
    n = p.t_train.shape[0]
    rows = []
    for slot, depth in enumerate(depths):
        k = k_train[slot]
        factor = linalg.cholesky(lambda r, c: k[r[0]:r[1], c[0]:c[1]], n,
                                 jitters=jitter_ladder(jitter, float(np.mean(np.diag(k)))))
        alpha = factor.solve(p.t_train)
        mean = k_val[slot] @ alpha
        rows.append({
            "depth": depth, "weight_var": float(weight_var), "bias_var": float(bias_var),
            "val_accuracy": (float(np.mean(np.argmax(mean, 1) == p.labels_val))
                             if p.labels_val is not None else float("nan")),
            "val_mse": float(np.mean((mean - p.t_val) ** 2)),
            "log_marginal_likelihood": log_evidence(p.t_train, alpha, factor.logdet()),
            "jitter": factor.jitter})
    return rows + unreachable


def grid_search(x_train, y_train, x_val, y_val, *, phi, depths=PAPER_DEPTHS,
                weight_vars=PAPER_WEIGHT_VAR, bias_vars=PAPER_BIAS_VAR, standardize=True,
                jitter="absolute", out=None, resume=False, progress=None):
    """Score every (depth, weight_var, bias_var) on the validation set.

    Parameters
    ----------
    x_train, y_train, x_val, y_val
        Training and validation data (integer labels: classification).
    phi : str, Activation, Table or path
        The activation or its table.
    depths, weight_vars, bias_vars
        Grids: sequences, or strings for :func:`parse_depths` / :func:`parse_grid`.
    out : path, optional
        CSV file; each setting's rows are appended as soon as it is scored.  It is locked
        for the search (a second search on it is refused with :class:`~nngp_lut.errors.Busy`).
    resume : bool
        Keep the rows already in ``out`` and skip their settings (a line torn by a kill,
        and the rows of a setting scored at only some of the depths, are dropped).
    progress : callable, optional
        ``progress(done, total)`` in (weight_var, bias_var) settings.

    Returns
    -------
    list of dict
        One row per (depth, weight_var, bias_var) with the columns of :data:`COLUMNS`.
    """
    depths = parse_depths(depths) if isinstance(depths, str) else sorted(set(depths))
    weight_vars = parse_grid(weight_vars) if isinstance(weight_vars, str) else weight_vars
    bias_vars = parse_grid(bias_vars) if isinstance(bias_vars, str) else bias_vars
    if out is None:
        return _grid_search(None, x_train, y_train, x_val, y_val, phi, depths, weight_vars,
                            bias_vars, standardize, jitter, resume, progress)
    if not resume and Path(out).exists():
        raise OutputExists(f"{out} exists; pass --resume to continue that search, or "
                           "remove it")
    with _files.lock(out, what=f"the results file {out}"):
        return _grid_search(Path(out), x_train, y_train, x_val, y_val, phi, depths,
                            weight_vars, bias_vars, standardize, jitter, resume, progress)


def _grid_search(out, x_train, y_train, x_val, y_val, phi, depths, weight_vars, bias_vars,
                 standardize, jitter, resume, progress):
    table = as_table(phi)
    problem = Problem.make(x_train, y_train, x_val, y_val, standardize)
    settings = [(float(w), float(b)) for w in weight_vars for b in bias_vars]
    rows = _resume_rows(out, table.activation_name, depths) if out and resume else []
    have = {}
    for r in rows:
        have.setdefault((r["weight_var"], r["bias_var"]), set()).add(r["depth"])
    done = {key for key, got in have.items() if set(depths) <= got}
    writer = _Appender(out) if out is not None else None
    scored = len(done & set(settings))
    try:
        for count, (w, b) in enumerate(settings, 1):
            if (w, b) not in done:
                new = [{"phi": table.activation_name, **r}
                       for r in score_setting(problem, table, depths, w, b, jitter)]
                rows += new
                if writer:
                    writer.append(new)
                scored += 1
            if progress:
                progress(count, len(settings))
    except BaseException as exc:
        if writer:
            exc.add_note(f"kept: {scored} of {len(settings)} settings scored, in {out} "
                         "(continue with resume=True, --resume)")
        raise
    wanted = set(settings)
    return [r for r in rows if (r["weight_var"], r["bias_var"]) in wanted
            and r["depth"] in depths]


def best_row(rows):
    """The best setting on validation: highest accuracy (classification; ties: lower MSE),
    else lowest MSE.  Rows without scores (unreachable depths) are ignored."""
    rows = [r for r in rows if not math.isnan(r["val_mse"])]
    if not rows:
        raise NNGPError("no setting of the search could be scored (every depth was outside "
                        "the table's domain)")
    classification = not math.isnan(rows[0]["val_accuracy"])
    key = ((lambda r: (-r["val_accuracy"], r["val_mse"])) if classification
           else (lambda r: r["val_mse"]))
    return min(rows, key=key)


def test_best(rows, x_train, y_train, x_test, y_test, *, phi, standardize=True,
              jitter="absolute", **kwargs):
    """Fit the best validation setting on the training set and score the test set."""
    best = best_row(rows)
    return best, evaluate(x_train, y_train, x_test, y_test, phi=phi, depth=best["depth"],
                          weight_var=best["weight_var"], bias_var=best["bias_var"],
                          standardize=standardize, jitter=jitter, **kwargs)


class _Appender:
    """Appends rows to a CSV file (header first), flushed to disk after every setting."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists() or self.path.stat().st_size == 0:
            _files.write_bytes(self.path, _csv_text([COLUMNS]).encode())

    def append(self, rows):
        try:
            with open(self.path, "a", newline="") as f:
                f.write(_csv_text([[r[c] if isinstance(r[c], str) else repr(r[c])
                                    for c in COLUMNS] for r in rows]))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise _files.os_failure(exc, self.path, "append to") from None


def _csv_text(lines):
    buf = io.StringIO()
    csv.writer(buf).writerows(lines)
    return buf.getvalue()


def read_results(path):
    """The rows of a results CSV, and whether every line was whole (a kill mid-write can
    leave a torn last line, which is skipped)."""
    rows, whole = [], True
    try:
        with open(path, newline="") as f:
            text = f.read()
    except OSError as exc:
        raise _files.os_failure(exc, path, "read") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a results file of nngp-lut search (not text)") \
            from None
    if text and not text.endswith("\n"):
        # Rows are written whole with their newline: a last line without one was cut by a
        # kill, even if what is left of it still parses (1e-10 cut to 1e-1).
        text, whole = text[:text.rfind("\n") + 1], False
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return rows, whole
    if tuple(header) != COLUMNS:
        raise DataError(f"{path} is not a results file of nngp-lut search (its header "
                        f"is {','.join(header)[:80]})")
    for line in reader:
        try:
            r = dict(zip(COLUMNS, line, strict=True))
            rows.append({"phi": r["phi"], "depth": int(r["depth"]),
                         **{c: float(r[c]) for c in COLUMNS[2:]}})
        except (ValueError, TypeError):
            whole = False
    return rows, whole


def _resume_rows(path, phi_name, depths):
    """Rows of an earlier search of phi_name.  A torn line, and the rows of a setting
    scored at only some of ``depths`` (it is scored again), are dropped from the file too."""
    path = Path(path)
    if not path.exists():
        return []
    rows, whole = read_results(path)
    other = {r["phi"] for r in rows} - {phi_name}
    if other:
        raise ParameterError(f"{path} holds a search of {other.pop()}, not {phi_name}; "
                             "use another --out")
    have = {}
    for r in rows:
        have.setdefault((r["weight_var"], r["bias_var"]), set()).add(r["depth"])
    partial = {key for key, got in have.items() if not set(depths) <= got}
    kept = [r for r in rows if not ((r["weight_var"], r["bias_var"]) in partial
                                    and r["depth"] in depths)]
    if not whole or len(kept) != len(rows):
        lines = [COLUMNS] + [[r[c] if isinstance(r[c], str) else repr(r[c]) for c in COLUMNS]
                             for r in kept]
        _files.write_bytes(path, _csv_text(lines).encode())
    return kept


def log_marginal_likelihood(x, y, *, phi, depth, weight_var, bias_var, standardize=True,
                            jitter="absolute"):
    """log p(t | X) of regression targets (or shifted one-hot targets of integer labels)
    under the NNGP prior (Rasmussen & Williams, eq. 2.30), summed over outputs."""
    p = Problem.make(x, y, x[:1], np.asarray(y)[:1], standardize)
    return score_setting(p, as_table(phi), [depth], weight_var, bias_var,
                         jitter)[0]["log_marginal_likelihood"]


def optimize_marginal_likelihood(x, y, *, phi, depth, weight_var=1.0, bias_var=0.1,
                                 standardize=True, jitter="absolute",
                                 bounds=((0.01, 100.0), (1e-6, 10.0)), step=1e-4):
    """Maximise the log marginal likelihood over (weight_var, bias_var) at one depth.

    L-BFGS-B over (ln weight_var, ln bias_var) within ``bounds``, with central finite
    differences of step ``step`` in log space (the kernel is a smooth function of both
    variances; the table's interpolation error, ~1e-7, is far below the step's effect).

    Returns
    -------
    dict
        weight_var, bias_var, log_marginal_likelihood, evaluations, converged.
    """
    table = as_table(phi)
    p = Problem.make(x, y, x[:1], np.asarray(y)[:1], standardize)
    cache = {}

    def f(theta):
        key = tuple(theta)
        if key not in cache:
            w, b = np.exp(theta)
            cache[key] = -score_setting(p, table, [depth], w, b,
                                        jitter)[0]["log_marginal_likelihood"]
        return cache[key]

    lo = np.log([bounds[0][0], bounds[1][0]])
    hi = np.log([bounds[0][1], bounds[1][1]])

    def grad(theta):
        g = np.empty(2)
        for i in range(2):
            e = np.zeros(2)
            e[i] = step
            up, down = np.minimum(theta + e, hi), np.maximum(theta - e, lo)
            g[i] = (f(up) - f(down)) / (up[i] - down[i])
        return g

    theta0 = np.clip(np.log([weight_var, max(bias_var, bounds[1][0])]), lo, hi)
    res = scipy.optimize.minimize(f, theta0, jac=grad, method="L-BFGS-B",
                                  bounds=list(zip(lo, hi)))
    w, b = np.exp(res.x)
    return {"weight_var": float(w), "bias_var": float(b),
            "log_marginal_likelihood": float(-res.fun), "evaluations": len(cache),
            "converged": bool(res.success)}
