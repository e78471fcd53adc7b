"""Blocked Cholesky factorisation and triangular solves on square tiles, in RAM or out of core.

The symmetric positive definite matrix A (n x n) is cut into square tiles of order at most
``tile``; only the lower triangle of tiles is stored (the packed lower triangle).  The tile
operations and the task graphs of the factorisation and the solves are those of
:mod:`nngp_lut.tiles`, shared with the Dask backend (:mod:`nngp_lut.cluster`); this module
runs them in process (:class:`InProcess`), left-looking by tile columns ("panels"):

    for each panel j:   A[i, j] -= sum_{k < j} L[i, k] L[j, k]^T      (dsyrk, dgemm)
                        L[j, j]  = chol(A[j, j] + jitter I)            (dpotrf)
                        L[i, j]  = A[i, j] L[j, j]^{-T},  i > j        (dtrsm)

so every factor tile is written once, and a panel needs only its own tiles plus two factor
tiles at a time in memory.  It also holds the one driver of both backends,
:func:`factorize`: the jitter ladder and the resume bookkeeping.

Tiles live in a :class:`MemoryTiles` store (RAM) or a :class:`DiskTiles` store (a scratch
directory of .npy files, each written atomically, with ``state.json`` recording finished
panels so that a killed run resumes where it stopped).  Tiles of A are produced on demand by
a ``make_tile(i, j)`` callable, so the matrix itself (a kernel, say) is never held whole.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from . import _files, paper, tiles
from .data import parse_size
from .errors import MemoryBudgetError, NotPositiveDefinite, ScratchError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._typing import PathLike

__all__ = ["Backend", "DEFAULT_TILE", "DiskTiles", "InProcess", "MAX_TILE", "MIN_TILE",
           "MemoryTiles", "NotPositiveDefinite", "PAPER_JITTERS", "ScratchError", "TiledCholesky",
           "available_memory", "cholesky", "factorize", "packed_bytes", "plan",
           "resolve_memory", "tile_bounds"]

#: Largest tile order: OpenBLAS segfaults on threaded dpotrf/dsyrk of order >= 16000 here.
MAX_TILE = 8192
#: Tile order in RAM: large enough for DGEMM to run at full speed, small enough to keep the
#: serial dpotrf of the diagonal tiles a small share (measured: bench/bench_cholesky.py).
DEFAULT_TILE = 2048
#: Smallest tile worth running out of core; a budget that cannot hold a panel of these fails.
MIN_TILE = 256
#: The paper's jitter ladder: 1e-10, multiplied by 10 after each failure, up to 0.1.
PAPER_JITTERS = paper.JITTERS


def tile_bounds(n: int, tile: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] cutting range(n) into tiles of order <= tile (the last shorter)."""
    if n < 1 or tile < 1:
        raise ValueError("need n >= 1 and tile >= 1")
    return [(lo, min(n, lo + tile)) for lo in range(0, n, tile)]


def packed_bytes(n: int, tile: int) -> int:
    """Bytes of the packed lower triangle of tiles (float64)."""
    return 8 * sum((hi - lo) * (n - lo) for lo, hi in tile_bounds(n, tile))


