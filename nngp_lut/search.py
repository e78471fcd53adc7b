"""Model selection: a grid search over depth, weight_var and bias_var scored on a validation
set, the log marginal likelihood, and its optimisation.

The paper (Lee et al. 2018, Section 3) picks (depth, weight_var, bias_var) on a validation set
from weight_var in linspace(0.1, 5, 30) x bias_var in linspace(0, 2, 30) at several depths.
:func:`grid_search` shares everything it can: the input Grams (train x train, validation x
train) are computed once; each (weight_var, bias_var) runs one fused kernel pass that returns
every depth at once; the table is loaded once.  Rows are appended to a CSV file as soon as a
setting is scored, so an interrupted search resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.optimize

from . import _files, linalg, paper
from .data import DataError, is_labels, standardize_rows, validate_inputs
from .errors import MemoryBudgetError, NNGPError, OutputExists, ParameterError
from .gp import evaluate, jitter_ladder, log_evidence, regression_targets
from .kernel import deep_network
from .kernel.network import KINDS
from .tables import as_table

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from distributed import Client

    from numpy.typing import ArrayLike

    from ._typing import PathLike, PhiLike
    from .gp import Result
    from .tables import Table

__all__ = ["COLUMNS", "OUTSIDE_DOMAIN", "PAPER_BIAS_VAR", "PAPER_DEPTHS", "PAPER_WEIGHT_VAR",
           "Problem", "best_row", "grid_search", "log_marginal_likelihood",
           "optimize_marginal_likelihood", "optimize_search", "parse_depths", "parse_grid",
           "read_results", "reachable_depth", "score_setting", "test_best"]

#: Columns of the results CSV, in order.
COLUMNS = ("phi", "depth", "weight_var", "bias_var", "val_accuracy", "val_mse",
           "log_marginal_likelihood", "jitter", "kernel")
#: The columns of files written before the NTK (their kernel is the NNGP).
COLUMNS_NNGP_ONLY = COLUMNS[:-1]
#: The paper's grid (Section 3 and Table 1), from :mod:`nngp_lut.paper`.
PAPER_DEPTHS = paper.DEPTHS
PAPER_WEIGHT_VAR = paper.WEIGHT_VAR_GRID
PAPER_BIAS_VAR = paper.BIAS_VAR_GRID


def parse_grid(spec: str | float) -> np.ndarray:
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


def parse_depths(spec: str | int) -> list[int]:
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
    def make(cls, x_train, y_train, x_val, y_val, standardize=False):
        prep = standardize_rows if standardize else validate_inputs
        xt, xv = prep(x_train, "x_train"), prep(x_val, "x_val")
        if xv.shape[1] != xt.shape[1]:
            raise DataError(f"x_train has {xt.shape[1]} features but x_val has {xv.shape[1]}")
        tt, tv = regression_targets(y_train, y_val)
        labels = np.asarray(y_val) if is_labels(y_train) else None
        return cls(xt, xv, tt, tv, labels, xt @ xt.T, xv @ xt.T)


def reachable_depth(table: Table, x: np.ndarray, depth: int, weight_var: float,
                    bias_var: float) -> int:
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


def score_setting(problem: Problem, table: Table, depths: Sequence[int], weight_var: float,
                  bias_var: float, jitter: str | float = "absolute",
                  memory: int | str = "auto", kernel: str = "nngp") -> list[dict]:
    """One row per depth for one (weight_var, bias_var): every depth from one kernel pass.

    ``kernel="ntk"`` scores the NTK's gradient-descent ensemble instead of the NNGP's
    posterior (its marginal likelihood is NaN: the NTK is not a prior covariance).

    Depths the table cannot reach (see :func:`reachable_depth`) get rows of NaN scores.
    The kernels of every depth (train x train and validation x train) are held in RAM with
    the factor of one of them; ``memory`` ("auto", "8GB", bytes) bounds them all, and a
    larger problem raises MemoryError with advice.
    """
    p = problem
    top = min(reachable_depth(table, p.x_train, max(depths), weight_var, bias_var),
              reachable_depth(table, p.x_val, max(depths), weight_var, bias_var))
    unreachable = [{"depth": d, "weight_var": float(weight_var), "bias_var": float(bias_var),
                    **{c: float("nan") for c in COLUMNS[4:-1]}, "kernel": kernel}
                   for d in depths if d > top]
    depths = [d for d in depths if d <= top]
    if not depths:
        return unreachable
    net = deep_network(table, max(depths), weight_var, bias_var)
    # Only the wanted depths are stored; the search holds them in RAM by design.
    n, n_val = p.t_train.shape[0], p.t_val.shape[0]
    budget = linalg.resolve_memory(memory)
    kernels = 8 * len(depths) * n * (n + n_val)
    need = kernels + linalg.packed_bytes(n, min(n, linalg.DEFAULT_TILE))
    if need > budget:
        raise MemoryBudgetError(f"the search holds the kernels of {len(depths)} depths and one "
                          f"factor for {n} training examples: {need / 1e9:.2f} GB, more than "
                          f"the memory budget of {budget / 1e9:.2f} GB; raise --memory, or "
                          "use fewer --depths or a smaller --n-train")
    k_train = net.kernel(p.x_train, depths=depths, gram=p.gram_train, memory=budget,
                         get=kernel)
    k_val = net.kernel(p.x_val, p.x_train, depths=depths, gram=p.gram_val, memory=budget,
                       get=kernel)
    rows = []
    for slot, depth in enumerate(depths):
        k = k_train[slot]
        factor = linalg.cholesky(lambda r, c: k[r[0]:r[1], c[0]:c[1]], n,
                                 jitters=jitter_ladder(jitter, float(np.mean(np.diag(k)))),
                                 memory=budget - kernels)
        alpha = factor.solve(p.t_train)
        mean = k_val[slot] @ alpha
        rows.append({
            "depth": depth, "weight_var": float(weight_var), "bias_var": float(bias_var),
            "val_accuracy": (float(np.mean(np.argmax(mean, 1) == p.labels_val))
                             if p.labels_val is not None else float("nan")),
            "val_mse": float(np.mean((mean - p.t_val) ** 2)),
            "log_marginal_likelihood": (log_evidence(p.t_train, alpha, factor.logdet())
                                        if kernel == "nngp" else float("nan")),
            "jitter": factor.jitter, "kernel": kernel})
    return rows + unreachable


def grid_search(x_train: ArrayLike, y_train: ArrayLike, x_val: ArrayLike, y_val: ArrayLike, *,
                phi: PhiLike, depths: Sequence[int] | str = PAPER_DEPTHS,
                weight_vars: ArrayLike | str = PAPER_WEIGHT_VAR,
                bias_vars: ArrayLike | str = PAPER_BIAS_VAR, standardize: bool = False,
                jitter: str | float = "absolute", memory: int | str = "auto",
                kernel: str = "nngp", out: PathLike | None = None, resume: bool = False,
                progress: Callable | None = None,
                client: Client | None = None) -> list[dict]:
    """Score every (depth, weight_var, bias_var) on the validation set, with the NNGP
    posterior or (``kernel="ntk"``) the NTK's gradient-descent ensemble.

    Parameters
    ----------
    x_train, y_train, x_val, y_val
        Training and validation data (integer labels: classification).
    phi : str, Activation, Table or path
        The activation or its table.
    depths, weight_vars, bias_vars
        Grids: sequences, or strings for :func:`parse_depths` / :func:`parse_grid`.
    memory : int or str
        Budget for the kernels held at once ("auto": 75% of the available memory).
    out : path, optional
        CSV file; each setting's rows are appended as soon as it is scored.  It is locked
        for the search (a second search on it is refused with :class:`~nngp_lut.errors.Busy`).
    resume : bool
        Keep the rows already in ``out`` and skip their settings (a line torn by a kill,
        and the rows of a setting scored at only some of the depths, are dropped).
    progress : callable, optional
        ``progress(done, total)`` in (weight_var, bias_var) settings.
    client : dask.distributed.Client, optional
        Score the settings as tasks on this Dask cluster (:mod:`nngp_lut.cluster`), the
        problem (inputs, targets, Grams) scattered to every worker once; each setting is
        one task, single-threaded, and ``memory`` is then a budget per task.  Rows reach
        ``out`` as settings finish (in the order they finish).

    Returns
    -------
    list of dict
        One row per (depth, weight_var, bias_var) with the columns of :data:`COLUMNS`.
    """
    depths = parse_depths(depths) if isinstance(depths, str) else sorted(set(depths))
    weight_vars = parse_grid(weight_vars) if isinstance(weight_vars, str) else weight_vars
    bias_vars = parse_grid(bias_vars) if isinstance(bias_vars, str) else bias_vars
    with _results_file(out, resume):
        return _grid_search(out and Path(out), x_train, y_train, x_val, y_val, phi, depths,
                            weight_vars, bias_vars, standardize, jitter, memory, kernel,
                            resume, progress, client)


def _results_file(out, resume):
    """The lock of a search's results file (nothing without one); a file that exists is
    refused unless resumed."""
    if out is None:
        return contextlib.nullcontext()
    if not resume and Path(out).exists():
        raise OutputExists(f"{out} exists; pass --resume to continue that search, or "
                           "remove it")
    return _files.lock(out, what=f"the results file {out}")


def _grid_search(out, x_train, y_train, x_val, y_val, phi, depths, weight_vars, bias_vars,
                 standardize, jitter, memory, kernel, resume, progress, client=None):
    table = as_table(phi)
    problem = Problem.make(x_train, y_train, x_val, y_val, standardize)
    settings = [(float(w), float(b)) for w in weight_vars for b in bias_vars]
    rows = _resume_rows(out, table.activation_name, kernel, depths) if out and resume else []
    have = {}
    for r in rows:
        have.setdefault((r["weight_var"], r["bias_var"]), set()).add(r["depth"])
    done = {key for key, got in have.items() if set(depths) <= got}
    writer = _Appender(out) if out is not None else None
    scored = len(done & set(settings))
    if client is not None:
        scores = _scores_on_cluster(client, problem, table, depths, settings, done, jitter,
                                    memory, kernel)
    else:
        scores = ((None if (w, b) in done else
                   score_setting(problem, table, depths, w, b, jitter, memory, kernel))
                  for w, b in settings)
    try:
        for count, scored_rows in enumerate(scores, 1):
            if scored_rows is not None:
                new = [{"phi": table.activation_name, **r} for r in scored_rows]
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


def _scores_on_cluster(client, problem, table, depths, settings, done, jitter, memory, kernel):
    """Each setting's rows (None for those done) as its task finishes on the cluster."""
    from distributed import as_completed

    from .cluster import scatter_once

    sproblem, stable = scatter_once(client, (problem, table))
    futures = [client.submit(_score_task, sproblem, stable, depths, w, b, jitter, memory,
                             kernel, pure=False)
               for w, b in settings if (w, b) not in done]
    yield from (None for _ in range(len(settings) - len(futures)))
    for future in as_completed(futures):
        yield future.result()


