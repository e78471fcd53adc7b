"""The optional Dask backend: kernel tiles and the blocked Cholesky as task graphs.

Everything here runs on a :class:`dask.distributed.Client` (``pip install
"nngp-lut[distributed]"``); without one, nngp-lut runs in process, as before, at the same
speed.  The work is the one of :mod:`nngp_lut.linalg`, cut into tasks:

* **Kernel tiles.**  Tile (i, j) of K is ``Network.kernel`` of row block i against row block
  j (the diagonal tiles by the symmetric path), computed on a worker by the same Numba
  executor.  It is a pure function of the inputs, which are scattered to every worker once
  (:meth:`Client.scatter` with ``broadcast=True``), so a lost tile is recomputed from its
  lineage.  Any :class:`~nngp_lut.kernel.Network` of the layer algebra works.
* **The factorisation** of K + jitter I as a right-looking tile graph (Buttari et al.,
  "A class of parallel tiled linear algebra algorithms for multicore architectures",
  Parallel Computing 35, 2009, Algorithm 3):

      for k:  L_kk = potrf(A_kk + jitter I);  L_ik = trsm(L_kk, A_ik), i > k
              A_jj -= L_jk L_jk^T (syrk);     A_ij -= L_ik L_jk^T (gemm), i > j > k

  Each tile receives its updates in the order k = 0, 1, ... with the same BLAS calls as the
  in-process left-looking loop, so both give the same factor.  Tasks carry *priorities*
  along the critical path (as DPLASMA and SLATE do): a task writing tile column j outranks
  every task writing a later column, and in a column potrf > trsm > updates, so the
  potrf -> trsm -> syrk chain that bounds the run is never starved by far-away updates.
* **Solves** (forward and back substitution) as graphs too: each product L_jk y_k runs on
  the worker that holds L_jk, only the (n_j x m) products move.

Tiles stay on the workers (dask spills them to disk over its memory limits); the client only
holds futures.  A worker that dies costs only its tiles: dask recomputes them from their
lineage and the result is bit for bit the same.  With a ``scratch`` directory every finished
tile column ("panel") is also written there, as the in-process out-of-core path does, so a
run whose whole cluster died resumes from its last finished panel (``resume=True``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.linalg import blas, lapack, solve_triangular

from . import linalg
from .errors import ClusterError, MissingDependency, NotPositiveDefinite, ParameterError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from distributed import Client

    from .kernel import Network

__all__ = ["CONNECT_TIMEOUT", "DistributedCholesky", "check_address", "check_workers",
           "cholesky", "connect", "dask_setup", "kernel", "kernel_tile", "max_workers",
           "require_dask"]

#: Seconds to wait for a scheduler before giving up (--scheduler).
CONNECT_TIMEOUT = 10.0
#: Priority steps: a tile column outranks the next one by COLUMN_RANK; within a column
#: potrf > trsm > syrk/gemm (critical path first).
COLUMN_RANK = 4
RANK = {"potrf": 3, "trsm": 2, "syrk": 1, "gemm": 1, "kernel": 0}
#: The memory budget of a tile's kernel: a tile is always made in RAM.
IN_RAM = 1 << 62
_EXTRA = 'pip install "nngp-lut[distributed]"'


def require_dask() -> object:
    """Import dask.distributed, or raise MissingDependency saying how to install it."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise MissingDependency(f"the Dask backend needs dask.distributed: {_EXTRA}") from None
    return distributed