def available_memory() -> int:
    """Bytes of memory available to this process now (MemAvailable, else physical RAM)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resolve_memory(memory: int | str | None) -> int:
    """A memory budget in bytes: "auto" is 75% of the memory available now."""
    if memory is None or str(memory).lower() == "auto":
        return int(0.75 * available_memory())
    return parse_size(memory)


def plan(n: int, memory: int | str | None, *, reserve: int = 0, tile: int | None = None
         ) -> tuple[bool, int]:
    """Where and how to factor an n x n matrix under a memory budget.

    Returns ``(in_ram, tile)``: in RAM with tiles of order ``DEFAULT_TILE`` when the packed
    lower triangle plus ``reserve`` bytes fits ``memory``; otherwise out of core with the
    largest tile (up to ``tile``) whose panel (n x tile) plus three tiles fits.  Raises
    MemoryBudgetError (a MemoryError) when not even a panel of ``min(MIN_TILE, tile)`` columns fits.
    """
    budget = resolve_memory(memory) - reserve
    if tile is None:
        tile = min(n, DEFAULT_TILE)
    tile = max(1, min(int(tile), MAX_TILE, n))
    if packed_bytes(n, tile) <= budget:
        return True, tile
    # Out of core: a panel (< n rows x b) plus the factor tile being read and a spare.
    b = int((-n + math.sqrt(n * n + 12 * max(budget, 0) / 8)) / 6)
    b = min(b, tile)
    if b < min(MIN_TILE, tile):
        need = 8 * (n * MIN_TILE + 3 * MIN_TILE**2) + reserve
        raise MemoryBudgetError(f"a memory budget of {resolve_memory(memory) / 1e9:.3g} GB cannot "
                          f"hold one panel of tiles for n = {n}; give at least "
                          f"{need / 1e9:.2g} GB (--memory)")
    return False, b


# --- tile stores -------------------------------------------------------------------------------
class MemoryTiles:
    """Tiles in RAM, keyed by (kind, i, j) with kind "a" (matrix) or "l" (factor)."""

    def __init__(self):
        self._tiles = {}
        self._state = None

    def get(self, kind, i, j):
        return self._tiles[kind, i, j]

    def put(self, kind, i, j, a):
        self._tiles[kind, i, j] = a

    def has(self, kind, i, j):
        return (kind, i, j) in self._tiles

    def drop(self, kind, i, j):
        self._tiles.pop((kind, i, j), None)

    def open(self):
        return self

    def close(self):
        pass

    def load_state(self):
        return None if self._state is None else dict(self._state)

    def save_state(self, state):
        self._state = dict(state)

    def remove(self):
        self._tiles.clear()


class DiskTiles:
    """Tiles as Fortran-ordered .npy files in a scratch directory.

    Each tile is written atomically (:func:`nngp_lut._files.atomic_write`), so a killed run
    leaves only complete tiles; ``state.json`` (also written atomically) records the finished
    panels.  The store holds an exclusive lock (``lock`` in the directory) from
    :meth:`open` to :meth:`close`, so a second run on the same directory is refused.
    """

    def __init__(self, directory):
        self.dir = Path(directory)
        self._lock = None

    def open(self):
        """Create the directory, take its lock and remove temporary files of killed runs."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _files.os_failure(exc, self.dir, "create") from None
        self._lock = _files.Lock(self.dir / "lock", what=f"the scratch directory {self.dir}")
        self._lock.acquire()
        for tmp in self.dir.glob(f".*{_files.TEMP_TAG}*"):
            _files.clean_stale(tmp.parent / tmp.name[1:].partition(_files.TEMP_TAG)[0])
        return self

    def close(self):
        """Release the lock, keeping the tiles (for a later resume)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _path(self, kind, i, j):
        return self.dir / f"{kind}_{i}_{j}.npy"

    def get(self, kind, i, j):
        return np.load(self._path(kind, i, j), allow_pickle=False)

    def put(self, kind, i, j, a):
        def write(tmp):
            with open(tmp, "wb") as f:
                np.save(f, np.asfortranarray(a), allow_pickle=False)

        _files.atomic_write(self._path(kind, i, j), write)

    def has(self, kind, i, j):
        return self._path(kind, i, j).is_file()

    def drop(self, kind, i, j):
        self._path(kind, i, j).unlink(missing_ok=True)

    def load_state(self):
        try:
            return json.loads((self.dir / "state.json").read_text())
        except (OSError, ValueError):
            return None

    def save_state(self, state):
        _files.write_bytes(self.dir / "state.json", json.dumps(state).encode())

    def remove(self):
        # Removed under the lock, which is released (its file gone) last.
        shutil.rmtree(self.dir, ignore_errors=True)
        self.close()


# --- the factor ------------------------------------------------------------------------------
class TiledCholesky:
    """The factor L of A + jitter I on tiles, with solves.  Made by :func:`cholesky`.

    The solves and log det are task graphs of :mod:`nngp_lut.tiles`, run by ``backend``:
    :class:`InProcess` here, ``nngp_lut.cluster.DaskBackend`` for
    :class:`nngp_lut.cluster.DistributedCholesky`.
    """

    def __init__(self, backend, bounds, jitter):
        self.backend = backend
        self.bounds = bounds
        self.n = bounds[-1][1]
        self.jitter = jitter

    @property
    def store(self):
        """The tile store: the factor in process; the scratch directory (or None) on Dask."""
        return self.backend.store

    def _solve(self, b, lower, upper):
        b = np.asarray(b, dtype=np.float64)
        # The working copy: in process the blocks are solved in place in it.
        y = np.array(b.reshape(self.n, -1), order="F", copy=True)
        tasks, outputs = tiles.solve_tasks(len(self.bounds), lower=lower, upper=upper)
        blocks = {("b", j): y[lo:hi] for j, (lo, hi) in enumerate(self.bounds)}
        for (lo, hi), part in zip(self.bounds, self.backend.run(tasks, blocks, outputs)):
            if not np.may_share_memory(part, y):
                y[lo:hi] = part
        return y.reshape(b.shape)

    def solve_lower(self, b):
        """L^{-1} b for b of shape (n,) or (n, m) (forward substitution)."""
        return self._solve(b, True, False)

    def solve_upper(self, y):
        """L^{-T} y (back substitution)."""
        return self._solve(y, False, True)

    def solve(self, b):
        """(A + jitter I)^{-1} b, both substitutions in one graph."""
        return self._solve(b, True, True)

    def logdet(self):
        """log det(A + jitter I) = 2 sum log diag L."""
        tasks, outputs = tiles.logdet_tasks(len(self.bounds))
        return 2.0 * sum(self.backend.run(tasks, {}, outputs))

    def to_dense(self):
        """L as a dense lower-triangular array (small n only: tests, debugging)."""
        out = np.zeros((self.n, self.n))
        for j, (lo, hi) in enumerate(self.bounds):
            for i in range(j, len(self.bounds)):
                ilo, ihi = self.bounds[i]
                out[ilo:ihi, lo:hi] = self.backend.tile(i, j)
        return out

    def remove(self):
        """Free the tiles (and delete the scratch directory)."""
        self.backend.remove()


class Backend(Protocol):
    """What runs the tasks of :mod:`nngp_lut.tiles`: :class:`InProcess` or
    ``nngp_lut.cluster.DaskBackend``."""

    #: The tile store holding the finished panels (None: none, no resume).
    store: MemoryTiles | DiskTiles | None

    def factor(self, bounds: list[tuple[int, int]], jitter: float, state: dict,
               progress: Callable | None) -> None:
        """One attempt at the factor from panel ``state["panels_done"]`` on, writing each
        finished panel to ``store`` in order and counting it in ``state``; raises
        NotPositiveDefinite."""

    def run(self, tasks: list[tiles.Task], leaves: dict, outputs: list[tuple]) -> list:
        """The values of the keys ``outputs`` of a graph whose inputs are ``leaves`` and
        the factor tiles."""

    def tile(self, i: int, j: int) -> np.ndarray:
        """Factor tile L_ij."""

    def remove(self) -> None:
        """Free the tiles (and the scratch directory)."""


class InProcess:
    """Runs the tasks of :mod:`nngp_lut.tiles` in this process on a tile store (a
    :class:`Backend`).  Each operation works in place in the tile it updates
    (``overwrite=True``): the tiles are this process's own."""

    def __init__(self, store, make_tile=None):
        self.store = store
        self.make_tile = make_tile

    def factor(self, bounds, jitter, state, progress):
        """The left-looking factorisation by panels (tile columns), each written to the store
        as it is finished: a panel needs only its own tiles plus two factor tiles at a time
        in memory.  The matrix tiles of all unfinished panels are made first (``progress``
        stage "kernel"), so that a resumed run makes none of them again."""
        nt, first = len(bounds), state["panels_done"]
        self._fill(bounds, first, progress)
        total = sum(_panel_flops(bounds, j) for j in range(nt))
        done = sum(_panel_flops(bounds, j) for j in range(first))
        todo = [(i, j) for j in range(first, nt) for i in range(j, nt)]
        read = _recent(self.store.get, 2)  # L_jk is read once per k (tasks are k-major)
        for j, tasks in tiles.factor_tasks(nt, todo, jitter):
            panel = [("l", i, j) for i in range(j, nt)]
            made = _run(tasks, read, lambda i, j: self.store.get("a", i, j), panel)
            for key in panel:
                self.store.put(*key, made[key])
            state["panels_done"] = j + 1
            self.store.save_state(state)
            for i in range(j, nt):
                self.store.drop("a", i, j)
            done += _panel_flops(bounds, j)
            if progress:
                progress("cholesky", done, total)

    def _fill(self, bounds, first_panel, progress):
        """Make the matrix tiles of every unfinished panel that is not on the store yet."""
        todo = [(i, j) for j in range(first_panel, len(bounds))
                for i in range(j, len(bounds)) if not self.store.has("a", i, j)]
        for count, (i, j) in enumerate(todo, 1):
            # A copy: the tasks work in place, and a tile that is already Fortran-ordered may
            # be a view of the caller's matrix (its last row when n = 1 mod tile).
            a = np.array(self.make_tile(bounds[i], bounds[j]), dtype=np.float64, order="F")
            self.store.put("a", i, j, a)
            if progress:
                progress("kernel", count, len(todo))

    def run(self, tasks, leaves, outputs):
        """The values of ``outputs``, the tasks run in order (the leaves are updated in
        place: pass copies)."""
        def read(key):
            return leaves[key] if key in leaves else self.store.get(*key)

        made = _run(tasks, read, None, outputs)
        return [made[key] for key in outputs]

    def tile(self, i, j):
        return self.store.get("l", i, j)

    def remove(self):
        self.store.remove()