def _score_task(problem, table, depths, weight_var, bias_var, jitter, memory, kernel):
    """:func:`score_setting` as a single-threaded task on a Dask worker."""
    from .cluster import _one_thread

    _one_thread()
    return score_setting(problem, table, depths, weight_var, bias_var, jitter, memory, kernel)


def best_row(rows: list[dict]) -> dict:
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


def test_best(rows: list[dict], x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike,
              y_test: ArrayLike, *, phi: PhiLike, standardize: bool = False,
              jitter: str | float = "absolute", **kwargs) -> tuple[dict, Result]:
    """Fit the best validation setting on the training set and score the test set."""
    best = best_row(rows)
    return best, evaluate(x_train, y_train, x_test, y_test, phi=phi, depth=best["depth"],
                          weight_var=best["weight_var"], bias_var=best["bias_var"],
                          kernel=best.get("kernel", "nngp"), standardize=standardize,
                          jitter=jitter, **kwargs)


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


def read_results(path: PathLike) -> tuple[list[dict], bool]:
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
    if tuple(header) not in (COLUMNS, COLUMNS_NNGP_ONLY):
        raise DataError(f"{path} is not a results file of nngp-lut search (its header "
                        f"is {','.join(header)[:80]})")
    legacy = tuple(header) == COLUMNS_NNGP_ONLY
    whole = whole and not legacy  # rewritten with the kernel column when resumed
    for line in reader:
        try:
            r = dict(zip(header, line, strict=True))
            if r.get("kernel", "nngp") not in KINDS:
                raise ValueError
            rows.append({"phi": r["phi"], "depth": int(r["depth"]),
                         **{c: float(r[c]) for c in COLUMNS[2:-1]},
                         "kernel": r.get("kernel", "nngp")})
        except (ValueError, TypeError):
            whole = False
    return rows, whole