def max_workers() -> int:
    """The most local workers this machine runs: one per core this process may use, and
    no more than the available memory holds at :data:`WORKER_MEMORY` each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, linalg.available_memory() // WORKER_MEMORY))


def check_workers(workers: int) -> None:
    """Raise ParameterError for a local worker count below 1 or above :func:`max_workers`."""
    if workers < 1:
        raise ParameterError("--workers must be >= 1")
    cap = max_workers()
    if workers > cap:
        raise ParameterError(f"--workers {workers} is more than this machine runs: at most "
                             f"{cap} (one single-threaded worker per core, "
                             f"{WORKER_MEMORY // 2**20} MB of available memory each); give "
                             f"--workers {cap} or fewer, or --scheduler for a larger cluster")


def check_address(scheduler: str) -> None:
    """Raise ParameterError for an empty scheduler address."""
    if not scheduler.strip():
        raise ParameterError("--scheduler needs the address of a running Dask scheduler, "
                             "such as tcp://10.0.0.1:8786; it is empty")


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, *,
            threads_per_worker: int = 1, timeout: float | None = None
            ) -> Iterator[Client | None]:
    """A :class:`dask.distributed.Client` for ``--scheduler`` / ``--workers`` (None: neither).

    A local cluster leaves nothing behind, whatever ends it (:func:`_local_cluster`).

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler ("tcp://host:8786").
    workers : int, optional
        Start a ``LocalCluster`` of this many worker processes instead (at most
        :func:`max_workers`).
    threads_per_worker : int
        Threads of each local worker; each task runs single-threaded BLAS and Numba, so
        this is the number of cores a worker uses.
    timeout : float, optional
        Seconds to wait for the scheduler (default :data:`CONNECT_TIMEOUT`).

    Raises
    ------
    ParameterError
        Both given, an empty address, or a bad count.
    ClusterError
        The scheduler cannot be reached.
    MissingDependency
        dask.distributed is not installed.
    """
    if scheduler is None and workers is None:
        yield None
        return
    if scheduler is not None and workers is not None:
        raise ParameterError("give --scheduler (an existing cluster) or --workers (a local "
                             "one), not both")
    distributed = require_dask()
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    if workers is not None:
        check_workers(workers)
        with _local_cluster(distributed, workers, threads_per_worker) as client:
            yield client
        return
    check_address(scheduler)
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} within "
                           f"{timeout:g} s ({type(exc).__name__}); check the address and "
                           "that the scheduler runs, or use --workers N for a local "
                           "cluster") from None
    with client:
        yield client


# --- the local cluster: quiet, bounded, and gone with this process ----------------------------
#: Memory a local worker process needs at the least (Python, numpy, Numba, dask).
WORKER_MEMORY = 512 * 2**20
#: Prefix of a local cluster's private folder in the temp directory (dask's scratch space,
#: its locks, spilled data): ``nngp-lut-dask-PID-XXXX``, removed when the cluster ends, or
#: by the next run when this process was killed.
LOCAL_DIR_PREFIX = "nngp-lut-dask-"
#: The dask config key carrying this process's pid to its workers (:func:`dask_setup`).
PARENT_KEY = "nngp-lut-parent"
#: Seconds between a worker's checks that its parent lives, where prctl is missing.
PARENT_POLL = 1.0


@contextlib.contextmanager
def _local_cluster(distributed, workers, threads_per_worker):
    """A Client of a LocalCluster whose workers ignore Ctrl-C (the command handles it and
    stops them), die with this process even when it is SIGKILLed (:func:`dask_setup`),
    and keep their files in a private temp folder removed at the end.  While it runs,
    SIGTERM is handled as Ctrl-C, so that the same cleanup runs."""
    import dask

    from . import _files

    for stale in Path(tempfile.gettempdir()).glob(f"{LOCAL_DIR_PREFIX}*"):
        pid = stale.name[len(LOCAL_DIR_PREFIX):].partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _files._alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    folder = tempfile.mkdtemp(prefix=f"{LOCAL_DIR_PREFIX}{os.getpid()}-")
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        with dask.config.set({"temporary-directory": folder, PARENT_KEY: os.getpid()}):
            cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                dashboard_address=":0",  # no clash with a running one
                silence_logs=logging.CRITICAL, local_directory=folder,
                preload=[__name__])
            with cluster, distributed.Client(cluster) as client:
                try:
                    yield client
                except BaseException:
                    # Scheduler tasks cut short by the end (a scatter half done) fail as
                    # the workers go: noise after the command's own message, not news.
                    cluster.loop.asyncio_loop.set_exception_handler(lambda loop, ctx: None)
                    raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(folder, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def dask_setup(worker) -> None:
    """Dask's preload hook, run in each local worker process of :func:`connect` as it
    starts: ignore Ctrl-C (the terminal sends it to every process of the command; the
    command stops its workers itself, without their tracebacks), and die with the parent
    process even when it is SIGKILLed: Linux's parent-death signal, else a thread that
    watches the parent's pid.  A worker of another cluster is left alone."""
    import dask

    parent = dask.config.get(PARENT_KEY, None)
    if parent is None:
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # PR_SET_PDEATHSIG = 1: the kernel kills this process when its parent dies
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                         name="nngp-lut parent watch").start()
    if os.getppid() != parent:  # died before the signal was armed
        os._exit(1)