def _run(tasks, read, make, keep):
    """Run ``tasks`` in order, each in place in the tile it updates; ``read(key)`` gives an
    input that no task makes, ``make(i, j)`` matrix tile (i, j).  Returns {key: value} for
    the keys ``keep``; every other result is dropped after its last use."""
    uses = Counter(key for task in tasks for key in task.inputs)
    keep, values = set(keep), {}
    for task in tasks:
        if task.op == "tile":
            values[task.out] = make(*task.params)
            continue
        args = []
        for key in task.inputs:
            args.append(values[key] if key in values else read(key))
            uses[key] -= 1
            if not uses[key] and key not in keep:
                values.pop(key, None)
        values[task.out] = tiles.OPS[task.op](*args, *task.params, overwrite=True)
    return {key: values[key] for key in keep}


def _recent(get, size):
    """``get(*key)`` remembering the last ``size`` keys read."""
    recent = {}

    def read(key):
        if key in recent:
            recent[key] = recent.pop(key)  # now the most recent
        else:
            recent[key] = get(*key)
            if len(recent) > size:
                del recent[next(iter(recent))]
        return recent[key]

    return read


# --- one driver: the jitter ladder and the resume bookkeeping ----------------------------------
def factorize(backend: Backend, n: int, tile: int, *, jitters: Sequence[float] = (0.0,),
              fingerprint: str = "", progress: Callable | None = None
              ) -> tuple[list[tuple[int, int]], float]:
    """Factor A + jitter I on ``backend``, trying each jitter in turn until one works.

    The paper's rule (:data:`PAPER_JITTERS`): a panel that is not positive definite starts
    the factorisation over at the next jitter.  With a store, ``state.json`` records the
    tile order, the jitter reached and the finished panels, so that a killed run resumes
    from its last finished panel at the same jitter.

    Parameters
    ----------
    backend : Backend
        Runs the tasks; its ``store`` (None: no resume) holds the finished panels.
    n, tile : int
        Order of A and of its tiles (a resumed run keeps the tile order it started with).
    jitters, fingerprint, progress
        As :func:`cholesky`.

    Returns
    -------
    bounds : list of (int, int)
        The tiles' row ranges.
    jitter : float
        The jitter that worked.

    Raises
    ------
    NotPositiveDefinite
        If every jitter fails (the store is removed).
    """
    store = backend.store
    state = (store.load_state() if store is not None else None) or {
        "n": n, "tile": tile, "fingerprint": fingerprint, "jitter_index": 0, "panels_done": 0}
    bounds = tile_bounds(n, state["tile"])
    jitters = tuple(float(j) for j in jitters)
    # With a scratch directory, an exception (Ctrl-C, a full disk, a dead cluster) leaves
    # the tiles for --resume.
    try:
        for index in range(state["jitter_index"], len(jitters)):
            state["jitter_index"] = index
            if store is not None:
                store.save_state(state)
            try:
                backend.factor(bounds, jitters[index], state, progress)
                return bounds, jitters[index]
            except NotPositiveDefinite as exc:
                failed = exc
            # Start over at the next jitter: the consumed tiles are made again.
            if store is not None:
                for j in range(state["panels_done"] + 1):
                    for i in range(j, len(bounds)):
                        store.drop("l", i, j)
                        store.drop("a", i, j)
            state["panels_done"] = 0
    except BaseException as exc:
        if isinstance(store, DiskTiles):
            exc.add_note(kept_note(store, state["panels_done"], len(bounds)))
            store.close()
        raise
    if store is not None:
        store.remove()
    raise NotPositiveDefinite(f"the matrix is not positive definite even with jitter "
                              f"{jitters[-1]:g} ({failed}); check the data for duplicates "
                              "or use a larger jitter")