def _resume_rows(path, phi_name, kernel, depths=()):
    """Rows of an earlier search of phi_name with ``kernel``.  A torn line, and the rows of a
    setting scored at only some of ``depths`` (it is scored again), are dropped from the file
    too; ``depths=()`` checks no setting (the optimiser's rows: one setting per depth).  A
    file of the columns before the NTK is rewritten with the kernel column."""
    path = Path(path)
    if not path.exists():
        return []
    rows, whole = read_results(path)
    other = {r["phi"] for r in rows} - {phi_name}
    if other:
        raise ParameterError(f"{path} holds a search of {other.pop()}, not {phi_name}; "
                             "use another --out")
    other = {r["kernel"] for r in rows} - {kernel}
    if other:
        raise ParameterError(f"{path} holds a search of the {other.pop().upper()}, not the "
                             f"{kernel.upper()}; use another --out")
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


def log_marginal_likelihood(x: ArrayLike, y: ArrayLike, *, phi: PhiLike, depth: int,
                            weight_var: float, bias_var: float, standardize: bool = False,
                            jitter: str | float = "absolute", memory: int | str = "auto"
                            ) -> float:
    """log p(t | X) of regression targets (or shifted one-hot targets of integer labels)
    under the NNGP prior (Rasmussen & Williams, eq. 2.30), summed over outputs."""
    p = Problem.make(x, y, x[:1], np.asarray(y)[:1], standardize)
    return score_setting(p, as_table(phi), [depth], weight_var, bias_var,
                         jitter, memory)[0]["log_marginal_likelihood"]