def _watch_parent(parent):
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(1)


# --- tasks (top-level functions: they are pickled to the workers) ----------------------------
def _one_thread():
    """Tasks are the unit of parallelism: each runs Numba single-threaded (BLAS already is:
    dask's nanny sets OPENBLAS_NUM_THREADS=1)."""
    import numba

    if numba.get_num_threads() != 1:
        numba.set_num_threads(1)


def kernel_tile(rows: tuple[int, int], cols: tuple[int, int], network: Network,
                x1: np.ndarray, x2: np.ndarray | None = None, get: str = "nngp",
                depths: Sequence[int] | None = None) -> np.ndarray:
    """Tile K(x1[rows], x2[cols]) of ``network``'s kernel, Fortran ordered.

    With ``x2=None`` (the symmetric kernel of x1) the diagonal tiles (rows == cols) come
    from the symmetric path with its exact diagonal; every tile equals the in-process
    ``Network.kernel`` to rounding.  ``depths`` stacks depths as ``Network.kernel`` does.
    """
    _one_thread()
    # Dask may deliver scattered inputs at an odd byte offset, where numpy's matmul leaves
    # BLAS for its own loop and the tile differs from the in-process one in the last bit:
    # an aligned copy of the block (cheap beside its kernel) keeps them identical.
    xr = np.require(x1[rows[0]:rows[1]], requirements="A")
    if x2 is None and rows == cols:
        t = network.kernel(xr, get=get, depths=depths, memory=IN_RAM)
        return np.asfortranarray(t)
    xc = np.require((x1 if x2 is None else x2)[cols[0]:cols[1]], requirements="A")
    # K(cols, rows) in C order, transposed: the Fortran-ordered K(rows, cols) without a copy.
    t = network.kernel(xc, xr, get=get, depths=depths, memory=IN_RAM)
    return np.swapaxes(t, -1, -2)