def cholesky(make_tile: Callable, n: int, *, jitters: Sequence[float] = (0.0,),
             memory: int | str = "auto", reserve: int = 0, tile: int | None = None,
             scratch: PathLike | None = None, fingerprint: str = "", resume: bool = False,
             progress: Callable | None = None) -> TiledCholesky:
    """Blocked Cholesky factor of A + jitter I, trying each jitter in turn until one works.

    Parameters
    ----------
    make_tile : callable
        ``make_tile((lo_i, hi_i), (lo_j, hi_j))`` returns the tile A[lo_i:hi_i, lo_j:hi_j]
        (i >= j; the diagonal tiles in full) as a float64 array.
    n : int
        Order of A.
    jitters : sequence of float
        Diagonal shifts tried in order while the factorisation fails (the paper's rule:
        :data:`PAPER_JITTERS`).
    memory : int or str
        Memory budget; the packed lower triangle stays in RAM when it fits (with ``reserve``
        bytes kept free for the caller), else the tiles go to ``scratch``.
    tile : int, optional
        Tile order in RAM (default :data:`DEFAULT_TILE`).
    scratch : path, optional
        Directory for out-of-core tiles (default: the system's temporary directory).  The run
        uses the subdirectory ``nngp-lut-<fingerprint>``.
    fingerprint : str
        Identifies the matrix (data and settings) so that ``resume`` continues the same job.
    resume : bool
        Continue a killed out-of-core run from its finished panels.
    progress : callable, optional
        ``progress(stage, done, total)`` with stage "kernel" (tiles made) or "cholesky"
        (flops done).

    Returns
    -------
    TiledCholesky
        Its ``jitter`` is the jitter that worked.  Call ``remove()`` to delete scratch tiles.

    Raises
    ------
    NotPositiveDefinite
        If every jitter fails (the scratch tiles are removed).
    """
    in_ram, b = plan(n, memory, reserve=reserve, tile=tile)
    store = MemoryTiles() if in_ram else _open_scratch(scratch, fingerprint, n, b, resume)
    backend = InProcess(store, make_tile)
    bounds, jitter = factorize(backend, n, b, jitters=jitters, fingerprint=fingerprint,
                               progress=progress)
    return TiledCholesky(backend, bounds, jitter)