#: What the optimiser sees where the recursion leaves the table's domain (the depth is
#: unreachable there): a wall it turns back from.
OUTSIDE_DOMAIN = -1e100


def optimize_marginal_likelihood(x: ArrayLike, y: ArrayLike, *, phi: PhiLike, depth: int,
                                 weight_var: float = 1.0, bias_var: float = 0.1,
                                 standardize: bool = False, jitter: str | float = "absolute",
                                 bounds: tuple = ((0.01, 100.0), (1e-6, 10.0)),
                                 step: float = 1e-4, memory: int | str = "auto",
                                 maxiter: int = 200, progress: Callable | None = None) -> dict:
    """Maximise the log marginal likelihood over (weight_var, bias_var) at one depth.

    L-BFGS-B over (ln weight_var, ln bias_var) within ``bounds``, with central finite
    differences of step ``step`` in log space (the kernel is a smooth function of both
    variances; the table's interpolation error, ~1e-7, is far below the step's effect).
    Settings whose variances leave the table's domain score :data:`OUTSIDE_DOMAIN`.

    Parameters
    ----------
    maxiter : int
        Most L-BFGS-B iterations (each costs about five evaluations: the point and the
        finite-difference gradient); ``converged`` is False when it stops there.
    progress : callable, optional
        ``progress(evaluations, weight_var, bias_var, log_marginal_likelihood)`` after each
        new evaluation.

    Returns
    -------
    dict
        weight_var, bias_var, log_marginal_likelihood, evaluations, converged.

    References
    ----------
    Rasmussen & Williams, "Gaussian Processes for Machine Learning", 2006, Section 5.4.1.
    """
    table = as_table(phi)
    p = Problem.make(x, y, x[:1], np.asarray(y)[:1], standardize)
    cache = {}

    def f(theta):
        key = tuple(theta)
        if key not in cache:
            w, b = np.exp(theta)
            lml = score_setting(p, table, [depth], w, b, jitter,
                                memory)[0]["log_marginal_likelihood"]
            lml = lml if math.isfinite(lml) else OUTSIDE_DOMAIN
            cache[key] = -lml
            if progress:
                progress(len(cache), float(w), float(b), lml)
        return cache[key]

    lo = np.log([bounds[0][0], bounds[1][0]])
    hi = np.log([bounds[0][1], bounds[1][1]])
    if not np.all(lo < hi):
        raise ParameterError(f"empty bounds {bounds}: need low < high for both variances")

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
                                  bounds=list(zip(lo, hi)), options={"maxiter": maxiter})
    w, b = np.exp(res.x)
    return {"weight_var": float(w), "bias_var": float(b),
            "log_marginal_likelihood": float(-res.fun), "evaluations": len(cache),
            "converged": bool(res.success)}


def optimize_search(x_train: ArrayLike, y_train: ArrayLike, x_val: ArrayLike, y_val: ArrayLike,
                    *, phi: PhiLike, depths: Sequence[int] | str = PAPER_DEPTHS,
                    weight_vars: ArrayLike | str = PAPER_WEIGHT_VAR,
                    bias_vars: ArrayLike | str = PAPER_BIAS_VAR, standardize: bool = False,
                    jitter: str | float = "absolute", memory: int | str = "auto",
                    out: PathLike | None = None, resume: bool = False,
                    progress: Callable | None = None, on_depth: Callable | None = None
                    ) -> list[dict]:
    """Per depth, the (weight_var, bias_var) of highest marginal likelihood on the training
    set (:func:`optimize_marginal_likelihood`), scored on the validation set.

    The optimiser searches within the range of each grid (``weight_vars``, ``bias_vars``:
    sequences or "a:b:n" strings; a bias_var bound of 0 becomes 1e-6, since it works in log
    space) from the geometric middle of that range.  Rows have the columns of
    :data:`COLUMNS` (one per depth; the same CSV as :func:`grid_search`, appended as each
    depth finishes; ``resume`` skips depths already in ``out``), so :func:`best_row` and
    :func:`test_best` apply unchanged.

    Parameters
    ----------
    progress : callable, optional
        ``progress(done, total)`` in depths.
    on_depth : callable, optional
        ``on_depth(row, result)`` when a depth is done: its CSV row and the optimiser's dict.
    """
    depths = parse_depths(depths) if isinstance(depths, str) else sorted(set(depths))
    ws = parse_grid(weight_vars) if isinstance(weight_vars, str) else np.asarray(weight_vars)
    bs = parse_grid(bias_vars) if isinstance(bias_vars, str) else np.asarray(bias_vars)
    bounds = ((max(float(np.min(ws)), 1e-6), float(np.max(ws))),
              (max(float(np.min(bs)), 1e-6), float(np.max(bs))))
    start = [math.sqrt(lo * hi) for lo, hi in bounds]
    with _results_file(out, resume):
        return _optimize_search(out, x_train, y_train, x_val, y_val, phi, depths, bounds,
                                start, standardize, jitter, memory, resume, progress,
                                on_depth)