def _potrf(a, jitter, column):
    _one_thread()
    a = np.array(a, order="F", copy=True)
    a[np.diag_indices_from(a)] += jitter
    factor, info = lapack.dpotrf(a, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        raise NotPositiveDefinite(f"dpotrf failed in tile column {column} at jitter {jitter:g}")
    return factor


def _trsm(l_kk, a):
    return blas.dtrsm(1.0, l_kk, a, side=1, lower=1, trans_a=1)


def _syrk(c, l_jk):
    return blas.dsyrk(-1.0, l_jk, beta=1.0, c=c, lower=1)


def _gemm(c, l_ik, l_jk):
    return blas.dgemm(-1.0, l_ik, l_jk, beta=1.0, c=c, trans_b=1)


def _product(a, y, transpose):
    return (a.T if transpose else a) @ y


def _substitute(l_jj, b_j, transpose, *products):
    y = np.array(b_j, dtype=np.float64, order="F", copy=True)
    for p in products:  # in the order of the in-process loop
        y -= p
    return solve_triangular(l_jj, y, lower=True, trans="T" if transpose else "N",
                            check_finite=False)


def _log_diagonal(l_jj):
    return float(np.sum(np.log(np.diag(l_jj))))


# --- the factor ------------------------------------------------------------------------------
class DistributedCholesky:
    """The factor L of A + jitter I as futures of tiles on a Dask cluster, with solves.

    The same interface as :class:`nngp_lut.linalg.TiledCholesky`; made by :func:`cholesky`.
    """

    def __init__(self, client, tiles, bounds, jitter, store=None, inputs=()):
        self.client = client
        # The scattered inputs the tiles were made from: held as long as the factor, so
        # that a tile lost with a worker can still be recomputed from its lineage.
        self.inputs = inputs
        self.tiles = tiles  # (i, j) -> future of L_ij, i >= j
        self.bounds = bounds
        self.n = bounds[-1][1]
        self.jitter = jitter
        self.store = store  # DiskTiles holding the finished panels, or None

    def _blocks(self, b):
        b = np.asarray(b, dtype=np.float64)
        blocks = [np.asfortranarray(b[lo:hi]) for lo, hi in self.bounds]
        return self.client.scatter(blocks, hash=False)

    def _lower(self, blocks, token):
        nt, submit = len(self.bounds), self.client.submit
        y = []
        for j in range(nt):
            prio = COLUMN_RANK * (nt - j)
            prods = [submit(_product, self.tiles[j, k], y[k], False, priority=prio,
                            key=f"fwd-prod-{token}-{j}-{k}") for k in range(j)]
            y.append(submit(_substitute, self.tiles[j, j], blocks[j], False, *prods,
                            priority=prio + 1, key=f"fwd-{token}-{j}"))
        return y

    def _upper(self, blocks, token):
        nt, submit = len(self.bounds), self.client.submit
        x = [None] * nt
        for j in range(nt - 1, -1, -1):
            prio = COLUMN_RANK * (j + 1)
            prods = [submit(_product, self.tiles[i, j], x[i], True, priority=prio,
                            key=f"back-prod-{token}-{j}-{i}") for i in range(j + 1, nt)]
            x[j] = submit(_substitute, self.tiles[j, j], blocks[j], True, *prods,
                          priority=prio + 1, key=f"back-{token}-{j}")
        return x

    def _gather(self, futures, shape):
        out = np.concatenate(self.client.gather(futures), axis=0)
        return out.reshape(shape)

    def solve_lower(self, b):
        """L^{-1} b for b of shape (n,) or (n, m): forward substitution as a task graph."""
        b = np.asarray(b, dtype=np.float64)
        return self._gather(self._lower(self._blocks(b.reshape(self.n, -1)),
                                        uuid.uuid4().hex), b.shape)

    def solve_upper(self, y):
        """L^{-T} y: back substitution as a task graph."""
        y = np.asarray(y, dtype=np.float64)
        return self._gather(self._upper(self._blocks(y.reshape(self.n, -1)),
                                        uuid.uuid4().hex), y.shape)

    def solve(self, b):
        """(A + jitter I)^{-1} b, both substitutions in one graph (y stays on the workers)."""
        b = np.asarray(b, dtype=np.float64)
        token = uuid.uuid4().hex
        y = self._lower(self._blocks(b.reshape(self.n, -1)), token)
        return self._gather(self._upper(y, token), b.shape)

    def logdet(self):
        """log det(A + jitter I) = 2 sum log diag L."""
        parts = self.client.gather([self.client.submit(_log_diagonal, self.tiles[j, j])
                                    for j in range(len(self.bounds))])
        return 2.0 * sum(parts)

    def to_dense(self):
        """L as a dense array (small n only: tests, debugging)."""
        out = np.zeros((self.n, self.n))
        for (i, j), f in self.tiles.items():
            (ilo, ihi), (lo, hi) = self.bounds[i], self.bounds[j]
            out[ilo:ihi, lo:hi] = f.result()
        return out

    def remove(self):
        """Release the tiles on the workers (and delete the scratch directory)."""
        self.tiles, self.inputs = {}, ()
        if self.store is not None:
            self.store.remove()


def cholesky(client: Client, tile_fn: Callable, tile_args: Sequence, n: int, *,
             jitters: Sequence[float] = (0.0,), tile: int | None = None,
             scratch: str | None = None, fingerprint: str = "", resume: bool = False,
             progress: Callable | None = None) -> DistributedCholesky:
    """Blocked Cholesky of A + jitter I on a Dask cluster, trying each jitter in turn.

    Parameters
    ----------
    client : dask.distributed.Client
    tile_fn : callable
        A pure top-level function ``tile_fn(rows, cols, *tile_args)`` returning the tile
        A[rows[0]:rows[1], cols[0]:cols[1]] (i >= j; diagonal tiles in full), run on the
        workers (:func:`kernel_tile` for a kernel).
    tile_args : sequence
        Its arguments, scattered to every worker once (arrays, a network).
    n : int
        Order of A.
    jitters : sequence of float
        Diagonal shifts tried in order while the factorisation fails.
    tile : int, optional
        Tile order (default :data:`nngp_lut.linalg.DEFAULT_TILE`; at most MAX_TILE).
    scratch : path, optional
        Directory in which every finished tile column is written (``nngp-lut-<fingerprint>``,
        as the in-process out-of-core path): a run whose cluster died continues from there
        with ``resume``.  None: the tiles live only on the workers.
    fingerprint, resume, progress
        As :func:`nngp_lut.linalg.cholesky` (progress: stage "cholesky", tasks done).

    Returns
    -------
    DistributedCholesky

    Raises
    ------
    NotPositiveDefinite
        If every jitter fails.
    """
    tile = max(1, min(int(tile or linalg.DEFAULT_TILE), linalg.MAX_TILE, n))
    store = None
    if scratch is not None:
        store = linalg._open_scratch(scratch, fingerprint, n, tile, resume)
    state = (store.load_state() if store is not None else None) or {
        "n": n, "tile": tile, "fingerprint": fingerprint, "jitter_index": 0, "panels_done": 0}
    bounds = linalg.tile_bounds(n, state["tile"])
    jitters = tuple(float(j) for j in jitters)
    args = scatter_once(client, tile_args)
    try:
        for index in range(state["jitter_index"], len(jitters)):
            state["jitter_index"] = index
            if store is not None:
                store.save_state(state)
            try:
                tiles = _factor(client, tile_fn, args, bounds, jitters[index], state, store,
                                progress)
                return DistributedCholesky(client, tiles, bounds, jitters[index], store,
                                           inputs=args)
            except NotPositiveDefinite as exc:
                failed = exc
            state["panels_done"] = 0
            if store is not None:
                for j in range(len(bounds)):
                    for i in range(j, len(bounds)):
                        store.drop("l", i, j)
    except BaseException as exc:
        if store is not None:
            exc.add_note(linalg.kept_note(store, state["panels_done"], len(bounds)))
            store.close()
        raise
    if store is not None:
        store.remove()
    raise NotPositiveDefinite(f"the matrix is not positive definite even with jitter "
                              f"{jitters[-1]:g} ({failed}); check the data for duplicates "
                              "or use a larger jitter")


def scatter_once(client, values):
    """``values`` with each array or object (a network) scattered to every worker; futures
    (already scattered) and plain settings (None, str, numbers) are passed on as they are."""
    from distributed import Future

    def plain(v):
        return v is None or isinstance(v, (str, int, float, tuple, Future))

    # hash=False: a fresh key per call.  Content-hashed keys are shared with an earlier call
    # whose futures are being released, and that release can remove the data under this one.
    return [v if plain(v) else client.scatter(v, broadcast=True, hash=False) for v in values]


def _factor(client, tile_fn, args, bounds, jitter, state, store, progress):
    """Run the graph to the end, writing finished panels to ``store``.

    Dask recomputes a lost result from its lineage only while the scheduler still knows the
    tasks it came from, and it forgets consumed intermediate tiles.  So a factor tile whose
    future is cancelled ("lost dependencies", after a worker died) is submitted again here
    from its own lineage, by the same tile operations in the same order (:func:`_submit`),
    on top of the factor tiles that survived: only the lost tiles are redone and the result
    is bit for bit the same.
    """
    from concurrent.futures import CancelledError

    from distributed import as_completed, wait

    nt, first = len(bounds), state["panels_done"]
    # Finished panels of a resumed run: their tiles from the scratch directory.
    done = [(i, j) for j in range(first) for i in range(j, nt)]
    l_tiles = dict(zip(done, client.scatter([store.get("l", i, j) for i, j in done], hash=False)
                       if done else []))
    wanted = [(i, j) for j in range(first, nt) for i in range(j, nt)]
    remaining = {j: nt - j for j in range(first, nt)}  # unwritten tiles per panel
    reported, finished = set(), {}
    while True:
        lost = [ij for ij in wanted if ij not in l_tiles or l_tiles[ij].status == "cancelled"]
        if not lost:
            return l_tiles
        l_tiles.update(_submit(client, tile_fn, args, bounds, jitter, l_tiles, lost))
        keys = {l_tiles[ij].key: ij for ij in lost}
        for future in as_completed([l_tiles[ij] for ij in lost]):
            if future.status == "error":
                # Dropping the futures (on the way out) releases the rest of the graph; an
                # explicit cancel of erred keys trips the scheduler (dask 2026.8).
                raise future.exception()
            if future.status != "finished":
                continue  # cancelled: its lineage is submitted again in the next round
            i, j = ij = keys[future.key]
            if ij in reported:
                continue
            reported.add(ij)
            remaining[j] -= 1
            if store is not None:
                finished[ij] = future.result()
                # Panels are written in order: a resumed run needs every panel before it.
                while state["panels_done"] < nt and remaining[state["panels_done"]] == 0:
                    p = state["panels_done"]
                    for r in range(p, nt):
                        store.put("l", r, p, finished.pop((r, p)))
                    state["panels_done"] = p + 1
                    store.save_state(state)
            if progress:
                progress("cholesky", len(reported), len(wanted))
        # Tiles reported before a worker died may have been lost since: check them all.
        try:
            wait([l_tiles[ij] for ij in wanted])
        except CancelledError:  # the next round submits their lineage again
            pass


def _submit(client, tile_fn, args, bounds, jitter, l_tiles, todo):
    """Submit the factor tiles ``todo`` (sorted by column) and the chains they need:

        L_jj = potrf(A_jj - sum_k L_jk L_jk^T + jitter I),   L_ij = trsm(L_jj, A_ij - sum_k L_ik L_jk^T)

    with the updates k = 0, 1, ... applied one task each (syrk/gemm), the other factor tiles
    taken from ``l_tiles`` (or from this submission).  For a whole run this is the
    right-looking graph; the priorities put the critical path first."""
    nt, submit = len(bounds), client.submit
    token = uuid.uuid4().hex[:12]
    new = {}

    def prio(kind, column):
        return COLUMN_RANK * (nt - column) + RANK[kind]

    def tile(i, k):
        return new[i, k] if (i, k) in new else l_tiles[i, k]

    for i, j in sorted(todo, key=lambda ij: (ij[1], ij[0] != ij[1], ij[0])):
        a = submit(tile_fn, bounds[i], bounds[j], *args, priority=prio("kernel", j),
                   key=f"ktile-{token}-{i}-{j}")
        for k in range(j):
            if i == j:
                a = submit(_syrk, a, tile(j, k), priority=prio("syrk", j),
                           key=f"syrk-{token}-{j}-{k}")
            else:
                a = submit(_gemm, a, tile(i, k), tile(j, k), priority=prio("gemm", j),
                           key=f"gemm-{token}-{i}-{j}-{k}")
        if i == j:
            new[j, j] = submit(_potrf, a, jitter, j, priority=prio("potrf", j),
                               key=f"potrf-{token}-{j}")
        else:
            new[i, j] = submit(_trsm, tile(j, j), a, priority=prio("trsm", j),
                               key=f"trsm-{token}-{i}-{j}")
    return new


# --- kernels ---------------------------------------------------------------------------------
def kernel(client: Client, network: Network, x1: np.ndarray, x2: np.ndarray | None = None, *,
           get: str = "nngp", all_depths: bool = False, depths: Sequence[int] | None = None,
           tile: int = linalg.DEFAULT_TILE, out=None, progress: Callable | None = None,
           scattered: Sequence | None = None) -> np.ndarray | str:
    """``network.kernel(x1, x2)`` computed as tiles on a Dask cluster.

    Tiles of ``tile`` x ``tile`` pairs are tasks (:func:`kernel_tile`; the inputs are
    scattered once); a symmetric kernel computes its lower triangle of tiles only.  The
    result is assembled in RAM, or with ``out`` written to the HDF5 dataset ``kernel``
    by this process alone as tiles arrive (one writer: HDF5 has no safe parallel writes
    without MPI, and the tiles' compute dwarfs the write).

    ``scattered`` = (network, x2) as futures already on the workers (a regressor scatters
    its training inputs once for the factorisation and every test block).

    Returns
    -------
    numpy.ndarray or str
        The kernel ((layers,) n1, n2), or the path of the HDF5 file.
    """
    from distributed import as_completed

    from . import _files
    from .kernel import Network

    network = network if isinstance(network, Network) else Network(network)
    x1, x2, same = network._prepare(x1, x2)  # vectors, or images for a spatial network
    if all_depths:
        depths = list(range(network.depth + 1))
    n1, n2 = x1.shape[0], x2.shape[0]
    rb, cb = linalg.tile_bounds(n1, tile), linalg.tile_bounds(n2, tile)
    layers = None if depths is None else len(depths)
    shape = (n1, n2) if layers is None else (layers, n1, n2)
    sx1 = client.scatter(x1, broadcast=True, hash=False)
    if scattered is not None:
        snet, sx2 = scattered
    else:
        snet, sx2 = scatter_once(client, (network, None if same else x2))
    token = uuid.uuid4().hex[:12]
    pairs = [(i, j) for i in range(len(rb)) for j in range(len(cb)) if not same or j <= i]
    futures = {client.submit(kernel_tile, rb[i], cb[j], snet, sx1, sx2, get, depths,
                             priority=-(i + j), key=f"kernel-{token}-{i}-{j}"): (i, j)
               for i, j in pairs}

    def place(write):
        for count, (future, t) in enumerate(as_completed(futures, with_results=True), 1):
            i, j = futures.pop(future)
            (r0, r1), (c0, c1) = rb[i], cb[j]
            write((..., slice(r0, r1), slice(c0, c1)), t)
            if same and i != j:
                write((..., slice(c0, c1), slice(r0, r1)), np.swapaxes(t, -1, -2))
            if progress:
                progress(count, len(pairs))

    if out is None:
        result = np.empty(shape)
        place(result.__setitem__)
        return result
    import h5py

    with _files.atomic_target(out) as tmp, h5py.File(tmp, "w") as h5:
        chunk = (1,) + tuple(min(s, 512) for s in shape[1:]) if layers else \
            tuple(min(s, 512) for s in shape)
        dset = h5.create_dataset("kernel", shape=shape, dtype="f8", chunks=chunk)
        place(dset.__setitem__)
    return str(out)
