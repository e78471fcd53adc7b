"""The tile operations and the task schedule of the blocked Cholesky and its solves.

Written once for every backend: :mod:`nngp_lut.linalg` runs the tasks in process on a tile
store (RAM or a scratch directory), :mod:`nngp_lut.cluster` submits the same tasks to Dask.
Each tile receives the same BLAS/LAPACK calls in the same order on both, so the two give the
same factor and the same solves, bit for bit where OpenBLAS runs single-threaded.

A task is ``Task(op, out, inputs, params, priority)``: ``out`` and ``inputs`` are keys of
tiles, ``op`` names a function of :data:`OPS` called as ``op(*inputs, *params)``.  Keys:

* ``("a", i, j)``: tile (i, j) of A as made (task op ``"tile"``: each backend makes it, in
  process from its store, on Dask by the caller's tile function);
  ``("a", i, j, k)``: the same tile after the update by factor column k;
* ``("l", i, j)``: tile (i, j) of the factor L, i >= j (an input not made by the graph is
  a finished tile the backend already holds);
* ``("b", j)``: block j of the right-hand sides; ``("y", j, k)`` / ``("y", j)``: block j
  of L^{-1} b after the update by block k / solved; ``("x", j, i)`` / ``("x", j)``: the
  same for L^{-T} y.

The factorisation (Buttari et al., "A class of parallel tiled linear algebra algorithms for
multicore architectures", Parallel Computing 35, 2009, Algorithm 3; Golub & Van Loan,
*Matrix Computations*, 4th ed., section 4.2, by tiles)::

    A_ij -= L_ik L_jk^T  for k = 0, ..., j-1     (syrk on the diagonal, gemm below)
    L_jj  = chol(A_jj + jitter I)                (potrf)
    L_ij  = A_ij L_jj^{-T},  i > j               (trsm)

and the solves, block by block (Golub & Van Loan, section 3.1)::

    forward:  y_j = L_jj^{-1} (b_j - sum_{k<j} L_jk y_k)        j = 0, 1, ...
    back:     x_j = L_jj^{-T} (y_j - sum_{i>j} L_ij^T x_i)      j = nt-1, nt-2, ...

with the updates in the order their inputs become available, so that the graph's critical
path is one update and one substitution per block.

Every operation is one BLAS/LAPACK call on Fortran-ordered tiles of order <= 8192 (OpenBLAS
in the numpy/scipy wheels crashes in threaded dpotrf/dsyrk of order >= 16000).  With
``overwrite=True`` an operation works in place in the tile it updates (``a``, ``c`` or
``y_j``) and returns it: the in-process backend owns its tiles and saves the copies; Dask's
results are shared, so there the default (a copy) applies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy.linalg import blas, lapack, solve_triangular

from .errors import NotPositiveDefinite

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["COLUMN_RANK", "OPS", "RANK", "Task", "factor_tasks", "logdet_tasks", "solve_tasks"]

#: Priority steps: a tile column outranks the next one by COLUMN_RANK; within a column
#: potrf > trsm > syrk/gemm > making a tile, so the potrf -> trsm -> syrk chain that bounds
#: the run is never starved by far-away updates (critical path first, as DPLASMA and SLATE).
COLUMN_RANK = 4
RANK = {"potrf": 3, "trsm": 2, "syrk": 1, "gemm": 1, "tile": 0, "substitute": 1, "update": 0}


# --- tile operations (top-level functions: Dask pickles them to its workers) -------------------
def potrf(a: np.ndarray, jitter: float, column: int, *, overwrite: bool = False) -> np.ndarray:
    """L_jj = chol(a + jitter I), lower (LAPACK dpotrf).

    Raises
    ------
    NotPositiveDefinite
        If a + jitter I is not positive definite (the message names ``column``).
    """
    a = np.asfortranarray(a) if overwrite else np.array(a, order="F", copy=True)
    a[np.diag_indices_from(a)] += jitter
    factor, info = lapack.dpotrf(a, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        raise NotPositiveDefinite(f"dpotrf failed in tile column {column} at jitter {jitter:g}")
    return factor


def trsm(l_jj: np.ndarray, a: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
    """L_ij = a L_jj^{-T} (BLAS dtrsm, right side); in place in ``a`` with ``overwrite``."""
    return blas.dtrsm(1.0, l_jj, a, side=1, lower=1, trans_a=1, overwrite_b=overwrite)


def syrk(c: np.ndarray, l_jk: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
    """c - L_jk L_jk^T on the lower triangle (BLAS dsyrk); in place in ``c``."""
    return blas.dsyrk(-1.0, l_jk, beta=1.0, c=c, lower=1, overwrite_c=overwrite)


def gemm(c: np.ndarray, l_ik: np.ndarray, l_jk: np.ndarray, *, overwrite: bool = False
         ) -> np.ndarray:
    """c - L_ik L_jk^T (BLAS dgemm); in place in ``c``."""
    return blas.dgemm(-1.0, l_ik, l_jk, beta=1.0, c=c, trans_b=1, overwrite_c=overwrite)


def update(y_j: np.ndarray, l_tile: np.ndarray, y_k: np.ndarray, transpose: bool, *,
           overwrite: bool = False) -> np.ndarray:
    """y_j - L y_k, or y_j - L^T y_k with ``transpose`` (BLAS dgemm; one step of a
    substitution)."""
    # dgemm, not numpy's matmul: matmul leaves BLAS for its own loop on a block that Dask
    # delivers at an odd byte offset, and the two backends would differ in the last bit.
    x = blas.dgemm(-1.0, l_tile, y_k, beta=1.0, c=y_j, trans_a=transpose,
                   overwrite_c=overwrite)
    return _into(y_j, x, overwrite)


def substitute(l_jj: np.ndarray, y_j: np.ndarray, transpose: bool, *,
               overwrite: bool = False) -> np.ndarray:
    """L_jj^{-1} y_j, or L_jj^{-T} y_j with ``transpose`` (LAPACK dtrtrs)."""
    x = solve_triangular(l_jj, y_j, lower=True, trans="T" if transpose else "N",
                         overwrite_b=overwrite, check_finite=False)
    return _into(y_j, x, overwrite)


def _into(y_j, x, overwrite):
    """With ``overwrite``, the result in y_j: a strided block (rows of the caller's array)
    is computed by BLAS in a copy, put back here."""
    if overwrite and not np.may_share_memory(x, y_j):
        y_j[...] = x
        return y_j
    return x


def log_diagonal(l_jj: np.ndarray, *, overwrite: bool = False) -> float:
    """sum log diag L_jj (a diagonal tile's share of log det(A) / 2)."""
    return float(np.sum(np.log(np.diag(l_jj))))


#: The operations by name (a task's ``op``); "tile" is made by each backend.
OPS = {"potrf": potrf, "trsm": trsm, "syrk": syrk, "gemm": gemm, "update": update,
       "substitute": substitute, "log_diagonal": log_diagonal}


class Task(NamedTuple):
    """One tile operation: ``out = OPS[op](*inputs, *params)`` (see the module docstring)."""

    op: str
    out: tuple
    inputs: tuple = ()
    params: tuple = ()
    priority: int = 0


# --- the schedules ---------------------------------------------------------------------------
def factor_tasks(nt: int, todo: Iterable[tuple[int, int]], jitter: float
                 ) -> list[tuple[int, list[Task]]]:
    """The tasks making the factor tiles ``todo`` ((i, j) pairs, i >= j) of an nt x nt grid.

    Returned by tile column, ``[(j, tasks of column j), ...]`` in increasing j, each column
    in a valid order: its matrix tiles, then for k = 0, ..., j-1 the update of every tile of
    the column by factor column k (the left-looking order: factor tile L_jk is read once per
    k), then potrf and the trsm.  Factor tiles not in ``todo`` are inputs (finished tiles).
    """
    columns = {}
    for i, j in sorted(set(todo), key=lambda ij: (ij[1], ij[0])):
        columns.setdefault(j, []).append(i)
    out = []
    for j, rows in columns.items():
        rank = COLUMN_RANK * (nt - j)
        tasks = [Task("tile", ("a", i, j), (), (i, j), rank + RANK["tile"]) for i in rows]
        now = {i: ("a", i, j) for i in rows}
        for k in range(j):
            for i in rows:
                if i == j:
                    task = Task("syrk", ("a", j, j, k), (now[j], ("l", j, k)), (),
                                rank + RANK["syrk"])
                else:
                    task = Task("gemm", ("a", i, j, k), (now[i], ("l", i, k), ("l", j, k)), (),
                                rank + RANK["gemm"])
                tasks.append(task)
                now[i] = task.out
        if rows[0] == j:
            tasks.append(Task("potrf", ("l", j, j), (now[j],), (jitter, j), rank + RANK["potrf"]))
        tasks += [Task("trsm", ("l", i, j), (("l", j, j), now[i]), (), rank + RANK["trsm"])
                  for i in rows if i != j]
        out.append((j, tasks))
    return out


def solve_tasks(nt: int, *, lower: bool = True, upper: bool = True
                ) -> tuple[list[Task], list[tuple]]:
    """The tasks of L^{-1} b (``lower``), L^{-T} b (``upper``) or both, b in nt blocks.

    Returns ``(tasks, outputs)``: the tasks in a valid order (block by block) and the keys
    of the solved blocks in row order.  The inputs are the blocks ``("b", j)`` and the
    factor tiles.
    """
    tasks, source = [], "b"
    if lower:
        _substitution(tasks, nt, source, "y", False)
        source = "y"
    if upper:
        _substitution(tasks, nt, source, "x", True)
        source = "x"
    return tasks, [(source, j) for j in range(nt)]


def _substitution(tasks, nt, source, kind, transpose):
    """Append the tasks of L^{-1} (source) or, with ``transpose``, L^{-T} (source): blocks
    (kind, j), solved in the order j = 0, 1, ... (L^{-T}: nt-1, nt-2, ...), each updated by
    the blocks solved before it in the order they are solved."""
    order = range(nt - 1, -1, -1) if transpose else range(nt)
    solved = []
    for j in order:
        rank, now = COLUMN_RANK * (j + 1 if transpose else nt - j), (source, j)
        for k in solved:
            tile = ("l", k, j) if transpose else ("l", j, k)
            tasks.append(Task("update", (kind, j, k), (now, tile, (kind, k)), (transpose,),
                              rank + RANK["update"]))
            now = tasks[-1].out
        tasks.append(Task("substitute", (kind, j), (("l", j, j), now), (transpose,),
                          rank + RANK["substitute"]))
        solved.append(j)


def logdet_tasks(nt: int) -> tuple[list[Task], list[tuple]]:
    """The tasks of sum log diag L per diagonal tile: ``(tasks, outputs)``."""
    tasks = [Task("log_diagonal", ("d", j), (("l", j, j),)) for j in range(nt)]
    return tasks, [t.out for t in tasks]