def _optimize_search(out, x_train, y_train, x_val, y_val, phi, depths, bounds, start,
                     standardize, jitter, memory, resume, progress, on_depth):
    table = as_table(phi)
    problem = Problem.make(x_train, y_train, x_val, y_val, standardize)
    rows = _resume_rows(out, table.activation_name, "nngp") if out and resume else []
    done = {r["depth"] for r in rows}
    writer = _Appender(out) if out is not None else None
    for count, depth in enumerate(depths, 1):
        if depth not in done:
            opt = optimize_marginal_likelihood(
                problem.x_train, y_train, phi=table, depth=depth, weight_var=start[0],
                bias_var=start[1], jitter=jitter, bounds=bounds, memory=memory)
            (row,) = [{"phi": table.activation_name, **r} for r in score_setting(
                problem, table, [depth], opt["weight_var"], opt["bias_var"], jitter, memory)]
            rows.append(row)
            if writer:
                writer.append([row])
            if on_depth:
                on_depth(row, opt)
        if progress:
            progress(count, len(depths))
    return [r for r in rows if r["depth"] in depths]


#: Columns of the results CSV of an architecture search.
ARCH_COLUMNS = ("arch", "val_accuracy", "val_mse", "jitter", "kernel", "seconds")


def arch_search(networks: Sequence, x_train: ArrayLike, y_train: ArrayLike, x_val: ArrayLike,
                y_val: ArrayLike, *, kernel: str = "nngp", standardize: bool = False,
                jitter: str | float = "absolute", memory: int | str = "auto",
                out: PathLike | None = None, progress: Callable | None = None,
                client=None) -> list[dict]:
    """Score each network (a :class:`~nngp_lut.kernel.Network` or layer) on the validation
    set: fit on the training set, accuracy and MSE of the posterior mean on validation.
    This is how a convolutional network's depth (or any other choice of architecture) is
    picked: give the candidates.  Rows (``ARCH_COLUMNS``) are written to the CSV ``out`` at
    the end, when given.  With a ``dask.distributed.Client`` each fit runs on its cluster
    (see :func:`nngp_lut.gp.evaluate`).

    References
    ----------
    Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, Section 3 (model
    selection on a validation set).
    """
    import time

    from .kernel import Network

    rows = []
    for i, net in enumerate(networks):
        net = net if isinstance(net, Network) else Network(net)
        t0 = time.perf_counter()
        res = evaluate(x_train, y_train, x_val, y_val, network=net, kernel=kernel,
                       standardize=standardize, jitter=jitter, memory=memory, client=client)
        rows.append({"arch": repr(net.layer), "val_accuracy": (math.nan if res.accuracy is None
                                                              else res.accuracy),
                     "val_mse": res.mse, "jitter": res.jitter, "kernel": kernel,
                     "seconds": time.perf_counter() - t0})
        if progress:
            progress(i + 1, len(networks))
    if out is not None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=ARCH_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        _files.atomic_write(out, lambda tmp: Path(tmp).write_text(buf.getvalue()), force=True)
    return rows


def best_arch(rows: list[dict]) -> dict:
    """The row of :func:`arch_search` with the best validation accuracy (classification) or
    the smallest validation MSE; ties go to the first (the simplest, if listed first)."""
    if not rows:
        raise ParameterError("no architecture was scored")
    if all(not math.isnan(r["val_accuracy"]) for r in rows):
        return max(rows, key=lambda r: (r["val_accuracy"], -r["val_mse"]))
    return min(rows, key=lambda r: r["val_mse"])