def kept_note(store, panels_done, panels):
    """What an interrupted out-of-core factorisation keeps, for the exception's notes."""
    return (f"kept: {panels_done} of {panels} tile columns of the factorisation in "
            f"{store.dir} (continue with resume=True, --resume)")


def _open_scratch(scratch, fingerprint, n, tile, resume):
    root = Path(scratch) if scratch is not None else Path(tempfile.gettempdir())
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _files.os_failure(exc, root, "create") from None
    store = DiskTiles(root / f"nngp-lut-{fingerprint or 'run'}").open()
    try:
        return _check_scratch(store, root, fingerprint, n, tile, resume)
    except BaseException:
        store.close()
        raise


def _check_scratch(store, root, fingerprint, n, tile, resume):
    state = store.load_state()
    if state is not None and not resume:
        raise ScratchError(f"{store.dir} holds an unfinished run of this job (panel "
                           f"{state['panels_done']} of {len(tile_bounds(n, tile))} done); "
                           "pass --resume to continue it, or delete the directory")
    if state is not None and (state["n"], state["fingerprint"]) != (n, fingerprint):
        raise ScratchError(f"{store.dir} holds tiles of another matrix; delete it")
    if state is None:
        need = packed_bytes(n, tile) + 8 * n * tile
        free = shutil.disk_usage(root).free
        if free < need:
            store.remove()
            raise ScratchError(f"the scratch directory {root} has {free / 1e9:.2f} GB free; "
                               f"the factorisation needs {need / 1e9:.2f} GB: free space or "
                               "pass --scratch on a larger disk")
    return store


def _panel_flops(bounds, j):
    lo, hi = bounds[j]
    b, below = hi - lo, bounds[-1][1] - hi
    return lo * (b * b + 2.0 * below * b) + b**3 / 3.0 + below * b * b
