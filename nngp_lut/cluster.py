"""The optional Dask backend: kernel tiles and the blocked Cholesky as task graphs.

Everything here runs on a :class:`dask.distributed.Client` (``pip install
"nngp-lut[distributed]"``); without one, nngp-lut runs in process, as before, at the same
speed.  The work is the one of :mod:`nngp_lut.linalg`, cut into tasks:

* **Kernel tiles.**  Tile (i, j) of K is ``Network.kernel`` of row block i against row block
  j (the diagonal tiles by the symmetric path), computed on a worker by the same Numba
  executor.  It is a pure function of the inputs, which are scattered to every worker once
  (:meth:`Client.scatter` with ``broadcast=True``), so a lost tile is recomputed from its
  lineage.  Any :class:`~nngp_lut.kernel.Network` of the layer algebra works.
* **The factorisation** of K + jitter I and **its solves**: the tasks of
  :mod:`nngp_lut.tiles` (potrf, trsm, syrk, gemm; update and substitute), the very graph
  that :mod:`nngp_lut.linalg` runs in process, submitted here as futures, with the one
  jitter ladder and resume driver (:func:`nngp_lut.linalg.factorize`).  Dask runs the graph
  right-looking (Buttari et al., "A class of parallel tiled linear algebra algorithms for
  multicore architectures", Parallel Computing 35, 2009, Algorithm 3); each tile receives
  the same BLAS calls in the same order as in process, so both give the same factor, bit
  for bit where OpenBLAS runs single-threaded.  Tasks carry *priorities* along the
  critical path (as DPLASMA and SLATE do): a task writing tile column j outranks every task
  writing a later column, and in a column potrf > trsm > updates, so the potrf -> trsm ->
  syrk chain that bounds the run is never starved by far-away updates.  In the solves each
  update L_jk y_k runs where most of its data is (the tile), only (n_j x m) blocks move.

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

from . import linalg, tiles
from .errors import ClusterError, MissingDependency, ParameterError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from distributed import Client

    from .kernel import Network

__all__ = ["CONNECT_TIMEOUT", "DaskBackend", "DistributedCholesky", "check_address",
           "check_workers", "cholesky", "connect", "dask_setup", "kernel", "kernel_tile",
           "max_workers", "require_dask"]

#: Seconds to wait for a scheduler before giving up (--scheduler).
CONNECT_TIMEOUT = 10.0
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


# --- the factor ------------------------------------------------------------------------------
class DaskBackend:
    """Runs the tasks of :mod:`nngp_lut.tiles` on a Dask cluster: the
    :class:`nngp_lut.linalg.Backend` of :class:`DistributedCholesky`.

    Each task is submitted as a future with its priority; the factor tiles stay on the
    workers (``tiles``: (i, j) -> future of L_ij), the client holds only futures.  Matrix
    tiles are ``tile_fn(rows, cols, *inputs)`` on the workers.
    """

    def __init__(self, client, tile_fn, inputs, store=None):
        self.client = client
        self.tile_fn = tile_fn
        # The scattered inputs the tiles are made from: held as long as the factor, so
        # that a tile lost with a worker can still be recomputed from its lineage.
        self.inputs = inputs
        self.store = store  # DiskTiles holding the finished panels, or None
        self.tiles = {}
        self.bounds = None

    def factor(self, bounds, jitter, state, progress):
        """Run the graph to the end, writing finished panels to ``store`` in order.

        Dask recomputes a lost result from its lineage only while the scheduler still knows
        the tasks it came from, and it forgets consumed intermediate tiles.  So a factor
        tile whose future is cancelled ("lost dependencies", after a worker died) is
        submitted again here from its own lineage, by the same tasks
        (:func:`nngp_lut.tiles.factor_tasks` of the lost tiles), on top of the factor tiles
        that survived: only the lost tiles are redone and the result is bit for bit the
        same.  ``progress("cholesky", done, total)`` counts factor tiles.
        """
        from concurrent.futures import CancelledError

        from distributed import as_completed, wait

        client, store, self.bounds = self.client, self.store, bounds
        nt, first = len(bounds), state["panels_done"]
        # Finished panels of a resumed run: their tiles from the scratch directory.
        done = [(i, j) for j in range(first) for i in range(j, nt)]
        l_tiles = dict(zip(done, client.scatter([store.get("l", i, j) for i, j in done],
                                                hash=False) if done else []))
        wanted = [(i, j) for j in range(first, nt) for i in range(j, nt)]
        remaining = {j: nt - j for j in range(first, nt)}  # unwritten tiles per panel
        reported, finished = set(), {}
        while True:
            lost = [ij for ij in wanted
                    if ij not in l_tiles or l_tiles[ij].status == "cancelled"]
            if not lost:
                self.tiles = l_tiles
                return
            graph = [t for _, column in tiles.factor_tasks(nt, lost, jitter) for t in column]
            made = self._submit(graph, lambda key: l_tiles[key[1:]],
                                [("l", *ij) for ij in lost])
            l_tiles.update({ij: made[("l", *ij)] for ij in lost})
            keys = {l_tiles[ij].key: ij for ij in lost}
            for future in as_completed([l_tiles[ij] for ij in lost]):
                if future.status == "error":
                    # Dropping the futures (on the way out) releases the rest of the graph;
                    # an explicit cancel of erred keys trips the scheduler (dask 2026.8).
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

    def _submit(self, tasks, source, outputs):
        """Submit ``tasks`` (in a valid order) as futures with their priorities; an input
        that no task makes is ``source(key)``.  Returns {key: future} of the ``outputs``
        only: a future held here would keep its tile on the workers after its last use."""
        submit, token, made = self.client.submit, uuid.uuid4().hex[:12], {}
        for t in tasks:
            key = f"{t.op}-{token}-" + "-".join(map(str, t.out))
            if t.op == "tile":
                i, j = t.params
                made[t.out] = submit(self.tile_fn, self.bounds[i], self.bounds[j],
                                     *self.inputs, priority=t.priority, key=key)
            else:
                args = [made[k] if k in made else source(k) for k in t.inputs]
                made[t.out] = submit(tiles.OPS[t.op], *args, *t.params,
                                     priority=t.priority, key=key)
        return {k: made[k] for k in outputs}

    def run(self, tasks, leaves, outputs):
        """The values of ``outputs``: the tasks run on the cluster, the leaves (the blocks
        of a right-hand side) scattered, each product on the worker holding its tile."""
        names = list(leaves)
        blocks = self.client.scatter([np.asfortranarray(leaves[k]) for k in names],
                                     hash=False) if names else []
        given = dict(zip(names, blocks))
        made = self._submit(tasks, lambda key: given[key] if key in given
                            else self.tiles[key[1:]], outputs)
        return self.client.gather([made[k] for k in outputs])

    def tile(self, i, j):
        return self.tiles[i, j].result()

    def remove(self):
        self.tiles, self.inputs = {}, ()
        if self.store is not None:
            self.store.remove()


class DistributedCholesky(linalg.TiledCholesky):
    """The factor L of A + jitter I as futures of tiles on a Dask cluster, with solves.

    :class:`nngp_lut.linalg.TiledCholesky` on a :class:`DaskBackend`; made by
    :func:`cholesky`.  Its solves are task graphs too (y and x stay on the workers until
    the end).
    """

    @property
    def client(self):
        return self.backend.client

    @property
    def tiles(self):
        """(i, j) -> future of the factor tile L_ij, i >= j."""
        return self.backend.tiles


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
    backend = DaskBackend(client, tile_fn, scatter_once(client, tile_args), store)
    bounds, jitter = linalg.factorize(backend, n, tile, jitters=jitters,
                                      fingerprint=fingerprint, progress=progress)
    return DistributedCholesky(backend, bounds, jitter)


def scatter_once(client, values):
    """``values`` with each array or object (a network) scattered to every worker; futures
    (already scattered) and plain settings (None, str, numbers) are passed on as they are."""
    from distributed import Future

    def plain(v):
        return v is None or isinstance(v, (str, int, float, tuple, Future))

    # hash=False: a fresh key per call.  Content-hashed keys are shared with an earlier call
    # whose futures are being released, and that release can remove the data under this one.
    return [v if plain(v) else client.scatter(v, broadcast=True, hash=False) for v in values]


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
    if network.batch_coupled:  # tiles would each normalise over a batch of their own
        raise ParameterError("a network with BatchNorm in training mode normalises over all "
                             "its inputs at once, which tiles on a cluster cannot: compute it "
                             "in process, or give a reference batch (reference=, "
                             "--bn-reference)")
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
